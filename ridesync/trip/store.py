"""Fares and trips, kept in this process's memory."""
import threading
import time
from dataclasses import replace

from ridesync.ride.lifecycle import ACCEPTED, CANCELLED, NO_DRIVERS_FOUND, PENDING
from ridesync.ride.model import Trip

ANYONE = object()  # _change's offered_to when the offer does not matter


class FareNotFound(Exception):
    pass


class FareNotYours(Exception):
    pass


class FareUnavailable(Exception):
    """The fare expired or was already used for a trip."""


class TripNotFound(Exception):
    pass


class TripStore:
    """Fares and trips. Every change of a trip is one method, shaped as a
    compare-and-set: it happens only if the trip is (still) as the method
    says, and returns the trip as it now is, or None when it was not (the
    caller reads the trip again and decides anew). ride/lifecycle.py decides
    which change a step makes; this only applies it, atomically."""

    def __init__(self, clock=time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._fares = {}  # id -> fare, oldest first: with one FARE_TTL, the order they expire in
        self._used_fares = set()
        self._trips = {}
        self._current = {}  # user id (rider, driver) -> id of the latest trip they ride, drive or were offered

    def save_fares(self, fares):
        with self._lock:
            self._forget_expired()
            for fare in fares:
                self._fares[fare.id] = fare

    def take_fare(self, fare_id, user_id):
        """The fare, now reserved for one trip; give_back_fare undoes it."""
        with self._lock:
            fare = self._fares.get(fare_id)
            refused = refusal(fare_id, user_id, owner=fare and fare.user_id, used=fare_id in self._used_fares,
                              expired=fare is not None and fare.expires_at <= self._clock())
            if refused is not None:
                raise refused
            self._used_fares.add(fare_id)
            return fare

    def give_back_fare(self, fare_id):
        with self._lock:
            self._used_fares.discard(fare_id)

    def start_trip(self, trip_id, fare_id, user_id):
        """A new pending trip on the fare, taken (take_fare's errors), now its rider's current one."""
        return start_by_steps(self, trip_id, fare_id, user_id)

    def save_trip(self, trip):
        """A new trip, now its rider's current one."""
        with self._lock:
            self._trips[trip.id] = trip
            self._current[trip.user_id] = trip.id

    def forget_trip(self, trip_id):
        with self._lock:
            trip = self._trips.pop(trip_id, None)
            if trip is not None and self._current.get(trip.user_id) == trip_id:
                del self._current[trip.user_id]

    def trip(self, trip_id):
        with self._lock:
            return self._trips.get(trip_id)

    def current_trip(self, user_id):
        """The latest trip this user rides, drives or was offered, or None."""
        with self._lock:
            return self._trips.get(self._current.get(user_id))

    def offer(self, trip_id, driver_id):
        """pending: now offered to this driver, and their latest trip."""
        with self._lock:
            trip = self._change(trip_id, PENDING, to=dict(offered_to=driver_id))
            if trip is not None:
                self._current[driver_id] = trip_id
            return trip

    def assign_driver(self, trip_id, driver):
        """pending and offered to this driver (TripDriver JSON): accepted by them."""
        with self._lock:
            trip = self._change(trip_id, PENDING, offered_to=driver["id"],
                                to=dict(status=ACCEPTED, driver=driver, offered_to=None))
            if trip is not None:
                self._current[driver["id"]] = trip_id
            return trip

    def unassign_driver(self, trip_id, driver_id):
        """accepted by this driver: pending and offered to them again (an
        accept undone when the broker did not take its announcement)."""
        with self._lock:
            trip = self._trips.get(trip_id)
            if trip is None or trip.driver_id != driver_id:
                return None
            return self._change(trip_id, ACCEPTED, to=dict(status=PENDING, driver=None, offered_to=driver_id))

    def decline(self, trip_id, driver_id):
        """pending and offered to this driver: declined by them, offered to no one."""
        with self._lock:
            trip = self._trips.get(trip_id)
            declined = () if trip is None else trip.declined + (driver_id,)
            return self._change(trip_id, PENDING, offered_to=driver_id,
                                to=dict(declined=declined, offered_to=None))

    def advance(self, trip_id, from_status, to_status):
        """from_status: now to_status (a driver's step on the way)."""
        with self._lock:
            return self._change(trip_id, from_status, to=dict(status=to_status))

    def cancel(self, trip_id, from_status, by, reason):
        """from_status: cancelled by "rider" or "driver", and its fare usable again."""
        with self._lock:
            return self._end(trip_id, from_status, dict(status=CANCELLED, cancelled_by=by, reason=reason))

    def end_unserved(self, trip_id):
        """pending: no_drivers_found, and its fare usable again."""
        with self._lock:
            return self._end(trip_id, PENDING, dict(status=NO_DRIVERS_FOUND))

    def attach_payment(self, trip_id, payment):
        """A trip without a payment session: now with this one
        ({"sessionID", "amount", "currency"})."""
        with self._lock:
            trip = self._trips.get(trip_id)
            if trip is None or trip.payment is not None:
                return None
            return self._change(trip_id, trip.status, to=dict(payment=payment))

    def _end(self, trip_id, from_status, changes):
        trip = self._change(trip_id, from_status, to=dict(changes, offered_to=None, declined=()))
        if trip is not None:
            self._used_fares.discard(trip.fare.id)
        return trip

    def _change(self, trip_id, status, offered_to=ANYONE, *, to):
        trip = self._trips.get(trip_id)
        if trip is None or trip.status != status or offered_to not in (ANYONE, trip.offered_to):
            return None
        self._trips[trip_id] = replace(trip, **to)
        return self._trips[trip_id]

    def _forget_expired(self):
        # Expired fares can never be taken again. Only the oldest are looked
        # at, so a preview costs the same however many fares are kept; the
        # ids of used ones stay, so that a second start is told it was used.
        now = self._clock()
        while self._fares:
            fare_id, fare = next(iter(self._fares.items()))
            if fare.expires_at > now:
                return
            del self._fares[fare_id]


def refusal(fare_id, user_id, owner, used, expired):
    """Why user_id cannot take the fare, as the error to raise (take_fare's,
    on every store), or None when they can. owner: the fare's rider, None
    when no such fare is known."""
    if owner is None and not used:
        return FareNotFound(f"no fare {fare_id!r}")
    if owner not in (None, user_id):
        return FareNotYours(f"fare {fare_id!r} belongs to another rider")
    if used:
        return FareUnavailable(f"fare {fare_id!r} was already used for a trip")
    if expired:
        return FareUnavailable(f"fare {fare_id!r} expired; preview the trip again")
    return None


def start_by_steps(store, trip_id, fare_id, user_id):
    """A new pending trip on the fare, taken as take_fare does (and refused
    with its errors), saved as save_trip does: the trip."""
    trip = Trip(id=trip_id, fare=store.take_fare(fare_id, user_id), user_id=user_id)
    store.save_trip(trip)
    return trip
