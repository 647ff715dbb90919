import pytest

from tests.support import AmqpTap, FakeOsrm, free_port, start_service


@pytest.fixture
def osrm():
    fake = FakeOsrm()
    yield fake
    fake.close()


@pytest.fixture
def amqp_tap():
    taps = []

    def make(*routing_keys):
        tap = AmqpTap(routing_keys or ("#",))
        taps.append(tap)
        return tap

    yield make
    for tap in taps:
        tap.close()


@pytest.fixture
def trip_service(osrm, tmp_path):
    """A real TripService on loopback, asking the OSRM stand-in."""
    address = f"127.0.0.1:{free_port()}"
    process = start_service(
        "ridesync.trip", address,
        {"TRIP_SERVICE_ADDR": address, "OSRM_URL": osrm.url, "OSRM_TIMEOUT": "2",
         "OSRM_BREAKER_RESET": "1"},
        tmp_path,
    )
    process.address = address
    yield process
    process.stop()
