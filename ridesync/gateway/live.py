"""The WebSockets: /ws/riders and /ws/drivers. A socket gets its user's
notifications from their inboxes; a driver's socket also registers them with
DriverService and forwards their answers to trip requests."""
import logging

import gevent
import grpc
from flask import Blueprint, current_app, request
from flask_sock import Sock

from ridesync import contract
from ridesync.gateway import body
from ridesync.gateway.errors import invalid
from ridesync.gateway.frames import DRIVER_FRAME_TYPES, RIDER_FRAME_TYPES, BadFrame, read_frame
from ridesync.gateway.phones import Phone, deliver
from ridesync.gateway.trips import to_json
from ridesync.gateway.upstream import CALL_DEADLINE
from ridesync.pb import driver_pb2
from ridesync.rabbit import PublishFailed
from ridesync.trip.fares import PACKAGES

log = logging.getLogger(__name__)
bp = Blueprint("live", __name__)
sock = Sock()
INBOX_READY_TIMEOUT = 5.0


@bp.before_request
def refuse_without_identity():
    """Before the upgrade: a clear 400 rather than a socket that hangs up."""
    body.identifier(request.args, "userID")
    if request.path == "/ws/drivers" and request.args.get("packageSlug") not in PACKAGES:
        raise invalid(f"packageSlug is required and must be one of: {', '.join(PACKAGES)}")


@sock.route("/ws/riders", bp=bp)
def riders(ws):
    phone = Phone(ws, "rider", request.args["userID"])
    with Line(phone) as line:
        line.follow(contract.RIDER_NOTIFICATIONS)
        line.start_delivering()
        for raw in line.frames():
            _answer_bad_frame(phone, lambda: read_frame(raw, RIDER_FRAME_TYPES))


@sock.route("/ws/drivers", bp=bp)
def drivers(ws):
    phone = Phone(ws, "driver", request.args["userID"])
    package = request.args["packageSlug"]
    with Line(phone) as line:
        line.follow(contract.DRIVER_NOTIFICATIONS)  # before registering: requests may come at once
        driver = _register(phone, package)
        if driver is None:
            return
        try:
            phone.send(contract.DRIVER_REGISTER, to_json(driver))
            line.start_delivering()
            for raw in line.frames():
                _answer_bad_frame(phone, lambda: _handle_driver_frame(phone, raw))
        finally:
            if not phone.replaced:  # the newer socket holds the registration now
                _unregister(phone, package)


class Line:
    """A connected phone: on the switchboard, with its inboxes and the
    greenlets writing them to the socket; all of it gone on exit."""

    def __init__(self, phone):
        self.phone = phone
        self._worker = _worker()
        self._inboxes = []
        self._writers = []

    def __enter__(self):
        self._worker.switchboard.connect(self.phone)
        self._worker.inboxes.announce(self.phone.role, self.phone.user_id, self.phone.session)
        log.info("%s %s connected", self.phone.role, self.phone.user_id)
        return self

    def follow(self, kinds):
        """Opens this user's inbox for each kind (kind -> routing key)."""
        inboxes = self._worker.inboxes
        self._inboxes = [inboxes.open(self.phone.user_id, kind, key) for kind, key in kinds.items()]
        for inbox in self._inboxes:
            if not inbox.ready.wait(INBOX_READY_TIMEOUT):
                log.warning("inbox %s is not on the broker yet; it will be when the broker answers", inbox.queue)

    def start_delivering(self):
        self._writers = [gevent.spawn(deliver, self.phone, inbox) for inbox in self._inboxes]

    def frames(self):
        while (raw := self.phone.receive()) is not None:
            yield raw

    def __exit__(self, *exc):
        gevent.killall(self._writers)
        for inbox in self._inboxes:
            inbox.close()
        self._worker.switchboard.disconnect(self.phone)
        log.info("%s %s disconnected (close code %s%s)", self.phone.role, self.phone.user_id,
                 self.phone.close_code, ", replaced" if self.phone.replaced else "")
        return False


def _answer_bad_frame(phone, handle):
    try:
        handle()
    except BadFrame as exc:
        log.info("%s %s sent a bad frame: %s", phone.role, phone.user_id, exc.message)
        phone.send_error(exc.code, exc.message)


def _handle_driver_frame(phone, raw):
    kind, data = read_frame(raw, DRIVER_FRAME_TYPES)
    if kind == contract.DRIVER_LOCATION:
        location = data["location"]
        try:
            _upstream().drivers.UpdateLocation(
                driver_pb2.UpdateLocationRequest(
                    driverID=phone.user_id, geohash=data.get("geohash", ""),
                    location=driver_pb2.Location(latitude=location["latitude"], longitude=location["longitude"]),
                ),
                timeout=CALL_DEADLINE,
            )
        except grpc.RpcError as exc:
            raise BadFrame(exc.code().name.lower(), f"{kind} not applied: {exc.details()}") from None
        return
    try:
        _worker().publisher.publish(kind, phone.user_id, data)
    except PublishFailed as exc:
        log.error("driver %s: %s not forwarded: %s", phone.user_id, kind, exc)
        raise BadFrame("unavailable", f"{kind} could not be forwarded; send it again") from None
    log.info("driver %s answered %s for trip %s", phone.user_id, kind, data["tripID"])


def _register(phone, package):
    try:
        answer = _upstream().drivers.RegisterDriver(
            driver_pb2.RegisterDriverRequest(driverID=phone.user_id, packageSlug=package), timeout=CALL_DEADLINE
        )
    except grpc.RpcError as exc:
        log.error("driver %s not registered: %s %s", phone.user_id, exc.code().name, exc.details())
        phone.close(1011, "driver service unavailable; reconnect later")
        return None
    return answer.driver


def _unregister(phone, package):
    try:
        _upstream().drivers.UnregisterDriver(
            driver_pb2.RegisterDriverRequest(driverID=phone.user_id, packageSlug=package), timeout=CALL_DEADLINE
        )
        log.info("driver %s unregistered", phone.user_id)
    except grpc.RpcError as exc:
        log.error("driver %s not unregistered: %s %s", phone.user_id, exc.code().name, exc.details())


def _worker():
    return current_app.extensions["ridesync.worker"]


def _upstream():
    return current_app.extensions["ridesync.upstream"]
