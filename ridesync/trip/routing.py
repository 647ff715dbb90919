"""Routes: reading OSRM's answer, and the great-circle estimate used whenever
OSRM is switched off, open-circuited, failing or too slow."""
import math

from ridesync.ride.geo import great_circle_m
from ridesync.ride.model import Coordinate, Route

ROAD_FACTOR = 1.3  # roads are longer than the straight line
CITY_SPEED_M_PER_S = 30 * 1000 / 3600  # 30 km/h


class RouteUnavailable(Exception):
    """OSRM failed: unreachable, too slow, erroring or garbled. Counts
    against the circuit breaker."""


class NoRoute(Exception):
    """OSRM answered properly that it knows no road route between the points."""


class CallerGone(Exception):
    """The caller left (cancelled, or its deadline passed) while OSRM was
    asked: says nothing about OSRM, so it does not count for the breaker."""


def estimate_route(pickup, destination):
    distance = great_circle_m(pickup, destination) * ROAD_FACTOR
    return Route(
        path=(pickup, destination),
        distance=round(distance, 1),
        duration=round(distance / CITY_SPEED_M_PER_S, 1),
        estimated=True,
    )


def parse_osrm_route(payload):
    """A Route from OSRM's JSON; RouteUnavailable when it is not a usable answer.
    OSRM's coordinates are [longitude, latitude]."""
    if not isinstance(payload, dict) or payload.get("code") != "Ok":
        code = payload.get("code") if isinstance(payload, dict) else None
        raise RouteUnavailable(f"OSRM answered code {code!r}")
    try:
        best = payload["routes"][0]
        distance, duration = float(best["distance"]), float(best["duration"])
        path = tuple(
            Coordinate(latitude=float(lat), longitude=float(lon))
            for lon, lat in best["geometry"]["coordinates"]
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise RouteUnavailable(f"OSRM answer is malformed: {exc!r}") from exc
    if not (math.isfinite(distance) and math.isfinite(duration)) or distance < 0 or duration < 0:
        raise RouteUnavailable("OSRM answer has an impossible distance or duration")
    if len(path) < 2 or not all(_in_range(c) for c in path):
        raise RouteUnavailable("OSRM answer has no usable geometry")
    return Route(path=path, distance=distance, duration=duration)


def _in_range(c):
    return -90 <= c.latitude <= 90 and -180 <= c.longitude <= 180
