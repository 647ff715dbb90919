"""What a driver's socket does beyond a rider's: it registers the driver
with DriverService before it opens (and unregisters them when it closes,
unless a newer socket registered them since), keeps them registered while
DriverService restarts, and takes the driver's frames: a location for
DriverService, a step of their trip for TripService, an answer to a trip
request for TripService's queue."""
import logging

import gevent
import grpc
import msgspec
from flask import current_app

from ridesync import contract
from ridesync.gateway import observed
from ridesync.gateway.errors import ApiError
from ridesync.gateway.frames import DRIVER_FRAME_TYPES, DRIVER_STEPS, BadFrame, read_frame
from ridesync.gateway.upstream import CALL_DEADLINE
from ridesync.messages import Driver, DriverAnswer, as_json, proto_json
from ridesync.pb import driver_pb2, trip_pb2
from ridesync.rabbit import PublishFailed

log = logging.getLogger(__name__)


def handle_frame(connection, raw):
    kind, data = read_frame(raw, DRIVER_FRAME_TYPES)
    if kind == contract.DRIVER_LOCATION:
        if current_app.extensions["ridesync.location_rate"].allowed(connection.user_id):
            _move(connection, kind, data)
    elif kind in DRIVER_STEPS:
        _step(connection, kind, data)
    else:
        _forward_answer(connection, kind, data)


def _move(connection, kind, data):
    request = driver_pb2.UpdateLocationRequest(
        driverID=connection.user_id,
        location=driver_pb2.Location(latitude=data.location.latitude, longitude=data.location.longitude),
    )
    try:
        moved = _upstream().drivers.UpdateLocation(request, timeout=CALL_DEADLINE)
    except grpc.RpcError as exc:
        if exc.code() is not grpc.StatusCode.NOT_FOUND:
            raise BadFrame(exc.code().name.lower(), f"{kind} not applied: {exc.details()}") from None
        _call(kind, lambda: _register_again(connection, "its location was not_found"))  # DriverService restarted
        moved = _call(kind, lambda: _upstream().drivers.UpdateLocation(request, timeout=CALL_DEADLINE))
    connection.driver = proto_json(moved.driver)


def _step(connection, kind, data):
    """A driver's step of their trip, taken by TripService at once, so a
    refused one is answered on this socket."""
    trip = _call(kind, lambda: _upstream().trips.DriverStep(
        trip_pb2.DriverStepRequest(tripID=data.trip_id, driverID=connection.user_id, step=DRIVER_STEPS[kind],
                                   reason=getattr(data, "reason", "")),
        timeout=CALL_DEADLINE,
    )).trip
    log.info("driver %s: %s for trip %s, now %s", connection.user_id, kind, trip.id, trip.status)


def _call(kind, call):
    try:
        return call()
    except grpc.RpcError as exc:
        raise BadFrame(exc.code().name.lower(), f"{kind} not applied: {exc.details()}") from None


def _forward_answer(connection, kind, data):
    """An accept or decline, for TripService, which checks that the trip is
    offered to this driver and answers on this socket if not."""
    # The driver in an answer is the one DriverService registered for this
    # socket, not what the phone says it is: riders see that name and plate.
    answer = DriverAnswer(trip_id=data.trip_id, rider_id=data.rider_id,
                          driver=msgspec.convert(connection.driver, Driver))
    with observed.answering(connection.user_id, answer.trip_id):
        try:
            _hub().publisher.publish(kind, connection.user_id, as_json(answer))
        except PublishFailed as exc:
            log.error("driver %s: %s not forwarded: %s", connection.user_id, kind, exc)
            raise BadFrame("unavailable", f"{kind} could not be forwarded; send it again") from None
        log.info("driver %s answered %s for trip %s", connection.user_id, kind, answer.trip_id)


def register(driver_id, package, session):
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
    return proto_json(answer.driver)


def _register_again(connection, why, upstream=None):
    connection.driver = proto_json((upstream or _upstream()).drivers.RegisterDriver(
        driver_pb2.RegisterDriverRequest(driverID=connection.user_id, packageSlug=connection.driver["packageSlug"],
                                         session=connection.session),
        timeout=CALL_DEADLINE,
    ).driver)
    log.warning("driver %s registered again: %s", connection.user_id, why)


def keep_registered():
    """One greenlet per worker, from its first driver's socket on: every
    REGISTRATION_CHECK seconds it asks DriverService which of the drivers
    whose sockets it holds it no longer has (it restarted, its pool in
    memory) and registers them again, so that no open driver's socket
    silently stops getting trip requests."""
    hub, upstream = _hub(), _upstream()
    if hub.registrar is None:
        every = current_app.config["RIDESYNC"].registration_check
        hub.registrar = gevent.spawn(_check_registrations, hub, upstream, every)


def _check_registrations(hub, upstream, every):
    while not hub.draining:
        gevent.sleep(every)
        held = {c.user_id: c for c in hub.connections() if c.driver is not None and not c.closed}
        if not held:
            continue
        try:
            _register_missing(held, upstream)
        except grpc.RpcError as exc:
            log.warning("drivers' registrations not checked: %s %s", exc.code().name, exc.details())
        except Exception as exc:  # a bug of ours must not end the checks: drivers would silently get no requests
            log.error("drivers' registrations not checked, trying again in %.0fs: %s: %s",
                      every, type(exc).__name__, exc)


def _register_missing(held, upstream):
    """held: {driver id: Connection}. Only those asked about are registered again,
    whatever else DriverService names."""
    missing = upstream.drivers.Unregistered(
        driver_pb2.UnregisteredRequest(driverIDs=list(held)), timeout=CALL_DEADLINE).driverIDs
    for connection in (held[driver_id] for driver_id in missing if driver_id in held):
        if connection.closed:  # its socket closed while we asked: registering it now would leave a ghost
            continue
        _register_again(connection, "DriverService no longer had them", upstream)
        if connection.closed:  # it closed meanwhile, and its teardown's unregister may have arrived first
            unregister(connection.driver, connection.session, upstream)


def unregister(driver, session, upstream=None):
    try:
        (upstream or _upstream()).drivers.UnregisterDriver(
            driver_pb2.RegisterDriverRequest(driverID=driver["id"], packageSlug=driver["packageSlug"], session=session),
            timeout=CALL_DEADLINE,
        )
        log.info("driver %s unregistered", driver["id"])
    except grpc.RpcError as exc:
        log.error("driver %s not unregistered: %s %s", driver["id"], exc.code().name, exc.details())


def _hub():
    return current_app.extensions["ridesync.hub"]


def _upstream():
    return current_app.extensions["ridesync.upstream"]
