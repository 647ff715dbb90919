"""Fares and trips in the SQL database (ridesync/database.py): TripStore's
methods (trip/store.py says what each promises), for any number of
TripService replicas.

Every change of a trip is a compare-and-set: the trip is read with its
version, checked and changed in Python, and written back only where the
version is still the one read (`UPDATE ... WHERE id = :id AND version =
:read`). A replica that loses the race reads the trip again and checks
anew, so two replicas cannot both give a trip to a driver."""
import dataclasses
import threading
import time
from collections import OrderedDict

import orjson
from sqlalchemy import bindparam, delete, insert, literal_column, select, true, update
from sqlalchemy.dialects import postgresql, sqlite

from ridesync.database import Prebuilt
from ridesync.ride.lifecycle import ACCEPTED, CANCELLED, NO_DRIVERS_FOUND, PENDING
from ridesync.ride.model import Coordinate, RideFare, Route, Trip
from ridesync.settings import process_settings
from ridesync.tables import current_trips, fares, trips
from ridesync.trip.store import ANYONE, refusal, start_by_steps

# CreateTrip's statements, built once (database.Prebuilt); their constants
# are SQL, not parameters for the driver to convert at every call.
FIRST_VERSION = literal_column("1")
FARE_TAKEN = update(fares).where(fares.c.id == bindparam("fare"), fares.c.user_id == bindparam("rider"),
                                 fares.c.used.is_(False), fares.c.expires_at > bindparam("now")).values(used=true())
TAKE_FARE = Prebuilt(FARE_TAKEN.returning(fares.c.data))
SAVE_TRIP = Prebuilt(insert(trips).values(version=FIRST_VERSION, **{
    name: bindparam(name) for name in ("id", "user_id", "status", "driver_id", "data")}))


NOT_NULL_VIOLATION = "23502"


def _start_trip():
    """On PostgreSQL, take_fare and save_trip in one statement: the fare
    taken gives the trip its rider; a fare it cannot take leaves the
    trip's user_id NULL, which refuses the whole transaction."""
    taken = FARE_TAKEN.returning(fares.c.user_id).cte("taken")
    trip = (insert(trips).values(version=FIRST_VERSION, user_id=select(taken.c.user_id).scalar_subquery(),
                                 **{name: bindparam(name) for name in ("id", "status", "driver_id", "data")})
            .returning(trips.c.id, trips.c.user_id).cte("trip"))
    current = postgresql.insert(current_trips).from_select(["user_id", "trip_id"], select(trip.c.user_id, trip.c.id))
    return Prebuilt(current.on_conflict_do_update(index_elements=[current_trips.c.user_id],
                                                  set_={"trip_id": current.excluded.trip_id}))


START_TRIP = _start_trip()


def _make_current(upsert):
    """INSERT ... ON CONFLICT in one statement: the user's current trip, made or replaced."""
    statement = upsert(current_trips).values(user_id=bindparam("user"), trip_id=bindparam("trip"))
    return Prebuilt(statement.on_conflict_do_update(index_elements=[current_trips.c.user_id],
                                                    set_={"trip_id": statement.excluded.trip_id}))


MAKE_CURRENT = {"postgresql": _make_current(postgresql.insert), "sqlite": _make_current(sqlite.insert)}


class SqlTripStore:
    def __init__(self, database, clock=time.time):
        self._db = database
        self._clock = clock
        self._pruned_at = float("-inf")
        self._priced, self._priced_lock = OrderedDict(), threading.Lock()  # id -> fare, oldest first

    def save_fares(self, new_fares):
        """A preview's fares: one statement; not durable (a fare lost in a
        database crash is previewed again)."""
        self._forget_expired()
        with self._db.at_once() as conn:
            conn.execute(insert(fares), [
                {"id": f.id, "user_id": f.user_id, "expires_at": f.expires_at, "used": False, "data": _json(f)}
                for f in new_fares
            ])
        with self._priced_lock:
            self._priced.update((fare.id, fare) for fare in new_fares)
            while len(self._priced) > process_settings().fares_kept:
                self._priced.popitem(last=False)

    def _forget_expired(self):
        # Expired, unused fares can never be taken again; used ones stay so
        # that a second start of the same fare is told it was used. At most
        # once in FARE_PRUNE_EVERY seconds: a preview need not pay for it.
        now = self._clock()
        if now - self._pruned_at >= process_settings().fare_prune_every:
            self._pruned_at = now
            with self._db.at_once() as conn:
                conn.execute(delete(fares).where(fares.c.expires_at <= now, fares.c.used.is_(False)))

    def take_fare(self, fare_id, user_id):
        # One statement when the fare can be taken; a second read says why
        # when it cannot. In CreateTrip's transaction, with the trip it pays for.
        with self._db.transaction() as conn:
            taken = TAKE_FARE.run(conn, fare=fare_id, rider=user_id, now=self._clock()).fetchone()
            if taken is not None:
                return fare_of(orjson.loads(taken[0]))
            raise self._why_not_taken(conn, fare_id, user_id)

    @staticmethod
    def _why_not_taken(conn, fare_id, user_id):
        """The error of a fare the store refused to take: not known, another
        rider's, used, or else expired."""
        row = conn.execute(select(fares.c.user_id, fares.c.used).where(fares.c.id == fare_id)).first()
        return refusal(fare_id, user_id, owner=row and row.user_id, used=row is not None and row.used, expired=True)

    def start_trip(self, trip_id, fare_id, user_id):
        """take_fare and save_trip. On PostgreSQL one statement, the fare
        known before it (priced by this process, read otherwise): in a
        transaction sent as one statement it goes at the end, and a refusal
        is explained after the transaction with take_fare's errors."""
        if not self._db.is_postgresql:
            with self._db.transaction():
                return start_by_steps(self, trip_id, fare_id, user_id)
        trip = Trip(id=trip_id, fare=self._fare(fare_id, user_id), user_id=user_id)
        with self._db.transaction() as conn:
            self._db.on_refusal(lambda error: self._explain_refusal(error, fare_id, user_id))
            START_TRIP.run(conn, fare=fare_id, rider=user_id, now=self._clock(), id=trip_id, status=trip.status,
                           driver_id=None, data=_json(trip))
        return trip

    def _fare(self, fare_id, user_id):
        with self._priced_lock:
            fare = self._priced.pop(fare_id, None)
        if fare is not None:
            return fare
        with self._db.at_once() as conn:
            row = conn.execute(select(fares.c.data).where(fares.c.id == fare_id)).first()
        if row is None:
            raise refusal(fare_id, user_id, owner=None, used=False, expired=False)
        return fare_of(orjson.loads(row.data))

    def _explain_refusal(self, error, fare_id, user_id):
        if getattr(error.orig, "sqlstate", None) == NOT_NULL_VIOLATION and error.orig.diag.table_name == trips.name:
            with self._db.at_once() as conn:
                raise self._why_not_taken(conn, fare_id, user_id) from error

    def give_back_fare(self, fare_id):
        with self._db.transaction() as conn:
            conn.execute(update(fares).where(fares.c.id == fare_id).values(used=False))

    def save_trip(self, trip):
        with self._db.transaction() as conn:
            SAVE_TRIP.run(conn, id=trip.id, **_trip_columns(trip))
            self._make_current(conn, trip.user_id, trip.id)

    def forget_trip(self, trip_id):
        with self._db.transaction() as conn:
            conn.execute(delete(trips).where(trips.c.id == trip_id))
            conn.execute(delete(current_trips).where(current_trips.c.trip_id == trip_id))

    def trip(self, trip_id):
        with self._db.at_once() as conn:
            row = conn.execute(select(trips.c.data).where(trips.c.id == trip_id)).first()
            return None if row is None else trip_of(orjson.loads(row.data))

    def current_trip(self, user_id):
        with self._db.at_once() as conn:
            row = conn.execute(select(trips.c.data).join(current_trips, current_trips.c.trip_id == trips.c.id)
                               .where(current_trips.c.user_id == user_id)).first()
            return None if row is None else trip_of(orjson.loads(row.data))

    def offer(self, trip_id, driver_id):
        with self._db.transaction() as conn:
            trip = self._change(trip_id, PENDING, to=lambda t: dict(offered_to=driver_id))
            if trip is not None:
                self._make_current(conn, driver_id, trip_id)
            return trip

    def assign_driver(self, trip_id, driver):
        with self._db.transaction() as conn:
            trip = self._change(trip_id, PENDING, offered_to=driver["id"],
                                to=lambda t: dict(status=ACCEPTED, driver=driver, offered_to=None))
            if trip is not None:
                self._make_current(conn, driver["id"], trip_id)
            return trip

    def unassign_driver(self, trip_id, driver_id):
        return self._change(trip_id, ACCEPTED, driver_id=driver_id,
                            to=lambda t: dict(status=PENDING, driver=None, offered_to=driver_id))

    def decline(self, trip_id, driver_id):
        return self._change(trip_id, PENDING, offered_to=driver_id,
                            to=lambda t: dict(declined=t.declined + (driver_id,), offered_to=None))

    def advance(self, trip_id, from_status, to_status):
        return self._change(trip_id, from_status, to=lambda t: dict(status=to_status))

    def cancel(self, trip_id, from_status, by, reason):
        return self._end(trip_id, from_status, dict(status=CANCELLED, cancelled_by=by, reason=reason))

    def end_unserved(self, trip_id):
        return self._end(trip_id, PENDING, dict(status=NO_DRIVERS_FOUND))

    def attach_payment(self, trip_id, payment):
        return self._change(trip_id, ANYONE, payment=None, to=lambda t: dict(payment=payment))

    def _end(self, trip_id, from_status, changes):
        with self._db.transaction():
            trip = self._change(trip_id, from_status, to=lambda t: dict(changes, offered_to=None))
            if trip is not None:
                self.give_back_fare(trip.fare.id)
            return trip

    def _change(self, trip_id, status, *, to, **expected):
        """The trip with to(trip)'s changes, if it is in status (ANYONE: any)
        and its fields are as expected (offered_to=ANYONE matches any); else None."""
        with self._db.transaction() as conn:
            while True:
                row = conn.execute(select(trips.c.data, trips.c.version).where(trips.c.id == trip_id)).first()
                trip = None if row is None else trip_of(orjson.loads(row.data))
                if trip is None or status not in (ANYONE, trip.status) or not _as_expected(trip, expected):
                    return None
                changed = dataclasses.replace(trip, **to(trip))
                if conn.execute(update(trips).where(trips.c.id == trip_id, trips.c.version == row.version)
                                .values(version=row.version + 1, **_trip_columns(changed))).rowcount == 1:
                    return changed

    @staticmethod
    def _make_current(conn, user_id, trip_id):
        MAKE_CURRENT[conn.dialect.name].run(conn, user=user_id, trip=trip_id)


def _as_expected(trip, expected):
    return all(value is ANYONE or getattr(trip, name) == value for name, value in expected.items())


def _trip_columns(trip):
    return {"user_id": trip.user_id, "status": trip.status, "driver_id": trip.driver_id, "data": _json(trip)}


def _json(record):
    """A fare's or a trip's dataclass as JSON text, as dataclasses.asdict
    gave it (orjson: a ninth of json.dumps(asdict()) for a trip on a route
    of two points, a thirtieth on 300, measured by hand)."""
    return orjson.dumps(record).decode()


def fare_of(data):
    route = data["route"]
    return RideFare(**{**data, "route": Route(**{**route, "path": tuple(Coordinate(**c) for c in route["path"])})})


def trip_of(data):
    return Trip(**{**data, "fare": fare_of(data["fare"]), "declined": tuple(data["declined"])})
