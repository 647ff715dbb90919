"""The WebSockets: /ws/riders and /ws/drivers. A socket gets its user's
notifications from their inboxes; a driver's socket also registers them with
DriverService and forwards their answers to trip requests."""
import gc
import logging
import os
import uuid

import gevent
import greenlet
import grpc
from flask import Blueprint, current_app, g, jsonify, request
from flask_sock import Sock

from ridesync import contract, metrics
from ridesync.gateway import body, observed
from ridesync.gateway.errors import ApiError, invalid
from ridesync.gateway.frames import DRIVER_FRAME_TYPES, RIDER_FRAME_TYPES, BadFrame, read_frame
from ridesync.gateway.phones import Phone
from ridesync.gateway.trips import to_json
from ridesync.gateway.upstream import CALL_DEADLINE
from ridesync.gateway.worker import GOING_AWAY
from ridesync.pb import driver_pb2
from ridesync.rabbit import PublishFailed
from ridesync.ride.fares import PACKAGES

log = logging.getLogger(__name__)
bp = Blueprint("live", __name__)
sock = Sock()
INBOX_READY_TIMEOUT = 5.0


@bp.before_request
def open_line():
    """Before the upgrade: the identity is checked (a clear 400 rather than a
    socket that hangs up), the user's inboxes are on the broker and a driver
    is registered, so that once the socket is open nothing meant for it is missed."""
    if not request.path.startswith("/ws/"):
        return
    if _worker().draining:
        raise ApiError(503, "unavailable", "this gateway is shutting down; reconnect")
    user_id = body.identifier(request.args, "userID")
    if request.path == "/ws/riders":
        g.line = Line("rider", user_id, contract.RIDER_NOTIFICATIONS)
        return
    package = request.args.get("packageSlug")
    if package not in PACKAGES:
        raise invalid(f"packageSlug is required and must be one of: {', '.join(PACKAGES)}")
    g.line = Line("driver", user_id, contract.DRIVER_NOTIFICATIONS)
    g.line.driver = _register(user_id, package, g.line.session)


@bp.teardown_request
def close_line(_exc):
    """Every way a socket ends comes here: inboxes closed, driver unregistered
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
    line = g.line
    line.connect(ws)
    for raw in line.frames():
        _answer_bad_frame(line.phone, lambda: read_frame(raw, RIDER_FRAME_TYPES))


@sock.route("/ws/drivers", bp=bp)
def drivers(ws):
    line = g.line
    line.connect(ws, first=(contract.DRIVER_REGISTER, line.driver))
    for raw in line.frames():
        _answer_bad_frame(line.phone, lambda: _handle_driver_frame(line, raw))


@bp.get("/live/stats")
def stats():
    """What this worker holds for its sockets; for operators and leak tests.
    ?greenlets=1 also counts the worker's greenlets, which walks its whole
    heap: tens of milliseconds with thousands of sockets."""
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
    """One user's connection: their inboxes on the broker, then their socket
    on the switchboard, each inbox writing to it."""

    def __init__(self, role, user_id, kinds):
        self.role, self.user_id = role, user_id
        self.session = uuid.uuid4().hex  # what registers a driver with DriverService
        self.phone = None
        self.driver = None  # a driver's line: the Driver as DriverService registered it
        self._worker = _worker()
        self._worker.lines.add(self)
        inboxes = self._worker.inboxes
        self._inboxes = [inboxes.open(user_id, kind, keys) for kind, keys in kinds.items()]
        with gevent.Timeout(INBOX_READY_TIMEOUT, False):
            for inbox in self._inboxes:
                inbox.ready.wait()
        for inbox in self._inboxes:
            if not inbox.ready.is_set():
                log.warning("inbox %s is not on the broker yet; it will be when the broker answers", inbox.queue)

    def connect(self, ws, first=None):
        """The socket is open: first, if given, is the (type, data) frame it gets before any other."""
        self.phone = Phone(ws, self.role, self.user_id)
        self._worker.switchboard.connect(self.phone)
        metrics.socket_opened(self.role)
        self._worker.inboxes.announce(self.role, self.user_id, self.phone.session, self.phone.connected_at)
        log.info("%s %s connected", self.role, self.user_id)
        if self._worker.draining:  # it got past the check while the drain took its snapshot
            self.phone.close(*GOING_AWAY)
            return
        if first is not None:
            self.phone.send(*first)
        for inbox in self._inboxes:
            inbox.write_to(self.phone.deliver)

    def frames(self):
        while (raw := self.phone.receive()) is not None:
            yield raw

    def hang_up(self):
        for inbox in self._inboxes:
            inbox.close()
        if self.phone is not None:
            self._worker.switchboard.disconnect(self.phone)
            metrics.socket_closed(self.role)
            log.info("%s %s disconnected (close code %s%s)", self.role, self.user_id,
                     self.phone.close_code, ", replaced" if self.phone.replaced else "")


def _answer_bad_frame(phone, handle):
    try:
        handle()
    except BadFrame as exc:
        log.info("%s %s sent a bad frame: %s", phone.role, phone.user_id, exc.message)
        metrics.FRAMES_REJECTED.labels(exc.code).inc()
        phone.send_error(exc.code, exc.message)


def _handle_driver_frame(line, raw):
    phone = line.phone
    kind, data = read_frame(raw, DRIVER_FRAME_TYPES)
    if kind == contract.DRIVER_LOCATION:
        location = data["location"]
        try:
            moved = _upstream().drivers.UpdateLocation(
                driver_pb2.UpdateLocationRequest(
                    driverID=phone.user_id, geohash=data.get("geohash", ""),
                    location=driver_pb2.Location(latitude=location["latitude"], longitude=location["longitude"]),
                ),
                timeout=CALL_DEADLINE,
            )
        except grpc.RpcError as exc:
            raise BadFrame(exc.code().name.lower(), f"{kind} not applied: {exc.details()}") from None
        line.driver = to_json(moved.driver)
        return
    # The driver in an answer is the one DriverService registered for this
    # socket, not what the phone says it is: riders see that name and plate.
    data = {**data, "driver": line.driver}
    with observed.answering(phone.user_id, data["tripID"]):
        try:
            _worker().publisher.publish(kind, phone.user_id, data)
        except PublishFailed as exc:
            log.error("driver %s: %s not forwarded: %s", phone.user_id, kind, exc)
            raise BadFrame("unavailable", f"{kind} could not be forwarded; send it again") from None
        log.info("driver %s answered %s for trip %s", phone.user_id, kind, data["tripID"])


def _register(driver_id, package, session):
    try:
        answer = _upstream().drivers.RegisterDriver(
            driver_pb2.RegisterDriverRequest(driverID=driver_id, packageSlug=package, session=session),
            timeout=CALL_DEADLINE,
        )
    except grpc.RpcError as exc:
        log.error("driver %s not registered: %s %s", driver_id, exc.code().name, exc.details())
        raise ApiError(503, "unavailable", "the driver service is unavailable; reconnect shortly") from None
    log.info("driver %s registered for %s", driver_id, package)
    return to_json(answer.driver)


def _unregister(driver, session):
    try:
        _upstream().drivers.UnregisterDriver(
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
