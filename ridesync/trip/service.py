"""What the trip service does, free of gRPC and AMQP: previews priced per
package, trips started from a fare, drivers' answers to trip requests, and
every later step of a trip (ride/lifecycle.py decides which are allowed)."""
import logging
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass

from ridesync import contract, messages
from ridesync.ride import lifecycle
from ridesync.ride.fares import PACKAGES, price_in_cents
from ridesync.ride.geo import great_circle_m
from ridesync.ride.model import InvalidArgument, RideFare, Trip
from ridesync.settings import process_settings
from ridesync.trip.awaited_offers import OfferAwaited
from ridesync.trip.store import TripNotFound

log = logging.getLogger(__name__)


class TripService:
    def __init__(self, planner, store, publisher, fare_ttl=900, clock=time.time, max_trip_km=300,
                 transaction=None, offers=None):
        """transaction(one_statement=False): what the store's changes and the
        publisher's outbox rows of one step commit in together
        (Database.transaction); None: each change commits by itself.
        offers: the AwaitedOffers of replicas sharing a database, for an
        answer that may overtake its offer; None: answers never wait."""
        self._max_trip_m = max_trip_km * 1000
        self._planner = planner
        self._store = store
        self._publisher = publisher
        self._fare_ttl = fare_ttl
        self._clock = clock
        self._transaction = transaction or _each_by_itself
        self._offers = offers

    def preview(self, user_id, pickup, destination, **call):
        """(route, fares): one fare per package, saved for this rider.
        Trips longer than max_trip_km are refused, as the crow flies before
        asking for a route, and by the road after."""
        self._check_length(great_circle_m(pickup, destination))
        route = self._planner.route(pickup, destination, **call)
        self._check_length(route.distance)
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

    def _check_length(self, distance_m):
        if distance_m > self._max_trip_m:
            raise InvalidArgument(f"the trip is {distance_m / 1000:.0f} km long; trips are limited to "
                                  f"{self._max_trip_m / 1000:.0f} km")

    def create_trip(self, fare_id, user_id):
        """The new pending trip, announced as trip.event.created. If the
        broker does not take the announcement, the fare is given back and no
        trip exists. With a database, the fare, the trip and the announcement
        commit together, so a trip whose process dies right after the commit
        is still announced (Outbox.publish_or_undo)."""
        with self._transaction(one_statement=True):  # on PostgreSQL the start and its outbox row are one statement
            trip = self._store.start_trip(str(uuid.uuid4()), fare_id, user_id)  # before the event, acted on at once
            self._publisher.publish_or_undo(contract.TRIP_CREATED, user_id, trip.to_json(), lambda: self._forget(trip))
        log.info("rider %s started trip %s (%s, %s cents)", user_id, trip.id, trip.fare.package_slug,
                 trip.fare.total_price_in_cents)
        return trip

    def _forget(self, trip):
        """A trip whose announcement the broker did not take: gone, its fare usable again."""
        self._store.forget_trip(trip.id)
        self._store.give_back_fare(trip.fare.id)
        log.warning("trip %s of rider %s forgotten: the broker did not take trip.event.created; fare %s usable again",
                    trip.id, trip.user_id, trip.fare.id)

    def record_offer(self, trip_id, driver_id):
        """Dispatch asked this driver to take the trip: from now on only they
        may answer it. An offer of a trip that is no longer pending is
        withdrawn at once."""
        try:
            step = self._step(trip_id, lambda t: lifecycle.offer(t, driver_id),
                              lambda t: self._store.offer(trip_id, driver_id))
            if step.changed and self._offers is not None:
                self._offers.ring(trip_id)
        except lifecycle.StepRefused as exc:
            reason = withdrawal_reason(self._store.trip(trip_id))
            self._publisher.publish(contract.DRIVER_TRIP_WITHDRAWN, driver_id,
                                    messages.as_json(messages.Withdrawal(trip_id=trip_id, reason=reason)))
            log.info("driver %s was offered trip %s too late (%s): withdrawn", driver_id, trip_id, exc)

    def accept(self, trip_id, driver):
        """The driver (a messages.TripDriver) the trip is offered to takes it: the
        rider and the driver are told, and a payment session is asked for.
        Anyone else is refused, and told why. With a database the accept and
        its messages commit together, and the outbox's relay sends them even
        if this process dies right after the commit. Without one, a broker
        that does not take both messages has the trip offered to them again
        and the error raised, so the accept can be retried."""
        with self._transaction():  # the answer and its messages commit together
            step = self._answer(trip_id, driver.id, lambda t: lifecycle.accept(t, driver.id),
                                lambda t: self._store.assign_driver(trip_id, messages.as_json(driver)))
            if step is None or not step.changed:
                return
            trip = step.trip
            try:
                # The payment command first: a retry repeats it harmlessly (one
                # session per trip), while a rider told of a driver stays told.
                self._publisher.publish(contract.PAYMENT_CREATE_SESSION, trip.user_id, messages.as_json(
                    messages.SessionOrder(trip_id=trip.id, user_id=trip.user_id,
                                          amount=round(trip.fare.total_price_in_cents), currency="USD")))
                self._announce(contract.TRIP_DRIVER_ASSIGNED, trip)
            except Exception:
                if self._transaction is _each_by_itself:  # in a transaction, its rollback undoes the accept
                    self._store.unassign_driver(trip_id, driver.id)
                raise
        log.info("driver %s accepted trip %s of rider %s", driver.id, trip.id, trip.user_id)

    def decline(self, trip_id, driver_id):
        """The driver the trip is offered to passes: the trip goes back to
        dispatch with every driver who declined it (with a database, the
        decline and that message commit together). Anyone else is refused,
        and the trip stays where it is."""
        with self._transaction():  # the answer and its message commit together
            step = self._answer(trip_id, driver_id, lambda t: lifecycle.decline(t, driver_id),
                                lambda t: self._store.decline(trip_id, driver_id))
            if step is None or not step.changed:
                return
            trip = step.trip
            self._publisher.publish(contract.TRIP_DRIVER_NOT_INTERESTED, trip.user_id, {
                "trip": trip.to_json(),
                "declinedDriverIDs": list(trip.declined),
            })
        log.info("driver %s declined trip %s of rider %s (%d declined it)",
                 driver_id, trip.id, trip.user_id, len(trip.declined))

    def driver_step(self, trip_id, driver_id, step_name):
        """arrived, started or completed, by the trip's driver: the trip as
        it is now; StepRefused or NotYours when the step is not theirs now."""
        with self._transaction():  # the step and its events commit together
            step = self._step(trip_id, lambda t: lifecycle.driver_step(t, driver_id, step_name),
                              lambda t: self._store.advance(trip_id, t.status, lifecycle.DRIVER_STEPS[step_name][1]))
            if step.changed:
                self._announce(STEP_EVENTS[step_name], step.trip)
                log.info("driver %s: trip %s of rider %s %s", driver_id, trip_id, step.trip.user_id, step_name)
            return step.trip

    def cancel(self, trip_id, by, user_id, reason=""):
        """The trip cancelled by its "rider" or its "driver": both told, an
        offer standing for it withdrawn, its payment session voided, its
        fare usable again. The trip as it is now."""
        if len(reason) > lifecycle.MAX_REASON:
            raise InvalidArgument(f"reason must be at most {lifecycle.MAX_REASON} characters")
        with self._transaction():  # the cancel and its events commit together
            step = self._step(trip_id, lambda t: lifecycle.cancel(t, by, user_id),
                              lambda t: self._store.cancel(trip_id, t.status, by, reason))
            if not step.changed:
                return step.trip
            trip, before = step.trip, step.before
            if before.offered_to:
                self._publisher.publish(contract.DRIVER_TRIP_WITHDRAWN, before.offered_to,
                                        messages.as_json(messages.Withdrawal(trip_id=trip.id, reason="cancelled")))
            if before.driver_id:  # a payment session was asked for at the accept
                self._publisher.publish(contract.PAYMENT_VOID_SESSION, trip.user_id,
                                        messages.as_json(messages.SessionVoid(trip_id=trip.id, user_id=trip.user_id)))
            self._announce(contract.TRIP_CANCELLED, trip)
            log.info("%s %s cancelled trip %s (was %s): %s", by, user_id, trip.id, before.status, reason or "no reason given")
            return trip

    def no_drivers_left(self, trip_id):
        """Dispatch has no one left to ask: the trip ends, the rider is told,
        and the fare is usable again. A trip no longer pending stays as it is."""
        try:
            step = self._step(trip_id, lifecycle.no_drivers_found, lambda t: self._store.end_unserved(trip_id))
        except lifecycle.StepRefused as exc:
            log.info("dispatch found no driver for trip %s, which needs none now: %s", trip_id, exc)
            return
        if step.changed:
            self._publisher.notify(contract.TRIP_NO_DRIVERS_FOUND, step.trip.user_id, step.trip.to_json())
            log.info("no driver for trip %s of rider %s: ended, fare %s usable again",
                     trip_id, step.trip.user_id, step.trip.fare.id)

    def attach_payment(self, trip_id, payment):
        """The trip's payment session ({"sessionID", "amount", "currency"}), kept in its record."""
        if self._trip(trip_id) and self._store.attach_payment(trip_id, payment) is not None:
            log.info("trip %s has payment session %s", trip_id, payment["sessionID"])

    def trip_for(self, trip_id, user_id):
        """The trip, read by its rider or its driver; NotYours for anyone else."""
        trip = self._trip(trip_id)
        if not lifecycle.may_read(trip, user_id):
            raise lifecycle.NotYours(f"trip {trip_id} is not {user_id}'s")
        return trip

    def current_trip(self, user_id):
        """The trip this user rides, drives or is asked to take now, or None."""
        trip = self._store.current_trip(user_id)
        return trip if trip is not None and lifecycle.is_current_for(trip, user_id) else None

    def _answer(self, trip_id, driver_id, decide, apply):
        """A driver's accept or decline, in the caller's transaction: the
        Step, or None when it was refused and the driver told why (in that
        transaction too). An answer that may have overtaken its offer (another
        replica is still recording it) raises OfferAwaited, which rolls the
        transaction back, to be handled again once the offer is recorded."""
        try:
            return self._step(trip_id, decide, apply)
        except lifecycle.NotYours as exc:
            if self._offer_may_come(trip_id, driver_id):
                raise OfferAwaited(trip_id) from exc
            refused = exc
        except lifecycle.StepRefused as exc:
            refused = exc
        self._publisher.notify(contract.DRIVER_ANSWER_REFUSED, driver_id, messages.as_json(
            messages.AnswerRefused(trip_id=trip_id, code=refused.code, message=str(refused))))
        log.warning("driver %s answered trip %s: refused (%s)", driver_id, trip_id, refused)
        return None

    def _offer_may_come(self, trip_id, driver_id):
        """Whether the trip is between offers and the answer has not yet waited for one."""
        if self._offers is None or not self._offers.may_wait():
            return False
        self._offers.expect(trip_id)
        return lifecycle.between_offers(self._trip(trip_id), driver_id)

    def _step(self, trip_id, decide, apply):
        """decide(trip) says whether the step changes the trip; apply(trip)
        makes the change if the trip is still as it was read. Raises
        TripNotFound, StepRefused, NotYours."""
        for _ in range(process_settings().step_attempts):
            before = self._trip(trip_id)
            if decide(before) is None:
                return Step(before, before, changed=False)
            after = apply(before)
            if after is not None:
                return Step(before, after, changed=True)
        raise lifecycle.StepRefused(f"trip {trip_id} kept changing; try again")

    def _trip(self, trip_id):
        trip = self._store.trip(trip_id)
        if trip is None:
            raise TripNotFound(f"no trip {trip_id!r}")
        return trip

    def _announce(self, event, trip):
        """The event to the trip's rider and, once it has one, its driver."""
        for role, user_id in (("rider", trip.user_id), ("driver", trip.driver_id)):
            if user_id:
                self._publisher.notify(event, user_id, trip.to_json(), headers=contract.for_role(role))


def _each_by_itself(**_options):
    return nullcontext()


def withdrawal_reason(trip):
    """Why an offer of a trip that is not pending is withdrawn."""
    if trip.driver_id:
        return "taken"
    return "cancelled" if trip.status == lifecycle.CANCELLED else "expired"


@dataclass(frozen=True)
class Step:
    before: Trip
    trip: Trip  # as it is after the step
    changed: bool


STEP_EVENTS = {
    "arrived": contract.TRIP_DRIVER_ARRIVED,
    "started": contract.TRIP_STARTED,
    "completed": contract.TRIP_COMPLETED,
}
