"""A driver's answer that overtook its offer (another TripService replica
is still recording it) waits for that offer outside any transaction: the
answer's transaction is rolled back (OfferAwaited), the wait ends when the
replica recording the offer rings (PostgreSQL NOTIFY, sent by its commit),
or after OFFER_WAIT, and then the answer is handled once more, this time
refused if the trip is still offered to no one.

On SQLite there is one replica, whose one consumer handles the offer before
the answer: no answer waits."""
import logging
import threading

import psycopg
from sqlalchemy import func, select

from ridesync.settings import process_settings

log = logging.getLogger(__name__)
CHANNEL = "trip_offered"  # NOTIFY payload: the trip's id
LISTEN_POLL = 1.0  # seconds between looks at stop() while no offer is recorded


class OfferAwaited(Exception):
    """An answer about a trip between offers, to be handled again once its offer is recorded."""

    def __init__(self, trip_id):
        super().__init__(f"trip {trip_id} is not yet offered")
        self.trip_id = trip_id


class AwaitedOffers:
    def __init__(self, database, wait=None):
        """wait: seconds an answer waits for its offer (OFFER_WAIT when None)."""
        self._db = database
        self._wait = process_settings().offer_wait if wait is None else wait
        self._rung = {}  # trip id -> Event, for the answers expecting its offer
        self._waiting = set()  # trip ids whose answers wait now
        self._lock = threading.Lock()
        self._local = threading.local()
        self._stopped = threading.Event()
        self.listens = 0  # LISTENs the listener made: one more after each time it lost PostgreSQL
        self._listener = threading.Thread(target=self._listen, name="offer-listener", daemon=True)

    def start(self):
        if self._db.is_postgresql:
            self._listener.start()
        return self

    def stop(self, timeout):
        self._stopped.set()
        if self._listener.is_alive():
            self._listener.join(timeout)
        return "offer wake-ups: " + ("still listening" if self._listener.is_alive() else "stopped")

    def handle_once(self, consumer, message_id, work):
        """Database.handle_once, with an answer that awaits its offer handled
        again after the wait, which no transaction spans."""
        try:
            return self._db.handle_once(consumer, message_id, work)
        except OfferAwaited as awaited:
            self._wait_for(awaited.trip_id)
            self._local.waited = True
            return self._db.handle_once(consumer, message_id, work)
        finally:
            self._local.waited = False
            self._forget()

    def _wait_for(self, trip_id):
        with self._lock:
            rung = self._rung[trip_id]
            self._waiting.add(trip_id)
        try:
            rung.wait(self._wait)
        finally:
            with self._lock:
                self._waiting.discard(trip_id)

    def may_wait(self):
        """Whether the answer in hand may still wait for its offer: replicas
        share the database, and it has not waited yet."""
        return self._db.is_postgresql and not getattr(self._local, "waited", False)

    def expect(self, trip_id):
        """From now on a ring for the trip is kept for the answer in hand:
        called before the trip is read a last time, so that no commit falls between."""
        with self._lock:
            self._rung.setdefault(trip_id, threading.Event())
        self._local.expected = trip_id

    def _forget(self):
        trip_id, self._local.expected = getattr(self._local, "expected", None), None
        if trip_id is not None:
            with self._lock:
                self._rung.pop(trip_id, None)

    def waiting(self):
        """The trips whose offers answers wait for now."""
        with self._lock:
            return set(self._waiting)

    def ring(self, trip_id):
        """In the transaction recording the trip's offer: the answers waiting
        for it, on every replica, wake once it commits."""
        if self._db.is_postgresql:
            with self._db.transaction() as conn:
                conn.execute(select(func.pg_notify(CHANNEL, trip_id)))

    def _wake(self, trip_id):
        with self._lock:
            rung = self._rung.get(trip_id)
        if rung is not None:
            rung.set()

    def _listen(self):
        url = self._db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        settings = process_settings()
        while not self._stopped.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=settings.database_connect_timeout) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listens += 1
                    while not self._stopped.is_set():
                        for notice in conn.notifies(timeout=LISTEN_POLL):
                            self._wake(notice.payload)
            except psycopg.Error as exc:  # answers wait OFFER_WAIT meanwhile, then are handled again
                log.warning("offer wake-ups: lost PostgreSQL (%s); listening again in %ss", exc, settings.reconnect_pause)
                self._stopped.wait(settings.reconnect_pause)
