"""The gateway keeping its drivers registered: real gunicorn, real
RabbitMQ, and a DriverService stand-in on real gRPC that answers as told."""
import threading

import pytest

from ridesync import contract, grpc_server
from ridesync.driver.pool import new_driver
from ridesync.pb import driver_pb2, driver_pb2_grpc
from tests.phone import Phone
from tests.ride import new_id
from tests.support import closed_port_address, start_gateway, wait_until


class ScriptedDriverService(driver_pb2_grpc.DriverServiceServicer):
    """Registers anyone; `Unregistered` answers the lists in `unregistered`
    one call each, then the last one on every call after."""

    def __init__(self, unregistered):
        self.unregistered = list(unregistered)
        self.registrations = []  # driver ids, one per RegisterDriver, in order
        self.calls = []  # ("register" | "unregister" | "asked", driver ids), in order
        self.held = threading.Event()  # set: the next Unregistered waits until released
        self.holding, self.released = threading.Event(), threading.Event()
        self._lock = threading.Lock()

    def RegisterDriver(self, request, context):
        with self._lock:
            self.registrations.append(request.driverID)
            self.calls.append(("register", request.driverID))
        driver = new_driver(request.driverID, request.packageSlug)
        return driver_pb2.RegisterDriverResponse(driver=driver_pb2.Driver(id=driver.id, packageSlug=driver.package_slug))

    def UnregisterDriver(self, request, context):
        with self._lock:
            self.calls.append(("unregister", request.driverID))
        return driver_pb2.RegisterDriverResponse()

    def Unregistered(self, request, context):
        if self.held.is_set():
            self.held.clear()
            self.holding.set()
            self.released.wait(30)
        with self._lock:
            answer = self.unregistered.pop(0) if len(self.unregistered) > 1 else self.unregistered[0]
            self.calls.append(("asked", tuple(request.driverIDs)))
        return driver_pb2.UnregisteredResponse(driverIDs=answer)


@pytest.fixture
def scripted_gateway(tmp_path):
    """scripted_gateway(unregistered) -> (the ScriptedDriverService, the
    base URL of a gateway whose DriverService it is)."""
    stops = []

    def make(unregistered):
        service = ScriptedDriverService(unregistered)
        server = grpc_server.start("127.0.0.1:0", lambda s: driver_pb2_grpc.add_DriverServiceServicer_to_server(
            service, s), ["driver.DriverService"], max_workers=4)
        stops.append(lambda: server.stop(0).wait())
        gateway, base = start_gateway({"DRIVER_SERVICE_ADDR": server.address,
                                       "TRIP_SERVICE_ADDR": closed_port_address()}, tmp_path)
        stops.append(gateway.stop)
        return service, base

    yield make
    for stop in reversed(stops):
        stop()


def test_a_driver_service_naming_a_driver_it_was_not_asked_about_stops_no_re_registration(scripted_gateway):
    """The check goes on after such an answer, and registers the driver
    again once DriverService says it lost them."""
    driver_id = new_id("driver")
    service, base = scripted_gateway([[new_id("ghost")], [driver_id]])
    phone = Phone(base, f"/ws/drivers?userID={driver_id}&packageSlug=sedan")
    try:
        assert phone.next(contract.DRIVER_REGISTER)["data"]["id"] == driver_id
        wait_until(lambda: service.registrations.count(driver_id) >= 2, timeout=15,
                   message=f"the gateway to register {driver_id} again")
    finally:
        phone.close()


def test_a_driver_whose_socket_closes_while_the_check_asks_is_not_registered_again(scripted_gateway):
    """DriverService answers that it lost the driver only after their socket
    closed and unregistered them: the gateway leaves them unregistered, or
    DriverService would offer trips to a driver with no socket."""
    leaving, staying = new_id("driver"), new_id("driver")
    service, base = scripted_gateway([[leaving]])
    phones = {driver_id: Phone(base, f"/ws/drivers?userID={driver_id}&packageSlug=sedan") for driver_id in (leaving, staying)}
    try:
        for driver_id, phone in phones.items():
            assert phone.next(contract.DRIVER_REGISTER)["data"]["id"] == driver_id
        service.held.set()
        assert service.holding.wait(15), "the gateway never checked its drivers' registrations"
        phones[leaving].close()
        wait_until(lambda: ("unregister", leaving) in service.calls, timeout=10,
                   message=f"the gateway to unregister {leaving} as their socket closed")
        asked = len(service.calls)
        service.released.set()
        # The check after the held one shows the held one's answer was acted on.
        wait_until(lambda: any(call[0] == "asked" for call in service.calls[asked + 1:]), timeout=15,
                   message="the gateway to check its drivers' registrations again")
        assert [call for call in service.calls if call[1] == leaving][-1] == ("unregister", leaving)
    finally:
        service.released.set()
        for phone in phones.values():
            phone.close()
