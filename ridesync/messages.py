"""Every message that crosses an edge, defined once as a typed structure
(msgspec Structs: bench/messages.py measured them against pydantic and our
hand checks), with the names on the wire (DESIGN.md) as field names.

An edge decodes bytes into one of these with `decode`, and everything
behind it reads attributes; a message that is not one is refused with
`Refused`, whose text names the field ("data.location.latitude must be a
number between -90 and 90")."""
import json
import re
from typing import Annotated, Literal, Optional

import msgspec
from google.protobuf import json_format

from ridesync.identity import MAX_ID_LENGTH
from ridesync.ride import lifecycle
from ridesync.ride.fares import PACKAGES
from ridesync.ride.lifecycle import MAX_REASON

TRIP_ID = "tripID"  # the one place this name is written

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[A-Za-z0-9._:@-]+$")]
Latitude = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Longitude = Annotated[float, msgspec.Meta(ge=-180, le=180)]
Reason = Annotated[str, msgspec.Meta(max_length=MAX_REASON)]
Geohash = Annotated[str, msgspec.Meta(max_length=12)]
STATUSES = (lifecycle.PENDING, *lifecycle.RIDE, lifecycle.CANCELLED, lifecycle.NO_DRIVERS_FOUND)


class Refused(ValueError):
    """Bytes that are not the message asked for; the text names the field."""


# --- on a socket, from a phone -------------------------------------------------------------

class Frame(msgspec.Struct):
    """{"type": ..., "data": {...}}: data is read once its type is known."""
    type: object = None
    data: msgspec.Raw = msgspec.Raw(b"null")


class Location(msgspec.Struct):
    latitude: Latitude
    longitude: Longitude


class DriverMoved(msgspec.Struct):
    """driver.cmd.location (and a v1 rider page's own position)."""
    location: Location
    geohash: Geohash = ""


class AboutTrip(msgspec.Struct):
    """A message about one trip, by its id; on its own, a driver's step
    (driver.cmd.trip_arrived, _started, _completed) and dispatch's
    dispatch.event.no_drivers_left."""
    trip_id: Id = msgspec.field(name=TRIP_ID)


class Cancellation(AboutTrip):
    """driver.cmd.trip_cancel."""
    reason: Reason = ""


class TripAnswer(AboutTrip):
    """driver.cmd.trip_accept and _decline from a driver's phone; the gateway
    sends them on as a DriverAnswer with the driver DriverService registered."""
    rider_id: Id = msgspec.field(name="riderID")
    driver: dict  # what the phone says it is: never read


# --- in an HTTP body -------------------------------------------------------------------------
# userID: optional with a token (the token's user), required in open mode (gateway/identity.py).

class FarePreview(msgspec.Struct):
    """POST /trip/preview."""
    pickup: Location
    destination: Location
    user_id: Optional[Id] = msgspec.field(default=None, name="userID")


class TripStart(msgspec.Struct):
    """POST /trip/start."""
    ride_fare_id: Id = msgspec.field(name="rideFareID")
    user_id: Optional[Id] = msgspec.field(default=None, name="userID")


class RiderCancellation(Cancellation):
    """POST /trip/cancel."""
    user_id: Optional[Id] = msgspec.field(default=None, name="userID")


# --- on the broker ----------------------------------------------------------------------------

class Envelope(msgspec.Struct):
    """The body of every message on the broker: who it is about, and what."""
    owner_id: str = msgspec.field(name="ownerId")
    data: dict


class Withdrawal(AboutTrip):
    """driver.cmd.trip_withdrawn: the offer made to its owner is off."""
    reason: str


class AnswerRefused(AboutTrip):
    """driver.event.answer_refused: TripService refused a driver's accept or decline."""
    code: str
    message: str


class SessionOrder(AboutTrip):
    """payment.cmd.create_session: amount in cents."""
    user_id: Id = msgspec.field(name="userID")
    amount: Annotated[int, msgspec.Meta(gt=0)]
    currency: str


class SessionVoid(AboutTrip):
    """payment.cmd.void_session."""
    user_id: Id = msgspec.field(name="userID")


class SessionCreated(AboutTrip):
    """payment.event.session_created, for the rider and TripService: amount in cents."""
    session_id: Id = msgspec.field(name="sessionID")
    amount: int
    currency: str


class DriverLocation(AboutTrip, omit_defaults=True):
    """trip.event.driver_location: where the rider's driver is (ride/tracking.py)."""
    location: Location
    heading: Optional[float]
    eta_seconds: int = msgspec.field(name="etaSeconds")
    distance_meters: int = msgspec.field(name="distanceMeters")
    at: str
    estimated: bool = False


# --- the Trip (OpenAPI's), the data of trip.event.* and driver.cmd.trip_request ------------
# Read at each consumer's edge; the dict it came as is what is passed on, so its bytes never change.

class Geometry(msgspec.Struct):
    coordinates: Annotated[list[Location], msgspec.Meta(min_length=1)]


class Route(msgspec.Struct):
    """Its first geometry's first point is the pickup, its last one's last the destination."""
    geometry: Annotated[list[Geometry], msgspec.Meta(min_length=1)]
    distance: float  # metres
    duration: float  # seconds
    estimated: bool

    @property
    def pickup(self):
        return self.geometry[0].coordinates[0]

    @property
    def destination(self):
        return self.geometry[-1].coordinates[-1]


class RideFare(msgspec.Struct):
    id: Id
    user_id: Id = msgspec.field(name="userID")
    package_slug: Literal[PACKAGES] = msgspec.field(name="packageSlug")
    total_price_in_cents: float = msgspec.field(name="totalPriceInCents")
    expires_at: str = msgspec.field(name="expiresAt")


class TripDriver(msgspec.Struct):
    """What the rider sees of the driver: DriverService registers every driver with all of it."""
    id: Id
    name: str
    profile_picture: str = msgspec.field(name="profilePicture")
    car_plate: str = msgspec.field(name="carPlate")


class Driver(TripDriver):
    """A driver as DriverService registered them (driver.proto's Driver)."""
    package_slug: Literal[PACKAGES] = msgspec.field(name="packageSlug")
    geohash: Geohash
    location: Location


class DriverAnswer(AboutTrip):
    """driver.cmd.trip_accept and _decline on the broker, for TripService:
    the phone's TripAnswer with the driver as registered."""
    rider_id: Id = msgspec.field(name="riderID")
    driver: Driver


class TripPayment(msgspec.Struct):
    session_id: Id = msgspec.field(name="sessionID")
    amount: int  # cents
    currency: str


class Trip(msgspec.Struct):
    id: Id
    selected_fare: RideFare = msgspec.field(name="selectedFare")
    route: Route
    status: Literal[STATUSES]
    user_id: Id = msgspec.field(name="userID")  # the rider
    driver: Optional[TripDriver] = None  # once accepted
    payment: Optional[TripPayment] = None
    cancelled_by: Optional[Literal["rider", "driver"]] = msgspec.field(default=None, name="cancelledBy")
    reason: Optional[Reason] = None
    driver_location: Optional[DriverLocation] = msgspec.field(default=None, name="driverLocation")

    @property
    def driver_id(self):
        """Its driver's id, None before one accepted."""
        return self.driver.id if self.driver else None

    def assigned_driver_id(self):
        """Its driver's id, for a message that must have one: Refused when it has none."""
        if self.driver is None:
            raise Refused("data.driver.id is required")
        return self.driver.id


class NotInterested(msgspec.Struct):
    """trip.event.driver_not_interested: the trip, for the next driver."""
    trip: Trip
    declined_driver_ids: list[Id] = msgspec.field(name="declinedDriverIDs")


# --- decoding -------------------------------------------------------------------------------

_DECODERS = {}


def decode(raw, kind, path=""):
    """raw (JSON text or bytes, a msgspec.Raw, or a value a lax reader made)
    as a `kind`; Refused naming the field, under path ("data"), when it is
    not one. What msgspec refuses is read again by json, which takes JSON
    only a lax reader takes (a lone surrogate, NaN: checked the same way,
    and then refused for a string that is not text) and raises ValueError
    or RecursionError for what is not JSON."""
    if isinstance(raw, (str, bytes, bytearray, msgspec.Raw)):
        decoder = _DECODERS.get(kind) or _DECODERS.setdefault(kind, msgspec.json.Decoder(kind))
        try:
            return decoder.decode(raw)
        except (msgspec.DecodeError, RecursionError):  # a refused message: the slow path says why
            raw = json.loads(bytes(raw) if isinstance(raw, msgspec.Raw) else raw)
    try:
        value = msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        raise Refused(said(exc, path)) from None
    not_text = next(_not_text(msgspec.to_builtins(value), path), None)
    if not_text is not None:
        raise Refused(f"{not_text} must be text; a lone surrogate such as \\ud800 is not text")
    return value


def as_json(message):
    """A message as JSON-ready builtins, with the wire's names."""
    return msgspec.to_builtins(message)


def proto_json(message):
    """A protobuf message (a gRPC answer) as JSON with the .proto field
    names and every field, zeros too: a Trip read from it as a messages.Trip
    needs `estimated: false` and takes a coordinate of 0."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def said(error, path=""):
    """msgspec's ValidationError in our words, naming the field."""
    words, _, at = str(error).partition(" - at `$")
    where = _joined(path, at.rstrip("`").lstrip("."))
    missing = re.fullmatch(r"Object missing required field `(.+)`", words)
    if missing:
        where = _joined(where, missing[1])
    rule = _RULES.get(_leaf(where))
    if rule is None:
        rule = next((rule for phrase, rule in _ID_RULES if phrase in words), None) or _expected(words, missing)
    return f"{where or 'the message'} {rule}"


_RULES = {  # a field's rule, whatever part of it was broken
    "latitude": "must be a number between -90 and 90",
    "longitude": "must be a number between -180 and 180",
    "reason": f"must be text of at most {MAX_REASON} characters",
    "geohash": "must be a string of at most 12 characters",
    **dict.fromkeys(("location", "pickup", "destination"), "is required: an object with latitude and longitude"),
    "driver": "is required and must be an object",
    "amount": "must be a positive whole number of cents",
    "status": f"must be one of {', '.join(STATUSES)}",
    "packageSlug": f"must be one of {', '.join(PACKAGES)}",
    "cancelledBy": "must be rider or driver",
}
_ID_RULES = (  # msgspec's phrase -> an id's rule (identity.checked_id's words)
    ("of length <=", f"must be at most {MAX_ID_LENGTH} characters"),
    ("Expected `array` of length >=", "must be a non-empty list"),
    ("matching regex", "may hold only letters, digits and . _ : @ -"),
    ("Expected `str", "is required and must be a non-empty string"),
)
_TYPE_NAMES = {"object": "a JSON object", "str": "a string", "float": "a number", "int": "an integer", "array": "a list"}


def _expected(words, missing):
    expected = re.match(r"Expected `(\w+)`", words)
    if missing or expected is None:
        return "is required"
    return f"must be {_TYPE_NAMES.get(expected[1], expected[1])}"


def _joined(path, step):
    return f"{path}.{step}" if path and step and not step.startswith("[") else f"{path}{step}"


def _leaf(where):
    return where.rpartition(".")[2]


def _not_text(value, path):
    """The paths of the strings in value that no UTF-8 writer takes (a lone surrogate)."""
    if isinstance(value, str):
        if not is_text(value):
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _not_text(item, _joined(path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _not_text(item, f"{path}[{i}]")


def is_text(value):
    """False for a string no protobuf or UTF-8 writer takes (a lone surrogate)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
