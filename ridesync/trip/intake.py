"""TripService's consumer of driver_trip_response, its one intake of
messages, in the order they happened: drivers' answers (owner: the driver,
data messages.DriverAnswer), the offers dispatch made
(driver.cmd.trip_request, owner: the driver asked, data: Trip), dispatch
running out of drivers, and payment sessions created. Each becomes a call of
TripService."""
import logging

import msgspec

from ridesync import contract, messages
from ridesync.contract import MalformedMessage
from ridesync.trip.store import TripNotFound

log = logging.getLogger(__name__)


def trip_driver(driver):
    """The messages.TripDriver of a Driver (a messages.Driver, or its JSON): what the rider sees of the driver."""
    return msgspec.convert(driver, messages.TripDriver, from_attributes=True)


class Intake:
    def __init__(self, trips):
        self._trips = trips
        self._handlers = {
            contract.DRIVER_TRIP_ACCEPT: self._answer,
            contract.DRIVER_TRIP_DECLINE: self._answer,
            contract.DRIVER_TRIP_REQUEST: lambda _key, owner_id, data: trips.record_offer(
                messages.decode(data, messages.Trip, "data").id, owner_id),
            contract.DISPATCH_NO_DRIVERS_LEFT: lambda _key, _owner, data: trips.no_drivers_left(
                messages.decode(data, messages.AboutTrip, "data").trip_id),
            contract.PAYMENT_SESSION_CREATED: self._payment,
        }

    def handle(self, routing_key, owner_id, data):
        handler = self._handlers.get(routing_key)
        if handler is None:
            raise MalformedMessage(f"{routing_key} is not for TripService")
        try:
            handler(routing_key, owner_id, data)
        except TripNotFound as exc:
            log.warning("%s of %s dropped: %s", routing_key, owner_id, exc)

    def _answer(self, routing_key, owner_id, data):
        answer = messages.decode(data, messages.DriverAnswer, "data")
        if answer.driver.id != owner_id:
            raise MalformedMessage(f"data.driver.id is not the driver {owner_id} who sent it")
        if routing_key == contract.DRIVER_TRIP_ACCEPT:
            self._trips.accept(answer.trip_id, trip_driver(answer.driver))
        else:
            self._trips.decline(answer.trip_id, owner_id)

    def _payment(self, _routing_key, _owner_id, data):
        session = messages.decode(data, messages.SessionCreated, "data")
        self._trips.attach_payment(session.trip_id, {
            key: value for key, value in messages.as_json(session).items() if key != messages.TRIP_ID})
