"""The `ride` fixture's own promise (tests/ride.py): whatever it started is
stopped, also when it fails to start part way."""
import os

import pytest

from tests.ride import riding


def processes_of(tmp_path):
    """Pids of the processes that a test's directory was given to (each Process shares its SQLite file there)."""
    mark = f"sqlite:///{tmp_path}/".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                if mark in environ.read():
                    found.append(int(pid))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def test_a_ride_whose_driver_service_cannot_start_leaves_its_trip_service_stopped(osrm, tmp_path):
    with pytest.raises(AssertionError, match="driver exited"):
        with riding(osrm, tmp_path, {"DRIVER_LISTEN_ADDR": "192.0.2.1:50051"}):  # an address not ours to bind
            pass
    assert processes_of(tmp_path) == []
