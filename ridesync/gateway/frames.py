"""What a phone may send us over its WebSocket, checked before anything is
done with it. Plain logic: text in, (type, data) or BadFrame out."""
import json

from ridesync import contract
from ridesync.ride.model import Coordinate, InvalidArgument

MAX_FRAME_BYTES = 64 * 1024


class BadFrame(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


def read_frame(raw, allowed_types):
    """(type, data) of a frame whose type is in allowed_types."""
    if isinstance(raw, (bytes, bytearray)):
        raise BadFrame("unsupported_frame", "binary frames are not supported; send JSON text")
    if len(raw.encode()) > MAX_FRAME_BYTES:
        raise BadFrame("frame_too_large", f"frames are limited to {MAX_FRAME_BYTES} bytes")
    try:
        frame = json.loads(raw)
    except ValueError as exc:
        raise BadFrame("invalid_json", f"the frame is not valid JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise BadFrame("invalid_frame", 'a frame is a JSON object {"type": ..., "data": {...}}')
    kind, data = frame.get("type"), frame.get("data")
    if not isinstance(kind, str) or kind not in allowed_types:
        allowed = ", ".join(sorted(allowed_types)) or "none"
        raise BadFrame("unknown_type", f"unknown frame type {kind!r}; this socket accepts: {allowed}")
    if not isinstance(data, dict):
        raise BadFrame("invalid_frame", f"{kind}: data must be an object")
    return kind, READERS[kind](kind, data)


def _location(kind, data):
    location = data.get("location")
    if not isinstance(location, dict):
        raise BadFrame("invalid_argument", f"{kind}: data.location is required")
    try:
        Coordinate.checked("data.location", location.get("latitude"), location.get("longitude"))
    except InvalidArgument as exc:
        raise BadFrame("invalid_argument", f"{kind}: {exc}") from None
    geohash = data.get("geohash", "")
    if not isinstance(geohash, str) or len(geohash) > 12:
        raise BadFrame("invalid_argument", f"{kind}: data.geohash must be a string of at most 12 characters")
    return data


def _trip_answer(kind, data):
    for name in ("tripID", "riderID"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise BadFrame("invalid_argument", f"{kind}: data.{name} is required and must be a non-empty string")
    if not isinstance(data.get("driver"), dict):
        raise BadFrame("invalid_argument", f"{kind}: data.driver is required and must be an object")
    return data


READERS = {
    contract.DRIVER_LOCATION: _location,
    contract.DRIVER_TRIP_ACCEPT: _trip_answer,
    contract.DRIVER_TRIP_DECLINE: _trip_answer,
}
DRIVER_FRAME_TYPES = frozenset(READERS)
RIDER_FRAME_TYPES = frozenset()
