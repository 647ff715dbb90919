"""Fares and trips, kept in this process's memory."""
import threading
import time
from dataclasses import replace


class FareNotFound(Exception):
    pass


class FareNotYours(Exception):
    pass


class FareUnavailable(Exception):
    """The fare expired or was already used for a trip."""


class TripNotFound(Exception):
    pass


class TripTaken(Exception):
    """The trip already has a driver."""


class TripStore:
    def __init__(self, clock=time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._fares = {}
        self._used_fares = set()
        self._trips = {}
        self._declined = {}  # trip id -> ids of drivers who declined it, in order

    def save_fares(self, fares):
        with self._lock:
            self._forget_expired()
            for fare in fares:
                self._fares[fare.id] = fare

    def take_fare(self, fare_id, user_id):
        """The fare, now reserved for one trip; give_back_fare undoes it."""
        with self._lock:
            fare = self._fares.get(fare_id)
            if fare is None:
                raise FareNotFound(f"no fare {fare_id!r}")
            if fare.user_id != user_id:
                raise FareNotYours(f"fare {fare_id!r} belongs to another rider")
            if fare_id in self._used_fares:
                raise FareUnavailable(f"fare {fare_id!r} was already used for a trip")
            if fare.expires_at <= self._clock():
                raise FareUnavailable(f"fare {fare_id!r} expired; preview the trip again")
            self._used_fares.add(fare_id)
            return fare

    def give_back_fare(self, fare_id):
        with self._lock:
            self._used_fares.discard(fare_id)

    def save_trip(self, trip):
        with self._lock:
            self._trips[trip.id] = trip

    def forget_trip(self, trip_id):
        with self._lock:
            self._trips.pop(trip_id, None)
            self._declined.pop(trip_id, None)

    def trip(self, trip_id):
        with self._lock:
            return self._trips.get(trip_id)

    def assign_driver(self, trip_id, driver):
        """The trip, now accepted by driver (TripDriver JSON); TripTaken when
        it already has one. unassign_driver undoes it."""
        with self._lock:
            trip = self._pending_trip(trip_id)
            self._trips[trip_id] = replace(trip, status="accepted", driver=driver)
            return self._trips[trip_id]

    def unassign_driver(self, trip_id):
        with self._lock:
            trip = self._trips[trip_id]
            self._trips[trip_id] = replace(trip, status="pending", driver=None)

    def decline(self, trip_id, driver_id):
        """(trip, ids of every driver who declined it so far); TripTaken when
        the trip already has a driver. Declining twice counts once."""
        with self._lock:
            trip = self._pending_trip(trip_id)
            declined = self._declined.setdefault(trip_id, [])
            if driver_id not in declined:
                declined.append(driver_id)
            return trip, tuple(declined)

    def _pending_trip(self, trip_id):
        trip = self._trips.get(trip_id)
        if trip is None:
            raise TripNotFound(f"no trip {trip_id!r}")
        if trip.driver is not None:
            raise TripTaken(f"trip {trip_id} already has driver {trip.driver['id']}")
        return trip

    def _forget_expired(self):
        # Expired, unused fares can never be taken again; used ones stay so
        # that a second start of the same fare is told it was used.
        now = self._clock()
        for fare_id in [f for f, fare in self._fares.items() if fare.expires_at <= now and f not in self._used_fares]:
            del self._fares[fare_id]
