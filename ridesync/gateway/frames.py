"""What a phone may send us over its WebSocket, checked before anything is
done with it (text in, (type, message) or BadFrame out; the messages are
ridesync/messages.py's). Plain logic."""
import json

import msgspec

from ridesync import contract, messages

MAX_ECHO = 80  # characters of a phone's own text quoted back in an error (and its log line)


class BadFrame(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


def read_frame(raw, allowed_types):
    """(type, message) of a frame whose type is in allowed_types."""
    if isinstance(raw, (bytes, bytearray)):
        raise BadFrame("unsupported_frame", "binary frames are not supported; send JSON text")
    kind, data = _parts(raw)
    if not isinstance(kind, str) or kind not in allowed_types:
        allowed = ", ".join(sorted(allowed_types)) or "none"
        raise BadFrame("unknown_type", f"unknown frame type {kind!r:.{MAX_ECHO}}; this socket accepts: {allowed}")
    try:
        return kind, messages.decode(data, READERS[kind], "data")
    except messages.Refused as exc:
        code = "invalid_frame" if str(exc).startswith("data must") else "invalid_argument"
        raise BadFrame(code, f"{kind}: {exc}") from None


def _parts(raw):
    """(type, data) of a frame: data still to be read (a msgspec.Raw); or,
    when it is not a frame msgspec reads, read by json, which takes JSON
    only a lax reader takes and says what is wrong with the rest."""
    try:
        frame = _FRAME.decode(raw)
        return frame.type, frame.data
    except (msgspec.DecodeError, RecursionError):
        pass
    try:
        frame = json.loads(raw)
    except ValueError as exc:
        raise BadFrame("invalid_json", f"the frame is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadFrame("invalid_json", "the frame is not valid JSON: it is nested too deeply") from None
    if not isinstance(frame, dict):
        raise BadFrame("invalid_frame", 'a frame is a JSON object {"type": ..., "data": {...}}')
    return frame.get("type"), frame.get("data")


_FRAME = msgspec.json.Decoder(messages.Frame)

READERS = {  # a frame's type -> its data's message
    contract.DRIVER_LOCATION: messages.DriverMoved,
    contract.DRIVER_TRIP_ACCEPT: messages.TripAnswer,
    contract.DRIVER_TRIP_DECLINE: messages.TripAnswer,
    contract.DRIVER_TRIP_ARRIVED: messages.AboutTrip,
    contract.DRIVER_TRIP_STARTED: messages.AboutTrip,
    contract.DRIVER_TRIP_COMPLETED: messages.AboutTrip,
    contract.DRIVER_TRIP_CANCEL: messages.Cancellation,
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

