"""The messaging contract shared by every process: exchange, routing keys,
queues and the envelope. DESIGN.md, "RabbitMQ", is the source of these names."""
import hashlib
import json

from ridesync import messages

TRIP_EXCHANGE = "trip"

TRIP_CREATED = "trip.event.created"
TRIP_DRIVER_ASSIGNED = "trip.event.driver_assigned"
TRIP_NO_DRIVERS_FOUND = "trip.event.no_drivers_found"
TRIP_DRIVER_NOT_INTERESTED = "trip.event.driver_not_interested"
DRIVER_TRIP_REQUEST = "driver.cmd.trip_request"
DRIVER_TRIP_ACCEPT = "driver.cmd.trip_accept"
DRIVER_TRIP_DECLINE = "driver.cmd.trip_decline"
DRIVER_LOCATION = "driver.cmd.location"
DRIVER_REGISTER = "driver.cmd.register"
PAYMENT_CREATE_SESSION = "payment.cmd.create_session"
PAYMENT_SESSION_CREATED = "payment.event.session_created"
# The lifecycle (DESIGN.md, "Trip lifecycle").
TRIP_DRIVER_ARRIVED = "trip.event.driver_arrived"
TRIP_STARTED = "trip.event.started"
TRIP_COMPLETED = "trip.event.completed"
TRIP_CANCELLED = "trip.event.cancelled"
DRIVER_TRIP_ARRIVED = "driver.cmd.trip_arrived"
DRIVER_TRIP_STARTED = "driver.cmd.trip_started"
DRIVER_TRIP_COMPLETED = "driver.cmd.trip_completed"
DRIVER_TRIP_CANCEL = "driver.cmd.trip_cancel"
DRIVER_TRIP_WITHDRAWN = "driver.cmd.trip_withdrawn"
PAYMENT_VOID_SESSION = "payment.cmd.void_session"
# Where the driver is, for the rider of their trip (DESIGN.md, "Driver locations"): state, not an event to keep.
TRIP_DRIVER_LOCATION = "trip.event.driver_location"
# Ours, beyond DESIGN.md: dispatch tells TripService it has no one left to
# ask (owner: rider, data messages.AboutTrip), and TripService tells a driver's
# socket that their accept or decline was refused (owner: driver, data
# messages.AnswerRefused; an `error` frame on a v2 socket).
DISPATCH_NO_DRIVERS_LEFT = "dispatch.event.no_drivers_left"
DRIVER_ANSWER_REFUSED = "driver.event.answer_refused"

# Service work queues: name -> routing keys bound to it.
FIND_AVAILABLE_DRIVERS = "find_available_drivers"
DRIVER_TRIP_RESPONSE = "driver_trip_response"
PAYMENT_TRIP_RESPONSE = "payment_trip_response"
DRIVER_AVAILABILITY = "driver_availability"  # ours, beyond DESIGN.md: dispatch learns who is busy
WORK_QUEUES = {
    FIND_AVAILABLE_DRIVERS: (TRIP_CREATED, TRIP_DRIVER_NOT_INTERESTED),
    # TripService's one intake, in the order things happened: an offer
    # (trip_request) is on it before the driver can answer it.
    DRIVER_TRIP_RESPONSE: (DRIVER_TRIP_ACCEPT, DRIVER_TRIP_DECLINE, DRIVER_TRIP_REQUEST, DISPATCH_NO_DRIVERS_LEFT,
                           PAYMENT_SESSION_CREATED),
    PAYMENT_TRIP_RESPONSE: (PAYMENT_CREATE_SESSION, PAYMENT_VOID_SESSION),
    # Also the steps between: tracking follows a trip's status to know where its car is heading.
    DRIVER_AVAILABILITY: (TRIP_DRIVER_ASSIGNED, TRIP_DRIVER_ARRIVED, TRIP_STARTED, TRIP_COMPLETED, TRIP_CANCELLED,
                          DRIVER_TRIP_WITHDRAWN),
}

# The routing keys the gateway delivers to a user's socket, by the socket's role.
RIDER_NOTIFICATION_KEYS = frozenset({
    TRIP_CREATED, TRIP_DRIVER_ASSIGNED, TRIP_NO_DRIVERS_FOUND, PAYMENT_SESSION_CREATED,
    TRIP_DRIVER_ARRIVED, TRIP_STARTED, TRIP_COMPLETED, TRIP_CANCELLED, TRIP_DRIVER_LOCATION,
})
DRIVER_NOTIFICATION_KEYS = frozenset({
    DRIVER_TRIP_REQUEST, DRIVER_TRIP_WITHDRAWN, DRIVER_ANSWER_REFUSED,
    TRIP_DRIVER_ASSIGNED, TRIP_DRIVER_ARRIVED, TRIP_STARTED, TRIP_COMPLETED, TRIP_CANCELLED,
})
NOTIFICATION_KEYS = RIDER_NOTIFICATION_KEYS | DRIVER_NOTIFICATION_KEYS
ROLES = {"rider": RIDER_NOTIFICATION_KEYS, "driver": DRIVER_NOTIFICATION_KEYS}  # a socket's role -> its types
# The header of a notification naming whose socket it is for, "rider" or
# "driver": a trip's events go to its rider and to its driver, and a rider
# and a driver may have the same id. Without it, every role taking the type.
ROLE_HEADER = "role"


def for_role(role):
    """The headers of a notification for the owner's socket in this role."""
    return {ROLE_HEADER: role}


# The record: every notification for a user's socket also goes to this
# stream, with the sockets' `connected` markers, so that a worker can read
# back what a drained worker's user missed (ridesync/gateway/sockets/feed.py).
# Its retention is far longer than any reconnect window.
NOTIFICATIONS_STREAM = "gateway.notifications"
NOTIFICATIONS_STREAM_ARGUMENTS = {
    "x-queue-type": "stream",
    "x-max-age": "1h",
    "x-max-length-bytes": 2 * 1024**3,
    "x-stream-max-segment-size-bytes": 16 * 1024**2,  # retention drops whole segments
}


# Each gateway worker's own queue gets the notifications of the users it
# holds: every notification (and a socket's `connected` marker) is also
# routed, by a CC header, with the key live.<role>.<digest of the user>, from
# `trip` to this exchange, where the holding worker binds that key. A topic
# exchange, though every binding is a whole key: a message with a CC has two
# routing keys, and RabbitMQ's direct exchange matches several keys by
# scanning every binding it has (1.23 ms of broker CPU a message at 10,000
# users bound, against 0.068 ms on a topic exchange). Not `gateway.live`,
# the direct exchange it was: an exchange's type cannot change.
LIVE_EXCHANGE = "gateway.users"
LIVE_KEYS = "live.#"  # what `trip` hands on to LIVE_EXCHANGE
WORKER_QUEUE_PREFIX = "gateway.worker."  # then <host>.<pid>.<random>: one gateway worker's own queue
# The registry: the markers of every socket's comings and goings
# (`connected`, `leaving`, `left`), read whole by every gateway worker.
# Markers are published to `trip` with their type as routing key.
SOCKETS_STREAM = "gateway.sockets"
MARKER_KEYS = "gateway.*"
CONNECTED, LEAVING, LEFT = "gateway.connected", "gateway.leaving", "gateway.left"
# A worker whose queue was lost (gone on reconnect) publishes this marker to
# the record only (the default exchange), once each user it holds is bound
# again to the queue made anew: what the lost queue held or missed is in the
# record before it (ridesync/gateway/sockets/feed.py).
REFILLED = "gateway.refilled"
SOCKETS_STREAM_ARGUMENTS = {
    "x-queue-type": "stream",
    "x-max-age": "1h",
    "x-max-length-bytes": 256 * 1024**2,
    "x-stream-max-segment-size-bytes": 4 * 1024**2,
}


def live_key(role, user_id):
    """The routing key of one user's notifications to the worker holding
    them. A digest: user ids come from phones, and a routing key is at most 255 bytes."""
    return f"live.{role}.{hashlib.blake2b(user_id.encode(), digest_size=16).hexdigest()}"


def live_keys(routing_key, headers):
    """The live keys (CC) of a notification: the role its `role` header
    names, or each role whose sockets take the type; none for another message."""
    owner, named = headers.get("owner"), headers.get(ROLE_HEADER)
    if not isinstance(owner, str):
        return []
    return [live_key(role, owner) for role, keys in ROLES.items()
            if routing_key in keys and (named not in ROLES or named == role)]


def envelope(owner_id, data):
    """The JSON body of every message: who it is about, and what."""
    return json.dumps({"ownerId": owner_id, "data": data}).encode()


def open_envelope(body):
    """(owner_id, data) of a message body (every notification, on every
    gateway worker); messages.Refused, a ValueError naming the field, when
    it is not an envelope."""
    envelope = messages.decode(body, messages.Envelope)
    return envelope.owner_id, envelope.data


MalformedMessage = messages.Refused  # an envelope whose data lacks what its routing key promises

