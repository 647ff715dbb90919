"""The WebSockets: /ws/riders and /ws/drivers. A socket gets its user's
notifications from their inboxes, as its dialect has them (v1 only the
original client's types; v2 everything, `trip.state` first and `error`
answers); a driver's socket also registers them with DriverService, forwards
their answers to trip requests and takes their steps of a trip to
TripService."""
import gc
import logging
import os
import uuid

import gevent
import greenlet
import grpc
from flask import Blueprint, current_app, g, jsonify, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from ridesync import contract, metrics
from ridesync.gateway import dialects, observed
from ridesync.gateway.errors import ApiError, invalid
from ridesync.gateway.frames import DRIVER_FRAME_TYPES, DRIVER_STEPS, RIDER_FRAME_TYPES, BadFrame, is_v2, read_frame
from ridesync.gateway.identity import acting_user, operators_only, origin_allowed
from ridesync.gateway.locations import with_driver_location
from ridesync.gateway.phones import Phone
from ridesync.gateway.trips import to_json
from ridesync.gateway.upstream import CALL_DEADLINE
from ridesync.gateway.worker import GOING_AWAY
from ridesync.pb import driver_pb2, trip_pb2
from ridesync.rabbit import PublishFailed
from ridesync.ride.fares import PACKAGES
from ridesync.ride.model import Coordinate

log = logging.getLogger(__name__)
bp = Blueprint("live", __name__)
sock = Sock()
INTERNAL_ERROR = (1011, "internal error; reconnect")
REGISTRATION_CHECK = 2.0  # seconds between asking DriverService whose registrations it lost


@bp.before_request
def open_line():
    """Before the upgrade: the identity is checked (a clear 400 rather than a
    socket that hangs up), a driver is registered, the user's socket is in
    the feed, and a v2 socket's trip read (after the feed: whatever happens
    to the trip later is in it), so that once the socket is open nothing
    meant for it is missed."""
    if not request.path.startswith("/ws/"):
        return
    if _worker().draining:
        raise ApiError(503, "unavailable", "this gateway is shutting down; reconnect")
    origin_allowed()
    role = "rider" if request.path == "/ws/riders" else "driver"
    user_id = acting_user(request.args.get("userID"), role, query_token=True)
    v2 = is_v2(request.headers.get("Sec-WebSocket-Protocol"))
    if role == "rider":
        line = g.line = Line("rider", user_id, v2)
    else:
        package = request.args.get("packageSlug")
        if package not in PACKAGES:
            raise invalid(f"packageSlug is required and must be one of: {', '.join(PACKAGES)}")
        line = g.line = Line("driver", user_id, v2)
        # Registered before the marker cuts an older socket: that socket's
        # unregister then names a session that no longer holds the
        # registration, and leaves it (and the offer it may hold) alone.
        line.driver = _register(user_id, package, line.session)
        _keep_drivers_registered()
    line.open_inbox()
    line.first = line.dialect.opening(line.driver, _current_trip(user_id) if v2 else None)


@bp.teardown_request
def close_line(_exc):
    """Every way a socket ends comes here: inbox closed, driver unregistered
    (unless a newer socket registered them since: DriverService knows by the session)."""
    line = g.pop("line", None)
    if line is None:
        return
    line.hang_up()
    if line.driver is not None:
        _unregister(line.driver, line.session)
    _worker().lines.discard(line)


@sock.route("/ws/riders", bp=bp)
def riders(ws):
    _serve(ws, _handle_rider_frame)


@sock.route("/ws/drivers", bp=bp)
def drivers(ws):
    _serve(ws, _handle_driver_frame)


def _serve(ws, handle):
    """The socket open, and each frame it sends handled by handle(line, raw) until it closes."""
    line = g.line
    line.connect(ws)
    for raw in line.frames():
        _answer_bad_frame(line, lambda: handle(line, raw))


@bp.get("/live/stats")
def stats():
    """What this worker holds for its sockets; for operators and leak tests.
    ?greenlets=1 also counts the worker's greenlets, which walks its whole
    heap: tens of milliseconds with thousands of sockets."""
    operators_only()
    worker = _worker()
    held = {
        "pid": os.getpid(),
        "sockets": {role: worker.switchboard.count(role) for role in ("rider", "driver")},
        "inboxes": worker.inboxes.open_count,
        "consuming": worker.inboxes.consuming,
    }
    if request.args.get("greenlets") == "1":
        held["greenlets"] = sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)
    return jsonify(held)


class Line:
    """One user's connection: their inbox on this worker (from here on
    nothing for them is missed), then their socket on the switchboard, the
    inbox writing to it."""

    def __init__(self, role, user_id, v2):
        self.role, self.user_id, self.v2 = role, user_id, v2
        self.session = uuid.uuid4().hex  # its inbox's, and what registers a driver with DriverService
        self.phone = None
        self.dialect = dialects.for_socket(role, v2)
        self.first = []  # (type, data) frames the socket gets before any other
        self.driver = None  # a driver's line: the Driver as DriverService registered it
        self.position = None  # a rider's line: where the rider's phone last said they are
        self.hung_up = False
        self._worker = _worker()
        self._upstream = _upstream()  # its writer runs outside the request
        self._worker.lines.add(self)
        self._inbox = None

    def open_inbox(self):
        """The socket's marker in the feed: from here on nothing for the user
        is missed, and an older socket of theirs is cut."""
        self._inbox = self._worker.inboxes.open(self.role, self.user_id, self.session)
        if not self._inbox.wait_in_feed():
            log.warning("%s %s: the broker has not confirmed the socket's marker; opening it anyway",
                        self.role, self.user_id)

    def connect(self, ws):
        """The socket is open: its first frames, then its inbox's notifications."""
        self.phone = Phone(ws, self.role, self.user_id)
        self._worker.switchboard.connect(self.phone)
        metrics.socket_opened(self.role)
        log.info("%s %s connected (%s)", self.role, self.user_id, "v2" if self.v2 else "v1")
        if self._worker.draining:  # it got past the check while the drain took its snapshot
            self.phone.close(*GOING_AWAY)
            return
        for frame in self.first:
            self.phone.send(*frame)
        self._inbox.write_to(self._deliver, self.phone.replace, self.dialect.held)

    def _deliver(self, notice):
        """A notification as this socket's dialect has it (dialects.py): a
        refused answer is an `error` frame on v2 (counted on both). False
        once the socket is gone."""
        try:
            _owner, data = contract.open_envelope(notice.body)
        except ValueError as exc:
            log.error("%s %s: %s at feed offset %s is not an envelope, skipped: %s",
                      self.role, self.user_id, notice.type, notice.offset, exc)
            return True
        kind = notice.type
        if kind == contract.DRIVER_ANSWER_REFUSED:
            code, message = str(data.get("code")), str(data.get("message"))
            log.info("driver %s was refused: %s", self.user_id, message)
            metrics.FRAMES_REJECTED.labels(code).inc()
            kind, data = "error", {"code": code, "message": message}
        return self.dialect.deliver(kind, data, notice, self._write, self._read_trip)

    def _write(self, write):
        return self.phone.deliver(write.kind, write.message_id, write.data, write.notice.headers)

    def _read_trip(self):
        try:
            return _read_current_trip(self._upstream, self.user_id)
        except grpc.RpcError as exc:
            log.warning("%s %s: trip not read (%s %s); a payment session waits for its driver_assigned",
                        self.role, self.user_id, exc.code().name, exc.details())
            return dialects.UNREAD

    def frames(self):
        while (raw := self.phone.receive()) is not None:
            yield raw

    def hang_up(self):
        self.hung_up = True
        if self._inbox is not None:
            self._inbox.close()
        if self.phone is not None:
            self._worker.switchboard.disconnect(self.phone)
            metrics.socket_closed(self.role)
            log.info("%s %s disconnected (close code %s%s)", self.role, self.user_id,
                     self.phone.close_code, ", replaced" if self.phone.replaced else "")


def _answer_bad_frame(line, handle):
    """A bad or refused frame: an `error` answer on v2; on v1 only logged
    and counted (the original client takes an unknown type for a fatal error)."""
    try:
        handle()
    except BadFrame as exc:
        log.info("%s %s sent a bad or refused frame: %s", line.role, line.user_id, exc.message)
        metrics.FRAMES_REJECTED.labels(exc.code).inc()
        if line.v2:
            line.phone.send_error(exc.code, exc.message)
    except ConnectionClosed:
        raise
    except Exception:  # a bug of ours: this socket ends with a close code, and no HTTP 500 is written into it
        log.exception("%s %s: a frame failed unexpectedly; closing the socket (1011)", line.role, line.user_id)
        line.phone.close(*INTERNAL_ERROR)


def _handle_rider_frame(line, raw):
    _kind, data = read_frame(raw, RIDER_FRAME_TYPES)
    location = data["location"]
    line.position = Coordinate(location["latitude"], location["longitude"])
    log.debug("rider %s is at %s", line.user_id, line.position)


def _handle_driver_frame(line, raw):
    kind, data = read_frame(raw, DRIVER_FRAME_TYPES)
    if kind == contract.DRIVER_LOCATION:
        if current_app.extensions["ridesync.location_rate"].allowed(line.user_id):
            _move(line, kind, data)
    elif kind in DRIVER_STEPS:
        _step(line, kind, data)
    else:
        _forward_answer(line, kind, data)


def _move(line, kind, data):
    location = data["location"]
    request = driver_pb2.UpdateLocationRequest(
        driverID=line.user_id,
        location=driver_pb2.Location(latitude=location["latitude"], longitude=location["longitude"]),
    )
    try:
        moved = _upstream().drivers.UpdateLocation(request, timeout=CALL_DEADLINE)
    except grpc.RpcError as exc:
        if exc.code() is not grpc.StatusCode.NOT_FOUND:
            raise BadFrame(exc.code().name.lower(), f"{kind} not applied: {exc.details()}") from None
        _call(kind, lambda: _register_again(line, "its location was not_found"))  # DriverService restarted
        moved = _call(kind, lambda: _upstream().drivers.UpdateLocation(request, timeout=CALL_DEADLINE))
    line.driver = to_json(moved.driver)


def _step(line, kind, data):
    """A driver's step of their trip, taken by TripService at once, so a
    refused one is answered on this socket."""
    trip = _call(kind, lambda: _upstream().trips.DriverStep(
        trip_pb2.DriverStepRequest(tripID=data["tripID"], driverID=line.user_id, step=DRIVER_STEPS[kind],
                                   reason=data.get("reason", "")),
        timeout=CALL_DEADLINE,
    )).trip
    log.info("driver %s: %s for trip %s, now %s", line.user_id, kind, trip.id, trip.status)


def _call(kind, call):
    try:
        return call()
    except grpc.RpcError as exc:
        raise BadFrame(exc.code().name.lower(), f"{kind} not applied: {exc.details()}") from None


def _forward_answer(line, kind, data):
    """An accept or decline, for TripService, which checks that the trip is
    offered to this driver and answers on this socket if not."""
    # The driver in an answer is the one DriverService registered for this
    # socket, not what the phone says it is: riders see that name and plate.
    data = {**data, "driver": line.driver}
    with observed.answering(line.user_id, data["tripID"]):
        try:
            _worker().publisher.publish(kind, line.user_id, data)
        except PublishFailed as exc:
            log.error("driver %s: %s not forwarded: %s", line.user_id, kind, exc)
            raise BadFrame("unavailable", f"{kind} could not be forwarded; send it again") from None
        log.info("driver %s answered %s for trip %s", line.user_id, kind, data["tripID"])


def _register(driver_id, package, session):
    try:
        # wait_for_ready: a restarted DriverService this worker is still backing off from (up to 1 s)
        # is waited for within the deadline, rather than refused at once while the other workers reach it.
        answer = _upstream().drivers.RegisterDriver(
            driver_pb2.RegisterDriverRequest(driverID=driver_id, packageSlug=package, session=session),
            timeout=CALL_DEADLINE, wait_for_ready=True,
        )
    except grpc.RpcError as exc:
        log.error("driver %s not registered: %s %s", driver_id, exc.code().name, exc.details())
        raise ApiError(503, "unavailable", "the driver service is unavailable; reconnect shortly") from None
    log.info("driver %s registered for %s", driver_id, package)
    return to_json(answer.driver)


def _register_again(line, why, upstream=None):
    line.driver = to_json((upstream or _upstream()).drivers.RegisterDriver(
        driver_pb2.RegisterDriverRequest(driverID=line.user_id, packageSlug=line.driver["packageSlug"],
                                         session=line.session),
        timeout=CALL_DEADLINE,
    ).driver)
    log.warning("driver %s registered again: %s", line.user_id, why)


def _keep_drivers_registered():
    """One greenlet per worker, from its first driver's socket on: every
    REGISTRATION_CHECK seconds it asks DriverService which of the drivers
    whose sockets it holds it no longer has (it restarted, its pool in
    memory) and registers them again, so that no open driver's socket
    silently stops getting trip requests."""
    worker, upstream = _worker(), _upstream()
    if worker.registrar is None:
        worker.registrar = gevent.spawn(_check_registrations, worker, upstream)


def _check_registrations(worker, upstream):
    while not worker.draining:
        gevent.sleep(REGISTRATION_CHECK)
        held = {line.user_id: line for line in list(worker.lines) if line.driver is not None and not line.hung_up}
        if not held:
            continue
        try:
            _register_missing(held, upstream)
        except grpc.RpcError as exc:
            log.warning("drivers' registrations not checked: %s %s", exc.code().name, exc.details())
        except Exception as exc:  # a bug of ours must not end the checks: drivers would silently get no requests
            log.error("drivers' registrations not checked, trying again in %.0fs: %s: %s",
                      REGISTRATION_CHECK, type(exc).__name__, exc)


def _register_missing(held, upstream):
    """held: {driver id: Line}. Only those asked about are registered again,
    whatever else DriverService names."""
    missing = upstream.drivers.Unregistered(
        driver_pb2.UnregisteredRequest(driverIDs=list(held)), timeout=CALL_DEADLINE).driverIDs
    for line in (held[driver_id] for driver_id in missing if driver_id in held):
        if line.hung_up:  # its socket closed while we asked: registering it now would leave a ghost
            continue
        _register_again(line, "DriverService no longer had them", upstream)
        if line.hung_up:  # it closed meanwhile, and its teardown's unregister may have arrived first
            _unregister(line.driver, line.session, upstream)


def _current_trip(user_id):
    """The user's active trip (JSON) or None, for `trip.state`."""
    try:
        trip = _read_current_trip(_upstream(), user_id)
    except grpc.RpcError as exc:
        log.error("%s's trip not read: %s %s", user_id, exc.code().name, exc.details())
        raise ApiError(503, "unavailable", "the trip service is unavailable; reconnect shortly") from None
    return with_driver_location(trip, _upstream()) if trip is not None else None


def _read_current_trip(upstream, user_id):
    answer = upstream.trips.CurrentTrip(trip_pb2.CurrentTripRequest(userID=user_id), timeout=CALL_DEADLINE)
    return to_json(answer.trip) if answer.HasField("trip") else None


def _unregister(driver, session, upstream=None):
    try:
        (upstream or _upstream()).drivers.UnregisterDriver(
            driver_pb2.RegisterDriverRequest(driverID=driver["id"], packageSlug=driver["packageSlug"], session=session),
            timeout=CALL_DEADLINE,
        )
        log.info("driver %s unregistered", driver["id"])
    except grpc.RpcError as exc:
        log.error("driver %s not unregistered: %s %s", driver["id"], exc.code().name, exc.details())


def _worker():
    return current_app.extensions["ridesync.worker"]


def _upstream():
    return current_app.extensions["ridesync.upstream"]
