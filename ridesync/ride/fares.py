"""Fares: a base price per car package plus a price per kilometre and per minute."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Tariff:
    base_cents: int
    cents_per_km: int
    cents_per_minute: int


TARIFFS = {
    "suv": Tariff(base_cents=400, cents_per_km=180, cents_per_minute=40),
    "sedan": Tariff(base_cents=250, cents_per_km=120, cents_per_minute=30),
    "van": Tariff(base_cents=500, cents_per_km=200, cents_per_minute=45),
    "luxury": Tariff(base_cents=800, cents_per_km=300, cents_per_minute=60),
}
PACKAGES = tuple(TARIFFS)


def price_in_cents(package_slug, distance_m, duration_s):
    """Whole cents for a ride of this distance (metres) and duration (seconds)."""
    tariff = TARIFFS[package_slug]
    return round(
        tariff.base_cents
        + tariff.cents_per_km * distance_m / 1000
        + tariff.cents_per_minute * duration_s / 60
    )
