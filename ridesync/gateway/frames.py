"""What a phone may send us over its WebSocket, checked before anything is
done with it (text in, (type, data) or BadFrame out). Plain logic."""
import json

from ridesync import contract, identity
from ridesync.ride.lifecycle import MAX_REASON
from ridesync.ride.model import Coordinate, InvalidArgument

MAX_ECHO = 80  # characters of a phone's own text quoted back in an error (and its log line)


class BadFrame(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


def read_frame(raw, allowed_types):
    """(type, data) of a frame whose type is in allowed_types."""
    if isinstance(raw, (bytes, bytearray)):
        raise BadFrame("unsupported_frame", "binary frames are not supported; send JSON text")
    try:
        frame = json.loads(raw)
    except ValueError as exc:
        raise BadFrame("invalid_json", f"the frame is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadFrame("invalid_json", "the frame is not valid JSON: it is nested too deeply") from None
    if not isinstance(frame, dict):
        raise BadFrame("invalid_frame", 'a frame is a JSON object {"type": ..., "data": {...}}')
    kind, data = frame.get("type"), frame.get("data")
    if not isinstance(kind, str) or kind not in allowed_types:
        allowed = ", ".join(sorted(allowed_types)) or "none"
        raise BadFrame("unknown_type", f"unknown frame type {kind!r:.{MAX_ECHO}}; this socket accepts: {allowed}")
    if not isinstance(data, dict):
        raise BadFrame("invalid_frame", f"{kind}: data must be an object")
    return kind, READERS[kind](kind, data)


def _location(kind, data):
    location = data.get("location")
    if not isinstance(location, dict):
        raise BadFrame("invalid_argument", f"{kind}: data.location is required")
    try:
        where = Coordinate.checked("data.location", location.get("latitude"), location.get("longitude"))
    except InvalidArgument as exc:
        raise BadFrame("invalid_argument", f"{kind}: {exc}") from None
    geohash = data.get("geohash", "")
    if not isinstance(geohash, str) or len(geohash) > 12:
        raise BadFrame("invalid_argument", f"{kind}: data.geohash must be a string of at most 12 characters")
    return {"location": {"latitude": where.latitude, "longitude": where.longitude}, "geohash": geohash}


def _trip_id(kind, data):
    _id(kind, data, "tripID")
    return {"tripID": data["tripID"]}  # a step takes nothing else from the phone


def _trip_cancel(kind, data):
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON or not is_text(reason):
        raise BadFrame("invalid_argument", f"{kind}: data.reason must be text of at most {MAX_REASON} characters")
    return {**_trip_id(kind, data), "reason": reason}


def _trip_answer(kind, data):
    for name in ("tripID", "riderID"):
        _id(kind, data, name)
    if not isinstance(data.get("driver"), dict):
        raise BadFrame("invalid_argument", f"{kind}: data.driver is required and must be an object")
    # Forwarded to TripService: nothing the phone added rides along (its driver is replaced by the registered one).
    return {"tripID": data["tripID"], "riderID": data["riderID"], "driver": data["driver"]}


def _id(kind, data, name):
    try:
        identity.checked_id(f"data.{name}", data.get(name))
    except identity.InvalidId as exc:
        raise BadFrame("invalid_argument", f"{kind}: {exc}") from None


def is_text(value):
    """False for a string no protobuf or UTF-8 writer takes (a lone surrogate)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


READERS = {
    contract.DRIVER_LOCATION: _location,
    contract.DRIVER_TRIP_ACCEPT: _trip_answer,
    contract.DRIVER_TRIP_DECLINE: _trip_answer,
    contract.DRIVER_TRIP_ARRIVED: _trip_id,
    contract.DRIVER_TRIP_STARTED: _trip_id,
    contract.DRIVER_TRIP_COMPLETED: _trip_id,
    contract.DRIVER_TRIP_CANCEL: _trip_cancel,
}
DRIVER_FRAME_TYPES = frozenset(READERS)
# The v1 rider page sends its own position, on the rider socket, as a driver's location frame.
RIDER_FRAME_TYPES = frozenset({contract.DRIVER_LOCATION})
# A driver's step on the way -> the lifecycle's name for it (DriverStep's step).
DRIVER_STEPS = {
    contract.DRIVER_TRIP_ARRIVED: "arrived",
    contract.DRIVER_TRIP_STARTED: "started",
    contract.DRIVER_TRIP_COMPLETED: "completed",
    contract.DRIVER_TRIP_CANCEL: "cancelled",
}

# Dialects (DESIGN.md, "WebSocket API"; dialects.py): a socket is v2 when
# the phone asks for this subprotocol, else v1, the original web client,
# which takes any type outside its list for a fatal error.
V2_SUBPROTOCOL = "ridesync.v2"
TRIP_STATE = "trip.state"
V1_TYPES = frozenset({
    contract.TRIP_CREATED, contract.TRIP_DRIVER_ASSIGNED, contract.TRIP_NO_DRIVERS_FOUND,
    contract.TRIP_COMPLETED, contract.TRIP_CANCELLED, contract.PAYMENT_SESSION_CREATED,
    contract.DRIVER_REGISTER, contract.DRIVER_TRIP_REQUEST,
})


def is_v2(subprotocol_header):
    """Whether the phone asked for v2 in its Sec-WebSocket-Protocol header."""
    return V2_SUBPROTOCOL in (p.strip() for p in (subprotocol_header or "").split(","))

