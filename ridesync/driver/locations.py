"""Drivers' locations to the riders of their trips (DESIGN.md, "Driver
locations"): DriverService takes every fix (UpdateLocation), knows who is on
which trip (the pool), and follows each trip's status and points from its
events on `driver_availability`. A fix is stored as the trip's last; a
pusher publishes trip.event.driver_location to the rider at most once per
trip per push interval, always the newest fix, with the ETA
(ride/tracking.py). The trips, fixes and claims live next to the pool: in
Redis with REDIS_URL (every replica shares them, so the throttle holds per
trip whichever replica takes a fix), else here (TripsUnderWay)."""
import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from ridesync import contract, messages
from ridesync.rabbit import PublishFailed
from ridesync.ride import tracking
from ridesync.ride.tracking import PushClaim, TripUnderWay
from ridesync.settings import process_settings

log = logging.getLogger(__name__)
PUSH_TICK = 0.1  # seconds between looks for pushes due, besides being woken by a fix


class Locations:
    def __init__(self, trips, planner, publisher, push_interval, eta_refresh, hold, clock=time.time):
        """trips: TripsUnderWay or RedisTripsUnderWay; planner: a
        trip.planner.RoutePlanner (OSRM with its breaker, else the estimate);
        hold: seconds a push's claim is held while OSRM is asked and the
        push published, longer than both can take, so that no later push
        of the trip overtakes it."""
        self._trips, self._planner, self._publisher = trips, planner, publisher
        self._interval, self._refresh, self._hold, self._clock = push_interval, eta_refresh, hold, clock
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._pool = ThreadPoolExecutor(process_settings().location_pushers, thread_name_prefix="location-push")
        self._thread = threading.Thread(target=self._run, name="location-pusher", daemon=True)

    def follow(self, trip):
        """A trip (a messages.Trip) as an event or TripService has it: its status and points."""
        if trip.status in tracking.TRACKED:
            under_way = TripUnderWay.of(trip)
            if self._trips.follow(under_way):
                log.info("trip %s of rider %s is %s: driver %s's locations go to the rider", under_way.id,
                         under_way.rider_id, under_way.status, under_way.driver_id)
        elif self._trips.end(trip.id):
            log.info("trip %s is %s: its driver's locations go to no one", trip.id, trip.status)

    def fix(self, trip_id, location):
        """The driver of trip_id is at location now: their trip's last fix, pushed soon."""
        now = self._clock()
        self._trips.record_fix(trip_id, tracking.next_fix(self._trips.last_fix(trip_id), location, now))
        self._wake.set()

    def last(self, trip_id):
        """The last driver_location frame sent for the trip (its rider saw
        nothing newer), or None."""
        return self._trips.pushed(trip_id)

    def push(self, trip_id):
        """The trip's newest fix to its rider, unless one was pushed less
        than the push interval ago (then it is due when that is over)."""
        now = self._clock()
        token, free_at = self._trips.claim(trip_id, now, self._hold)
        if token is None:
            self._trips.defer(trip_id, free_at)
            return
        try:
            self._push_claimed(trip_id, now)
        except PublishFailed as exc:
            log.warning("driver location of trip %s not pushed, trying again: %s", trip_id, exc)
        finally:
            self._trips.settle(trip_id, token, now + self._interval)
        fix = self._trips.last_fix(trip_id)
        if fix is not None and fix.at > self._trips.pushed_at(trip_id):  # came meanwhile, or the publish failed
            self._trips.defer(trip_id, now + self._interval)

    def _push_claimed(self, trip_id, now):
        trip, fix = self._trips.trip(trip_id), self._trips.last_fix(trip_id)
        if trip is None or fix is None or not trip.tracked or self._trips.pushed_at(trip_id) >= fix.at:
            return
        basis = self._basis(trip, fix, now)
        frame = tracking.location_frame(trip, fix, basis)
        self._publisher.publish(contract.TRIP_DRIVER_LOCATION, trip.rider_id, frame, contract.for_role("rider"))
        self._trips.record_push(trip_id, fix.at, frame)
        log.debug("driver %s's location sent to rider %s of trip %s", trip.driver_id, trip.rider_id, trip_id)

    def _basis(self, trip, fix, now):
        """The route the ETA is taken from: asked again (OSRM, or the
        estimate) at most once per refresh period, or for a new target."""
        if trip.target is None:
            return None
        name, target = trip.target
        basis = self._trips.basis(trip.id)
        if tracking.needs_route(basis, name, now, self._refresh):
            basis = tracking.basis_of(self._planner.route(fix.location, target), name, fix, now)
            self._trips.record_basis(trip.id, basis)
        return basis

    # The pusher: a thread looking for pushes due, pushing them on a pool.

    def start(self):
        self._thread.start()

    def stop(self, timeout):
        self._stopped.set()
        self._wake.set()
        self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)
        return "location-pusher: stopped"

    def _run(self):
        while not self._stopped.is_set():
            self._wake.wait(PUSH_TICK)
            self._wake.clear()
            try:
                for trip_id in self.due():
                    self._pool.submit(self._push_logged, trip_id)
            except Exception:  # Redis away: the next tick looks again
                log.exception("pushes due not read")

    def due(self):
        """The trips whose push is due now, taken off the list."""
        return self._trips.due(self._clock())

    def _push_logged(self, trip_id):
        try:
            self.push(trip_id)
        except Exception:
            log.exception("driver location of trip %s not pushed", trip_id)


class TripsUnderWay:
    """The trips, their fixes and push claims, in this process's memory
    (DriverService with its pool in memory: one replica). Safe from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._trips = {}  # trip id -> TripUnderWay
        self._fixes = {}  # trip id -> its last Fix
        self._bases = {}  # trip id -> EtaBasis
        self._pushed = {}  # trip id -> (the pushed fix's time, its frame)
        self._claims = {}  # trip id -> PushClaim
        self._due = {}  # trip id -> unix time its push is due
        self._ended = OrderedDict()

    def follow(self, trip):
        """True when the trip is new here, or further along than it was."""
        with self._lock:
            known = self._trips.get(trip.id)
            if trip.id in self._ended or (known and tracking.progress(known.status) >= tracking.progress(trip.status)):
                return False
            self._trips[trip.id] = trip
            return True

    def end(self, trip_id):
        """True when the trip was followed until now."""
        with self._lock:
            followed = trip_id in self._trips
            for kept in (self._trips, self._fixes, self._bases, self._pushed, self._claims, self._due):
                kept.pop(trip_id, None)
            self._ended[trip_id] = None
            if len(self._ended) > process_settings().ended_remembered:
                self._ended.popitem(last=False)
            return followed

    def trip(self, trip_id):
        return self._trips.get(trip_id)

    def last_fix(self, trip_id):
        return self._fixes.get(trip_id)

    def record_fix(self, trip_id, fix):
        """The followed trip's last fix, its push due at once."""
        with self._lock:
            if trip_id in self._trips:
                self._fixes[trip_id] = fix
                self._due_at(trip_id, fix.at)

    def basis(self, trip_id):
        return self._bases.get(trip_id)

    def record_basis(self, trip_id, basis):
        with self._lock:
            if trip_id in self._trips:
                self._bases[trip_id] = basis

    def pushed(self, trip_id):
        pushed = self._pushed.get(trip_id)
        return None if pushed is None else pushed[1]

    def pushed_at(self, trip_id):
        return self._pushed.get(trip_id, (float("-inf"),))[0]

    def record_push(self, trip_id, at, frame):
        with self._lock:
            if trip_id in self._trips:
                self._pushed[trip_id] = (at, frame)

    def claim(self, trip_id, now, hold):
        """(token, None) when the trip's push is this caller's, else (None, when it may be claimed)."""
        with self._lock:
            claim = self._claims.get(trip_id)
            if not tracking.claimable(claim, now):
                return None, claim.until
            token = uuid.uuid4().hex
            self._claims[trip_id] = PushClaim(token, now + hold)
            return token, None

    def settle(self, trip_id, token, until):
        with self._lock:
            if trip_id in self._claims:
                self._claims[trip_id] = tracking.settled(self._claims[trip_id], token, until)

    def defer(self, trip_id, at):
        with self._lock:
            self._due_at(trip_id, at)

    def _due_at(self, trip_id, at):
        self._due[trip_id] = min(at, self._due.get(trip_id, at))

    def due(self, now):
        with self._lock:
            due = [trip_id for trip_id, at in self._due.items() if at <= now]
            for trip_id in due:
                del self._due[trip_id]
            return due
