"""What the trip service does, free of gRPC: previews priced per package,
and trips started from a fare."""
import logging
import time
import uuid

from ridesync import contract
from ridesync.trip.fares import PACKAGES, price_in_cents
from ridesync.trip.model import RideFare, Trip

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
