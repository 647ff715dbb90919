"""Drivers' locations at the gateway: how many a driver may send, and the
last one their rider was sent, added to the Trip a phone reads (`trip.state`,
GET /trip/current, GET /trip/<id>), so that a rider who reconnects sees the
car where it is, not a replay of where it was."""
import logging
import time

import grpc

from ridesync import messages, metrics
from ridesync.gateway.limits import TokenBuckets
from ridesync.pb import driver_pb2
from ridesync.ride.tracking import TRACKED
from ridesync.settings import process_settings

log = logging.getLogger(__name__)


class LocationRate:
    """driver.cmd.location frames per driver and gateway worker (a driver
    has one socket): LOCATION_MAX_RATE a second, in bursts of as many; the
    rest are dropped and counted, never answered, so that a phone sending
    too fast gets no storm of errors back. Plain logic; the clock is passed in."""

    def __init__(self, rate, clock=time.monotonic):
        self._rate = rate
        self._buckets = TokenBuckets(rate, max(1, int(rate)), clock)
        self._dropping = set()
        self._remembered = process_settings().dropping_remembered

    def allowed(self, driver_id):
        if not self._buckets.take(driver_id):
            self._dropping.discard(driver_id)
            return True
        metrics.LOCATIONS_DROPPED.inc()
        if driver_id not in self._dropping:
            if len(self._dropping) >= self._remembered:
                self._dropping.clear()
            self._dropping.add(driver_id)
            log.warning("driver %s sends locations faster than %g a second: dropping the excess",
                        driver_id, self._rate)
        return False


def with_driver_location(trip, upstream):
    """The Trip (JSON) with `driverLocation`, the last trip.event.driver_location
    its rider was sent, while a driver is on the way; without it when none
    was sent yet, or DriverService does not answer (one line logged)."""
    if trip is None or trip.get("status") not in TRACKED:
        return trip
    try:
        answer = upstream.drivers.TripLocation(driver_pb2.TripLocationRequest(tripID=trip["id"]),
                                               timeout=process_settings().location_deadline)
    except grpc.RpcError as exc:
        log.warning("trip %s shown without its driver's location: DriverService %s %s",
                    trip["id"], exc.code().name, exc.details())
        return trip
    if not answer.HasField("location"):
        return trip
    return {**trip, "driverLocation": location_json(answer.location)}


def location_json(location):
    """A DriverLocation as the frame's data: heading null until the car has
    moved, `estimated` only when true."""
    data = messages.proto_json(location)
    data.setdefault("heading", None)
    if not data.get("estimated"):
        data.pop("estimated", None)
    return data
