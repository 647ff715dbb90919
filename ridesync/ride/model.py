"""The trip's own vocabulary as plain data. `to_json` gives the JSON shape of
the .proto messages (same field names), used on the wire and in events."""
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone


class InvalidArgument(ValueError):
    """Input that no trip can be made of; the message says what to fix."""


@dataclass(frozen=True)
class Coordinate:
    latitude: float
    longitude: float

    @classmethod
    def checked(cls, name, latitude, longitude):
        """A Coordinate, or InvalidArgument naming the field that is out of range."""
        if not (_is_number(latitude) and -90 <= latitude <= 90):
            raise InvalidArgument(f"{name}.latitude must be a number between -90 and 90")
        if not (_is_number(longitude) and -180 <= longitude <= 180):
            raise InvalidArgument(f"{name}.longitude must be a number between -180 and 180")
        return cls(float(latitude), float(longitude))


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Route:
    path: tuple  # Coordinates from pickup to destination
    distance: float  # metres
    duration: float  # seconds
    estimated: bool = False

    def to_json(self):
        return {
            "geometry": [{"coordinates": [dataclasses.asdict(c) for c in self.path]}],
            "distance": self.distance,
            "duration": self.duration,
            "estimated": self.estimated,
        }


@dataclass(frozen=True)
class RideFare:
    id: str
    user_id: str
    package_slug: str
    total_price_in_cents: float
    expires_at: float  # unix time
    route: Route = field(repr=False, compare=False)

    def to_json(self):
        return {
            "id": self.id,
            "userID": self.user_id,
            "packageSlug": self.package_slug,
            "totalPriceInCents": self.total_price_in_cents,
            "expiresAt": datetime.fromtimestamp(self.expires_at, timezone.utc).isoformat(),
        }


@dataclass(frozen=True)
class Trip:
    """A trip's record, the truth of it (ride/lifecycle.py says how it moves).
    offered_to and declined are dispatch's: kept with the trip, never shown."""

    id: str
    fare: RideFare
    user_id: str
    status: str = "pending"
    driver: dict = None  # TripDriver JSON, once a driver accepted
    offered_to: str = None  # the driver asked to take it now, while pending
    declined: tuple = ()  # ids of the drivers who declined it, in order
    cancelled_by: str = None  # "rider" or "driver", once cancelled
    reason: str = None  # why it was cancelled, as the canceller said
    payment: dict = None  # {"sessionID", "amount", "currency"}, once a session exists

    @property
    def driver_id(self):
        return self.driver["id"] if self.driver else None

    def to_json(self):
        trip = {
            "id": self.id,
            "selectedFare": self.fare.to_json(),
            "route": self.fare.route.to_json(),
            "status": self.status,
            "userID": self.user_id,
        }
        shown = {"driver": self.driver, "cancelledBy": self.cancelled_by, "reason": self.reason,
                 "payment": self.payment}
        trip.update({name: value for name, value in shown.items() if value})
        return trip
