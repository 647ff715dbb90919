"""A driver's way to the rider, then to the destination, as the rider sees
it: which point the car is heading for, where it is, which way it points,
and how far and how long it has to go. Plain logic; the clock, OSRM and
storage are the callers'.

ETA: a route asked from the fix to the target (OSRM, or the great-circle
estimate when OSRM fails) is the basis; until it is older than the refresh
period, each later fix only takes off the distance covered since, at the
basis's average speed."""
import math
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from ridesync import contract, messages
from ridesync.ride.geo import great_circle_m
from ridesync.ride.model import Coordinate

TRACKED = ("accepted", "arrived", "in_progress")  # the statuses in which the rider sees the car
STANDING_M = 2.0  # moves shorter than this keep the heading: a car at a light still points somewhere


@dataclass(frozen=True)
class TripUnderWay:
    """What tracking needs of a trip from its events."""
    id: str
    rider_id: str
    driver_id: str
    status: str
    pickup: Coordinate
    destination: Coordinate

    @classmethod
    def of(cls, trip):
        """From a messages.Trip (an event's data); messages.Refused when it has no driver."""
        return cls(id=trip.id, rider_id=trip.user_id, driver_id=trip.assigned_driver_id(), status=trip.status,
                   pickup=_coordinate(trip.route.pickup), destination=_coordinate(trip.route.destination))

    def to_json(self):
        return {"id": self.id, "rider_id": self.rider_id, "driver_id": self.driver_id, "status": self.status,
                "pickup": _pair(self.pickup), "destination": _pair(self.destination)}

    @classmethod
    def from_json(cls, data):
        return cls(**{**data, "pickup": Coordinate(*data["pickup"]), "destination": Coordinate(*data["destination"])})

    @property
    def tracked(self):
        return self.status in TRACKED

    @property
    def target(self):
        """("pickup" | "destination", where) the car is heading for; None
        once it is at the pickup (arrived), waiting for the rider."""
        if self.status == "arrived":
            return None
        return ("destination", self.destination) if self.status == "in_progress" else ("pickup", self.pickup)


def progress(status):
    """How far along its lifecycle a status is: a trip's events may come
    twice, or late, and only a later status replaces the one known."""
    return _PROGRESS.get(status, 0)


_PROGRESS = {"pending": 0, "accepted": 1, "arrived": 2, "in_progress": 3, "completed": 4, "cancelled": 4}


@dataclass(frozen=True)
class Fix:
    """Where the car was at a moment (unix time), the way it pointed
    (degrees from north, None until it moved), and how far it had driven
    since the trip was taken (its odometer, metres)."""
    location: Coordinate
    at: float
    heading: float | None = None
    odometer: float = 0.0

    def to_json(self):
        return {"location": _pair(self.location), "at": self.at, "heading": self.heading, "odometer": self.odometer}

    @classmethod
    def from_json(cls, data):
        return cls(**{**data, "location": Coordinate(*data["location"])})


def next_fix(previous, location, at):
    """The fix at location, following previous (None for the first)."""
    if previous is None:
        return Fix(location, at)
    moved = great_circle_m(previous.location, location)
    heading = bearing(previous.location, location) if moved >= STANDING_M else previous.heading
    return Fix(location, at, heading, previous.odometer + moved)


def bearing(a, b):
    """Degrees clockwise from north of the way from a to b, 0 to 360."""
    lat1, lat2 = math.radians(a.latitude), math.radians(b.latitude)
    dlon = math.radians(b.longitude - a.longitude)
    x = math.sin(dlon) * math.cos(lat2)
    y = math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(dlon)
    return round(math.degrees(math.atan2(x, y)) % 360, 1)


@dataclass(frozen=True)
class EtaBasis:
    """A route asked for the way from one fix to the target."""
    target: str  # "pickup" or "destination"
    odometer: float  # the car's odometer at the fix it was asked from
    distance: float  # metres
    duration: float  # seconds
    estimated: bool
    asked_at: float  # unix time

    def to_json(self):
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, data):
        return cls(**data)


def needs_route(basis, target, now, refresh):
    """Whether a route must be asked: none yet, another target, or older than refresh seconds."""
    return basis is None or basis.target != target or now - basis.asked_at >= refresh


def basis_of(route, target, fix, now):
    """An EtaBasis from a ride.model.Route asked at fix."""
    return EtaBasis(target, fix.odometer, route.distance, route.duration, route.estimated, now)


def eta(basis, fix):
    """(seconds, metres) left from fix: the basis's route less what was driven since."""
    left = max(0.0, basis.distance - (fix.odometer - basis.odometer))
    seconds = basis.duration * left / basis.distance if basis.distance > 0 else 0.0
    return round(seconds), round(left)


def location_frame(trip, fix, basis):
    """The data of trip.event.driver_location for the trip's rider. basis:
    None once the driver said they arrived (the car is at the pickup,
    nothing is left to drive)."""
    seconds, metres = (0, 0) if basis is None else eta(basis, fix)
    return messages.as_json(messages.DriverLocation(
        trip_id=trip.id, location=messages.Location(fix.location.latitude, fix.location.longitude),
        heading=fix.heading, eta_seconds=seconds, distance_meters=metres,
        at=datetime.fromtimestamp(fix.at, timezone.utc).isoformat(), estimated=basis is not None and basis.estimated,
    ))


@dataclass(frozen=True)
class PushClaim:
    """Who may push a trip's location, until when (unix time). A claim is
    held while its push is published, so that pushes of one trip never
    overtake each other; then it is shortened to the push interval."""
    token: str
    until: float


def claimable(claim, now):
    return claim is None or claim.until <= now


def settled(claim, token, until):
    """The claim once its push is out: the next push may come at until."""
    return replace(claim, until=until) if claim is not None and claim.token == token else claim


def without_locations(notices):
    """What a reconnecting socket is handed, less the driver's locations
    kept for it: a location is state (the trip's last fix comes in
    `trip.state`), not a backlog of events to replay."""
    return [notice for notice in notices if notice.type != contract.TRIP_DRIVER_LOCATION]


def _coordinate(point):
    return Coordinate(point.latitude, point.longitude)


def _pair(c):
    return [c.latitude, c.longitude]
