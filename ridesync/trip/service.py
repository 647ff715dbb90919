"""What the trip service does, free of gRPC and AMQP: previews priced per
package, trips started from a fare, and drivers' answers to trip requests."""
import logging
import time
import uuid

from ridesync import contract
from ridesync.ride.fares import PACKAGES, price_in_cents
from ridesync.ride.model import RideFare, Trip
from ridesync.trip.store import TripTaken

log = logging.getLogger(__name__)


class TripService:
    def __init__(self, planner, store, publisher, fare_ttl=900, clock=time.time):
        self._planner = planner
        self._store = store
        self._publisher = publisher
        self._fare_ttl = fare_ttl
        self._clock = clock

    def preview(self, user_id, pickup, destination, **call):
        """(route, fares): one fare per package, saved for this rider."""
        route = self._planner.route(pickup, destination, **call)
        expires_at = self._clock() + self._fare_ttl
        fares = [
            RideFare(
                id=str(uuid.uuid4()),
                user_id=user_id,
                package_slug=package,
                total_price_in_cents=price_in_cents(package, route.distance, route.duration),
                expires_at=expires_at,
                route=route,
            )
            for package in PACKAGES
        ]
        self._store.save_fares(fares)
        log.info(
            "rider %s previewed %.0f m / %.0f s (%s): fares %s",
            user_id, route.distance, route.duration, "estimated" if route.estimated else "OSRM",
            ", ".join(f"{f.package_slug}={f.total_price_in_cents}" for f in fares),
        )
        return route, fares

    def create_trip(self, fare_id, user_id):
        """The new pending trip, announced as trip.event.created. If the
        announcement fails, the fare is given back and no trip exists."""
        fare = self._store.take_fare(fare_id, user_id)
        trip = Trip(id=str(uuid.uuid4()), fare=fare, user_id=user_id)
        self._store.save_trip(trip)  # before the event, which others act on at once
        try:
            self._publisher.publish(contract.TRIP_CREATED, user_id, trip.to_json())
        except Exception:
            self._store.forget_trip(trip.id)
            self._store.give_back_fare(fare_id)
            raise
        log.info("rider %s started trip %s (%s, %s cents)", user_id, trip.id, fare.package_slug, fare.total_price_in_cents)
        return trip

    def accept(self, trip_id, driver):
        """The first driver (TripDriver JSON) to accept gets the trip: the
        rider is told and a payment session is asked for. Later accepts
        change nothing. If the broker does not take both messages, the trip
        is pending again and the error raised, so the accept can be retried."""
        try:
            trip = self._store.assign_driver(trip_id, driver)
        except TripTaken as exc:
            log.info("driver %s accepted too late: %s", driver["id"], exc)
            return
        try:
            # The payment command first: a retry repeats it harmlessly (one
            # session per trip), while a rider told of a driver stays told.
            self._publisher.publish(contract.PAYMENT_CREATE_SESSION, trip.user_id, {
                "tripID": trip.id,
                "userID": trip.user_id,
                "amount": round(trip.fare.total_price_in_cents),
                "currency": "USD",
            })
            self._publisher.notify(contract.TRIP_DRIVER_ASSIGNED, trip.user_id, trip.to_json())
        except Exception:
            self._store.unassign_driver(trip_id)
            raise
        log.info("driver %s accepted trip %s of rider %s", driver["id"], trip.id, trip.user_id)

    def decline(self, trip_id, driver_id):
        """Sends the trip back to dispatch with every driver who declined it,
        unless it already has a driver."""
        try:
            trip, declined = self._store.decline(trip_id, driver_id)
        except TripTaken as exc:
            log.info("driver %s declined a trip no longer pending: %s", driver_id, exc)
            return
        self._publisher.publish(contract.TRIP_DRIVER_NOT_INTERESTED, trip.user_id, {
            "trip": trip.to_json(),
            "declinedDriverIDs": list(declined),
        })
        log.info("driver %s declined trip %s of rider %s (%d declined it)", driver_id, trip.id, trip.user_id, len(declined))
