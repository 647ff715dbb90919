"""The pool of available drivers, in this process's memory. Every driver
gets a made-up profile and a starting place somewhere in San Francisco,
both derived from the driver's id, so registering again gives the same."""
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

from ridesync.ride.geo import great_circle_m
from ridesync.ride.geohash import encode as encode_geohash
from ridesync.ride.fares import PACKAGES
from ridesync.ride.model import Coordinate, InvalidArgument
from ridesync.settings import process_settings

FIRST_NAMES = ("Alex", "Sam", "Jordan", "Maria", "Wei", "Priya", "Diego", "Fatima", "Liam", "Aiko")
LAST_NAMES = ("Rivera", "Chen", "Okafor", "Novak", "Haddad", "Kim", "Silva", "Müller", "Patel", "Jones")
SAN_FRANCISCO = Coordinate(latitude=37.7749, longitude=-122.4194)
START_SPREAD = 0.03  # degrees either way, a few kilometres
PORTRAITS = 10  # randomuser.me has lego portraits 0..9


class DriverNotFound(Exception):
    pass


@dataclass(frozen=True)
class Driver:
    id: str
    name: str
    profile_picture: str
    car_plate: str
    package_slug: str
    location: Coordinate

    @property
    def geohash(self):
        return encode_geohash(self.location.latitude, self.location.longitude)

    def to_json(self):
        """The JSON shape of driver.proto's Driver."""
        return {
            "id": self.id,
            "name": self.name,
            "profilePicture": self.profile_picture,
            "carPlate": self.car_plate,
            "packageSlug": self.package_slug,
            "geohash": self.geohash,
            "location": {"latitude": self.location.latitude, "longitude": self.location.longitude},
        }


def new_driver(driver_id, package_slug):
    """A driver with a made-up profile; InvalidArgument for an empty id or an unknown package."""
    if not driver_id:
        raise InvalidArgument("driverID is required")
    if package_slug not in PACKAGES:
        raise InvalidArgument(f"packageSlug must be one of {', '.join(PACKAGES)}")
    pick = random.Random(driver_id)
    start = Coordinate(
        latitude=round(SAN_FRANCISCO.latitude + pick.uniform(-START_SPREAD, START_SPREAD), 6),
        longitude=round(SAN_FRANCISCO.longitude + pick.uniform(-START_SPREAD, START_SPREAD), 6),
    )
    letters = "".join(pick.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(3))
    return Driver(
        id=driver_id,
        name=f"{pick.choice(FIRST_NAMES)} {pick.choice(LAST_NAMES)}",
        profile_picture=f"https://randomuser.me/api/portraits/lego/{pick.randrange(PORTRAITS)}.jpg",
        car_plate=f"{pick.randrange(1, 10)}{letters}{pick.randrange(1000):03d}",
        package_slug=package_slug,
        location=start,
    )


def ranked_drivers(drivers, trip):
    """The drivers who could take the trip, nearest to its pickup first:
    of its package, and not among those who declined it."""
    candidates = [d for d in drivers if d.package_slug == trip.package_slug and d.id not in trip.declined]
    return sorted(candidates, key=lambda d: (great_circle_m(d.location, trip.pickup), d.id))


class DriverPool:
    """Registered drivers by id, what each was asked to do, and who is on a
    trip; safe to use from any thread. A registration belongs to the socket
    that made it (its session): only that session's unregister removes it.
    Being on a trip is the trip's, not the socket's: it lasts from the accept
    to the trip's end, however often the driver's app reconnects, and a
    registration names the trip the driver is on (TripService says), so that
    a DriverService restarted with this pool empty knows it again."""

    def __init__(self):
        self._lock = threading.Lock()
        self._drivers = {}
        self._sessions = {}  # driver id -> the session that registered them
        self._offers = {}  # driver id -> the Offer (dispatch.py) they have not answered yet
        self._on_trip = {}  # driver id -> the trip they accepted, until it ends
        self._ended = OrderedDict()  # the ids of the latest ENDED_REMEMBERED trips that ended, oldest first

    def register(self, driver_id, package_slug, session="", trip_id=None):
        """The driver, new or replacing an earlier registration (another
        socket's). An offer they have not answered still stands: a phone
        that reconnects gets the request again from its inbox. trip_id: the
        trip they are on, read before this call; they are busy with it,
        unless it ended meanwhile."""
        driver = new_driver(driver_id, package_slug)
        with self._lock:
            self._drivers[driver_id] = driver
            self._sessions[driver_id] = session
            if trip_id is not None and trip_id not in self._ended:
                self._on_trip[driver_id] = trip_id
        return driver

    def unregister(self, driver_id, session=""):
        """(the driver that was registered or None, the offer they left
        unanswered or None); (None, None) when the driver is registered by
        another session now, whose registration stays."""
        with self._lock:
            if driver_id not in self._drivers or self._sessions[driver_id] != session:
                return None, None
            del self._sessions[driver_id]
            return self._drivers.pop(driver_id), self._offers.pop(driver_id, None)

    def ask(self, driver_id, offer):
        """Claims the driver for the offer: False when they are no longer
        registered, on a trip, or asked to take another trip meanwhile."""
        with self._lock:
            if driver_id not in self._drivers or driver_id in self._on_trip:
                return False
            if self._offer_for(driver_id, offer.trip.id) != offer.trip.id:
                return False
            self._offers[driver_id] = offer
            return True

    def let_go(self, driver_id, trip_id):
        """The driver's offer of this trip is over (declined, withdrawn): they are free again."""
        with self._lock:
            if self._offer_for(driver_id) == trip_id:
                del self._offers[driver_id]

    def assign(self, driver_id, trip_id):
        """The driver took this trip: on it until it ends, and every other
        offer of it is void. The ids of the drivers whose offer was void."""
        with self._lock:
            voided = [d for d in self._offers if self._offer_for(d) == trip_id]
            for asked in voided:
                del self._offers[asked]
            self._on_trip[driver_id] = trip_id
            return [d for d in voided if d != driver_id]

    def release(self, driver_id, trip_id):
        """The trip ended: its driver (if any) is free again, and no offer of it stands."""
        with self._lock:
            for asked in [d for d in self._offers if self._offer_for(d) == trip_id]:
                del self._offers[asked]
            if driver_id is not None and self._on_trip.get(driver_id) == trip_id:
                del self._on_trip[driver_id]
            self._ended[trip_id] = None
            if len(self._ended) > process_settings().ended_remembered:
                self._ended.popitem(last=False)

    def expired_offers(self, now):
        """[(driver id, Offer)] of the offers unanswered by now, withdrawn."""
        with self._lock:
            expired = [(d, offer) for d, offer in self._offers.items() if offer.expires_at <= now]
            for driver_id, _offer in expired:
                del self._offers[driver_id]
            return expired

    def move(self, driver_id, location):
        """The driver now at location (a Coordinate); DriverNotFound if not registered."""
        with self._lock:
            driver = self._drivers.get(driver_id)
            if driver is None:
                raise DriverNotFound(f"driver {driver_id!r} is not registered")
            moved = replace(driver, location=location)
            self._drivers[driver_id] = moved
            return moved

    def on_trip(self, driver_id):
        """The id of the trip the driver is on, or None."""
        with self._lock:
            return self._on_trip.get(driver_id)

    def registered(self, driver_ids):
        """Those of driver_ids who are registered."""
        with self._lock:
            return {d for d in driver_ids if d in self._drivers}

    def drivers(self):
        """Every registered driver, as they are now."""
        with self._lock:
            return list(self._drivers.values())

    def candidates(self, trip):
        """The free drivers who could take the trip (a TripToDispatch), nearest first."""
        return ranked_drivers(self.free_drivers(trip.id), trip)

    def free_drivers(self, trip_id):
        """The registered drivers who may be asked to take this trip: not on
        a trip, and not considering another one."""
        with self._lock:
            return [d for d in self._drivers.values()
                    if d.id not in self._on_trip and self._offer_for(d.id, trip_id) == trip_id]

    def _offer_for(self, driver_id, default=None):
        offer = self._offers.get(driver_id)
        return default if offer is None else offer.trip.id
