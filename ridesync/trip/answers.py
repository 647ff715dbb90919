"""TripService's consumer of driver_trip_response: a driver's accept or
decline (owner: the driver, data {"tripID", "riderID", "driver": Driver})
turned into a call of TripService."""
import logging

from ridesync import contract
from ridesync.contract import MalformedMessage, field
from ridesync.trip.store import TripNotFound

log = logging.getLogger(__name__)


def trip_driver(driver):
    """The TripDriver JSON of a Driver JSON: what the rider sees of the driver."""
    return {
        "id": driver["id"],
        **{name: driver[name] for name in ("name", "profilePicture", "carPlate") if isinstance(driver.get(name), str)},
    }


class DriverAnswers:
    def __init__(self, trips):
        self._trips = trips

    def handle(self, routing_key, owner_id, data):
        trip_id = field(data, "tripID")
        driver = field(data, "driver", dict)
        if field(data, "driver.id") != owner_id:
            raise MalformedMessage(f"data.driver.id is not the driver {owner_id} who sent it")
        try:
            if routing_key == contract.DRIVER_TRIP_ACCEPT:
                self._trips.accept(trip_id, trip_driver(driver))
            else:
                self._trips.decline(trip_id, owner_id)
        except TripNotFound:
            log.warning("driver %s answered %s about unknown trip %s: dropped", owner_id, routing_key, trip_id)
