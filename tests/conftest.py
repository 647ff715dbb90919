import itertools
import os

import pytest

from tests import support, vhost
from tests.support import AmqpTap, FakeOsrm, made_by, start_trip_service


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
    process = start_trip_service(osrm, tmp_path)
    yield process
    process.stop()


@pytest.fixture
def start_trip(osrm, tmp_path):
    """Starts real TripServices asking the OSRM stand-in, with env overrides
    (start_trip(OSRM_TIMEOUT="30")); stops them afterwards."""
    names = itertools.count()
    yield from made_by(
        lambda **env: start_trip_service(osrm, tmp_path, name=f"trip-{next(names)}", **env), lambda p: p.stop()
    )


@pytest.fixture(scope="session", autouse=True)
def private_vhost():
    """This run's RabbitMQ vhost (tests/vhost.py), and its URL and the tests'
    AUTH_SECRET in the environment of every process a test starts; the vhost
    is removed when the run ends."""
    vhost.create(support.AMQP_URL)
    os.environ.update(AMQP_URL=support.AMQP_URL, AUTH_SECRET=support.AUTH_SECRET)
    yield support.AMQP_URL
    vhost.remove(support.AMQP_URL)


def pytest_configure(config):
    config.addinivalue_line("markers", "ride_env(**settings): every process of the ride or cluster fixture")
