"""Dispatch: which driver is asked to take a trip.

A trip comes from `find_available_drivers` as trip.event.created (data:
Trip) or trip.event.driver_not_interested (data: {"trip": Trip,
"declinedDriverIDs": [...]}). Everything dispatch needs travels in the
message, so any replica of DriverService can take any of them."""
import logging
import time
from dataclasses import dataclass

import msgspec

from ridesync import contract, messages
from ridesync.driver.pool import Driver
from ridesync.rabbit import PublishFailed
from ridesync.ride.model import Coordinate
from ridesync.ride.geo import great_circle_m

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TripToDispatch:
    trip: dict  # Trip JSON, passed on to the driver as it came
    id: str
    rider_id: str
    package_slug: str
    pickup: Coordinate
    declined: tuple  # ids of drivers who declined this trip, in order


def trip_to_dispatch(routing_key, data):
    """The trip a find_available_drivers message asks a driver for;
    messages.Refused naming the field when it is not a Trip."""
    if routing_key == contract.TRIP_DRIVER_NOT_INTERESTED:
        message = messages.decode(data, messages.NotInterested, "data")
        data, trip, declined = data["trip"], message.trip, message.declined_driver_ids
    else:
        trip, declined = messages.decode(data, messages.Trip, "data"), []
    pickup = trip.route.pickup
    return TripToDispatch(
        trip=data,
        id=trip.id,
        rider_id=trip.user_id,
        package_slug=trip.selected_fare.package_slug,
        pickup=Coordinate(pickup.latitude, pickup.longitude),
        declined=tuple(declined),
    )


class Dispatcher:
    """Handles find_available_drivers: asks the nearest free driver who
    could take the trip, or tells TripService no one is left. An offer
    stands until the driver declines it, or it is withdrawn; one that the
    driver leaves unanswered for offer_timeout seconds, or walks away from
    (unregisters), is declined on their behalf."""

    def __init__(self, pool, publisher, offer_timeout=30.0, clock=time.time):  # wall time: replicas share offers
        self._pool = pool
        self._publisher = publisher
        self._offer_timeout = offer_timeout
        self._clock = clock

    def handle(self, routing_key, _owner_id, data):
        trip = trip_to_dispatch(routing_key, data)
        for declined in trip.declined:
            self._pool.let_go(declined, trip.id)
        for driver in self._pool.candidates(trip):
            # Claimed before the request goes out: TripService takes the
            # request as the offer, so no two dispatchers may send one driver two.
            if not self._pool.ask(driver.id, Offer(trip, self._clock() + self._offer_timeout, driver)):
                log.info("driver %s was taken or went offline meanwhile: not asked to take trip %s", driver.id, trip.id)
                continue
            try:
                self._publisher.publish(contract.DRIVER_TRIP_REQUEST, driver.id, trip.trip)
            except PublishFailed:
                self._pool.let_go(driver.id, trip.id)
                raise
            log.info(
                "asked driver %s, %.0f m from the pickup, to take %s trip %s of rider %s (%d declined it)",
                driver.id, great_circle_m(driver.location, trip.pickup), trip.package_slug,
                trip.id, trip.rider_id, len(trip.declined),
            )
            return
        log.info("no %s driver left for trip %s of rider %s (%d declined it)",
                 trip.package_slug, trip.id, trip.rider_id, len(trip.declined))
        self._publisher.publish(contract.DISPATCH_NO_DRIVERS_LEFT, trip.rider_id,
                                messages.as_json(messages.AboutTrip(trip_id=trip.id)))

    def handle_availability(self, routing_key, trip):
        """A trip event on driver_availability (a messages.Trip): a driver
        is on a trip from its driver_assigned until its completed or
        cancelled (each comes once for the rider and once for the driver:
        the second changes nothing). The steps between (arrived, started)
        change nothing here."""
        if routing_key == contract.TRIP_DRIVER_ASSIGNED:
            for other in self._pool.assign(trip.assigned_driver_id(), trip.id):
                self._withdraw(other, trip.id, "taken")
        elif routing_key in (contract.TRIP_COMPLETED, contract.TRIP_CANCELLED):
            self._pool.release(trip.driver_id, trip.id)

    def withdrawn(self, driver_id, withdrawal):
        """A withdrawn offer (a messages.Withdrawal) frees the driver it was made to."""
        self._pool.let_go(driver_id, withdrawal.trip_id)

    def expire_offers(self):
        for driver_id, offer in self._pool.expired_offers(self._clock()):
            if not self.pass_on(driver_id, offer, f"no answer within {self._offer_timeout:.0f}s"):
                self._pool.ask(driver_id, offer)  # still expired: the next tick tries again
                continue
            self._withdraw(driver_id, offer.trip.id, "expired")

    def _withdraw(self, driver_id, trip_id, reason):
        self._publisher.publish(contract.DRIVER_TRIP_WITHDRAWN, driver_id,
                                messages.as_json(messages.Withdrawal(trip_id=trip_id, reason=reason)))
        log.info("trip %s withdrawn from driver %s: %s", trip_id, driver_id, reason)

    def pass_on(self, driver_id, offer, why):
        """Declines the trip on the driver's behalf, so that TripService,
        which keeps the trip's declines, sends it to the next driver; False
        when the broker did not take that."""
        trip = offer.trip
        try:
            self._publisher.publish(contract.DRIVER_TRIP_DECLINE, driver_id, messages.as_json(messages.DriverAnswer(
                trip_id=trip.id, rider_id=trip.rider_id,
                driver=msgspec.convert(offer.driver, messages.Driver, from_attributes=True))))
        except PublishFailed as exc:
            log.error("trip %s of rider %s not passed on from driver %s (%s): %s",
                      trip.id, trip.rider_id, driver_id, why, exc)
            return False
        log.info("driver %s left trip %s of rider %s unanswered (%s): asking the next driver",
                 driver_id, trip.id, trip.rider_id, why)
        return True


@dataclass(frozen=True)
class Offer:
    trip: TripToDispatch
    expires_at: float  # unix time, on the dispatchers' clock
    driver: Driver  # as the pool had them when asked: a decline on their behalf names them
