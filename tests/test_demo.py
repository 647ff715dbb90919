"""The demo client (python -m ridesync.demo) plays its whole ride against
every process of a ride."""
import subprocess
import sys

import pytest

from tests.ride import ride  # noqa: F401 (a fixture)
from tests.support import ROOT


@pytest.mark.ride_env(OFFER_TIMEOUT="60")  # the demo driver's accept may take longer than 2 s on a loaded machine
def test_the_demo_rides_from_preview_to_completed(ride):
    done = subprocess.run([sys.executable, "-m", "ridesync.demo", "--url", ride.url, "--package", "van"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for seen in ("driver <- driver.cmd.trip_request", "rider <- trip.event.driver_location the car at",
                 "rider <- trip.event.driver_arrived",
                 "rider <- trip.event.completed", ": completed, payment session cs_local_"):
        assert seen in done.stdout, done.stdout
