"""The WebSockets: /ws/riders and /ws/drivers, and /live/stats. A socket
gets its user's notifications from this worker's hub, as its dialect has
them (v1 only the original client's types; v2 everything, `trip.state`
first and `error` answers); a driver's socket also does what drivers.py
says."""
import gc
import logging
import os

import greenlet
import grpc
from flask import Blueprint, current_app, g, jsonify, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from ridesync import metrics
from ridesync.gateway.errors import ApiError, invalid
from ridesync.gateway import dialects
from ridesync.gateway.frames import RIDER_FRAME_TYPES, BadFrame, is_v2, read_frame
from ridesync.gateway.identity import acting_user, operators_only, origin_allowed
from ridesync.gateway.locations import with_driver_location
from ridesync.gateway.sockets import drivers
from ridesync.gateway.sockets.connection import Connection
from ridesync.gateway.sockets.hub import GOING_AWAY
from ridesync.gateway.upstream import CALL_DEADLINE
from ridesync.messages import proto_json
from ridesync.pb import trip_pb2
from ridesync.ride.fares import PACKAGES
from ridesync.ride.model import Coordinate

log = logging.getLogger(__name__)
bp = Blueprint("live", __name__)
sock = Sock()
INTERNAL_ERROR = (1011, "internal error; reconnect")


@bp.before_request
def open_connection():
    """Before the upgrade: the identity is checked (a clear 400 rather than a
    socket that hangs up), a driver is registered, the user's socket is in
    the feed, and a v2 socket's trip read (after the feed: whatever happens
    to the trip later is in it), so that once the socket is open nothing
    meant for it is missed."""
    if not request.path.startswith("/ws/"):
        return
    hub = _hub()
    if hub.draining:
        raise ApiError(503, "unavailable", "this gateway is shutting down; reconnect")
    origin_allowed()
    role = "rider" if request.path == "/ws/riders" else "driver"
    user_id = acting_user(request.args.get("userID"), role, query_token=True)
    v2 = is_v2(request.headers.get("Sec-WebSocket-Protocol"))
    package = request.args.get("packageSlug")
    if role == "driver" and package not in PACKAGES:
        raise invalid(f"packageSlug is required and must be one of: {', '.join(PACKAGES)}")
    connection = g.connection = Connection(role, user_id, v2, _trip_reader(_upstream(), role, user_id))
    hub.track(connection)
    if role == "driver":
        # Registered before the marker cuts an older socket: that socket's
        # unregister then names a session that no longer holds the
        # registration, and leaves it (and the offer it may hold) alone.
        connection.driver = drivers.register(user_id, package, connection.session)
        drivers.keep_registered()
    if not hub.open(connection):
        log.warning("%s %s: the broker has not bound the user within MARKER_WAIT; opening the socket anyway",
                    role, user_id)
    connection.first = connection.dialect.opening(connection.driver, _current_trip(user_id) if v2 else None)


@bp.teardown_request
def close_connection(_exc):
    """Every way a socket ends comes here: its notifications handed on, its
    driver unregistered (unless a newer socket registered them since:
    DriverService knows by the session)."""
    connection = g.pop("connection", None)
    if connection is None:
        return
    _hub().close(connection)
    if connection.driver is not None:
        drivers.unregister(connection.driver, connection.session)


@sock.route("/ws/riders", bp=bp)
def riders(ws):
    _serve(ws, _handle_rider_frame)


@sock.route("/ws/drivers", bp=bp)
def drivers_socket(ws):
    _serve(ws, drivers.handle_frame)


def _serve(ws, handle):
    """The socket open, and each frame it sends handled by handle(connection, raw) until it closes."""
    connection = g.connection
    connection.open(ws)
    if _hub().draining:  # it got past the check while the drain took its snapshot
        connection.close(*GOING_AWAY)
        return
    connection.greet()
    while (raw := connection.receive()) is not None:
        _answer_bad_frame(connection, lambda: handle(connection, raw))


@bp.get("/live/stats")
def stats():
    """What this worker holds for its sockets; for operators and leak tests.
    ?greenlets=1 also counts the worker's greenlets, which walks its whole
    heap: tens of milliseconds with thousands of sockets."""
    operators_only()
    held = {"pid": os.getpid(), **_hub().stats()}
    if request.args.get("greenlets") == "1":
        held["greenlets"] = sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)
    return jsonify(held)


def _answer_bad_frame(connection, handle):
    """A bad or refused frame: an `error` answer on v2; on v1 only logged
    and counted (the original client takes an unknown type for a fatal error)."""
    try:
        handle()
    except BadFrame as exc:
        log.info("%s %s sent a bad or refused frame: %s", connection.role, connection.user_id, exc.message)
        metrics.FRAMES_REJECTED.labels(exc.code).inc()
        if connection.v2:
            connection.send_error(exc.code, exc.message)
    except ConnectionClosed:
        raise
    except Exception:  # a bug of ours: this socket ends with a close code, and no HTTP 500 is written into it
        log.exception("%s %s: a frame failed unexpectedly; closing the socket (1011)",
                      connection.role, connection.user_id)
        connection.close(*INTERNAL_ERROR)


def _handle_rider_frame(connection, raw):
    _kind, data = read_frame(raw, RIDER_FRAME_TYPES)
    connection.position = Coordinate(data.location.latitude, data.location.longitude)
    log.debug("rider %s is at %s", connection.user_id, connection.position)


def _current_trip(user_id):
    """The user's active trip (JSON) or None, for `trip.state`."""
    try:
        trip = _read_current_trip(_upstream(), user_id)
    except grpc.RpcError as exc:
        log.error("%s's trip not read: %s %s", user_id, exc.code().name, exc.details())
        raise ApiError(503, "unavailable", "the trip service is unavailable; reconnect shortly") from None
    return with_driver_location(trip, _upstream()) if trip is not None else None


def _trip_reader(upstream, role, user_id):
    """read_trip() for a socket's dialect: its writer runs outside the request."""
    def read_trip():
        try:
            return _read_current_trip(upstream, user_id)
        except grpc.RpcError as exc:
            log.warning("%s %s: trip not read (%s %s); a payment session waits for its driver_assigned",
                        role, user_id, exc.code().name, exc.details())
            return dialects.UNREAD
    return read_trip


def _read_current_trip(upstream, user_id):
    answer = upstream.trips.CurrentTrip(trip_pb2.CurrentTripRequest(userID=user_id), timeout=CALL_DEADLINE)
    return proto_json(answer.trip) if answer.HasField("trip") else None


def _hub():
    return current_app.extensions["ridesync.hub"]


def _upstream():
    return current_app.extensions["ridesync.upstream"]
