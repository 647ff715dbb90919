"""Publishing what a transaction decided, even if the process dies right
after the commit (the transactional outbox). Shaped like rabbit.Publisher:
a publish made inside a database transaction becomes a row of the `outbox`
table, committed with the change it announces; the relay, a thread of the
service, publishes the rows in order once they are committed and deletes
each once the broker confirmed it. A row published but not yet deleted when
the process dies is published again, with the same message_id, which
consumers and sockets drop as a second copy. Outside a transaction a
publish goes to the broker at once, as Publisher's does.

publish_or_undo is for a change that must not stand unannounced (CreateTrip:
a broker that does not take trip.event.created is a 503 and the fare usable
again): its row is published at once after the commit by the caller's
thread, and held back from the relay meanwhile; the relay deletes it at its
next pass."""
import logging
import threading
import time
import uuid
import zlib

import orjson
from sqlalchemy import bindparam, delete, insert, or_, select, text

from ridesync import contract, telemetry
from ridesync.database import Prebuilt
from ridesync.rabbit import PublishFailed, Unroutable
from ridesync.settings import process_settings
from ridesync.tables import outbox

log = logging.getLogger(__name__)
RELAY_LOCK = 0x6F7574626F78  # "outbox", and the sender: one replica of each relays at a time, so rows go out in order
# Sent without waiting for an answer (inline: no RETURNING of the id), the row known by its message_id.
INSERT_ROW = Prebuilt(insert(outbox).inline().values({column.name: bindparam(column.name) for column in outbox.c
                                                      if column is not outbox.c.id}))


class Outbox:
    def __init__(self, database, publisher, name, hold=None, clock=time.time):
        """name: the service (trip, payment), whose relay publishes only its own rows;
        hold: seconds it leaves a row its sender publishes itself (OUTBOX_HOLD when None)."""
        settings = process_settings()
        self._db = database
        self._publisher = publisher
        self._name = name
        self._hold = settings.outbox_hold if hold is None else hold
        self._batch, self._idle_wait = settings.outbox_batch, settings.outbox_idle_wait
        self._clock = clock  # wall time: replicas compare not_before
        self._lock_key = RELAY_LOCK + zlib.crc32(name.encode())
        self._published, self._published_lock = [], threading.Lock()  # message ids of rows publish_or_undo sent
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-outbox", daemon=True)

    def publish(self, routing_key, owner_id, data):
        self._send(routing_key, owner_id, data, notify=False)

    def notify(self, routing_key, owner_id, data, headers=None):
        """headers: the notification's own (contract.for_role), kept with its row."""
        self._send(routing_key, owner_id, data, notify=True, headers=headers)

    def _send(self, routing_key, owner_id, data, notify, headers=None):
        if not self._db.in_transaction():
            if notify:
                self._publisher.notify(routing_key, owner_id, data, headers)
            else:
                self._publisher.publish(routing_key, owner_id, data)
            return
        self._insert(routing_key, owner_id, data, notify=notify, headers=headers)
        self._db.after_commit(self._wake.set)

    def publish_or_undo(self, routing_key, owner_id, data, undo):
        """Inside a transaction: the message is committed with it as a row
        the relay leaves alone for `hold` seconds, published right after the
        commit (confirmed, with the row's message_id) and its row deleted
        by the relay's next pass, within OUTBOX_IDLE_WAIT.
        When the broker does not take it, the row is deleted and undo() run
        in one transaction, and the error raised out of the commit; unless
        the relay sent the row meanwhile: then the change stands. A sender
        killed after the commit leaves the row to the relay. Outside a
        transaction: Publisher.publish_or_undo."""
        if not self._db.in_transaction():
            self._publisher.publish_or_undo(routing_key, owner_id, data, undo)
            return
        message_id = self._insert(routing_key, owner_id, data, notify=False, not_before=self._clock() + self._hold)
        self._db.after_commit(lambda: self._send_held(routing_key, owner_id, data, message_id, undo))

    def _insert(self, routing_key, owner_id, data, notify, not_before=None, headers=None):
        """The row's message_id."""
        message_id = uuid.uuid4().hex
        with self._db.transaction() as conn:
            INSERT_ROW.run(conn, sender=self._name, routing_key=routing_key, owner_id=owner_id,
                           data=orjson.dumps(data).decode(), notify=notify, message_id=message_id,
                           headers=orjson.dumps({**telemetry.message_headers(), **(headers or {})}).decode(),
                           not_before=not_before)
        return message_id

    def _send_held(self, routing_key, owner_id, data, message_id, undo):
        try:
            self._publisher.publish(routing_key, owner_id, data, message_id=message_id)
        except Exception as exc:
            if self._withdraw(message_id, undo):
                raise
            log.warning("outbox of %s: %s of %s was not taken at once (%s), but the relay had sent it: it stands",
                        self._name, routing_key, owner_id, exc)
            return
        with self._published_lock:  # deleted by the relay's next pass, not on the caller's time
            self._published.append(message_id)

    def _withdraw(self, message_id, undo):
        """Deletes the row and runs undo(), in one transaction; False when the relay had taken the row."""
        with self._db.transaction() as conn:
            if not conn.execute(delete(outbox).where(outbox.c.message_id == message_id)).rowcount:
                return False
            undo()
            return True

    def _delete(self, *message_ids):
        """Published rows'; lost in a database server crash, they are published again, and their copies dropped."""
        with self._db.at_once() as conn:
            conn.execute(delete(outbox).where(outbox.c.message_id.in_(message_ids)))

    def _forget_published(self):
        """Deletes the rows their senders published themselves, long before
        their hold ends (OUTBOX_IDLE_WAIT against OUTBOX_HOLD); kept for the
        next pass when the database is away."""
        with self._published_lock:
            message_ids, self._published = self._published, []
        if not message_ids:
            return
        try:
            self._delete(*message_ids)
        except Exception:
            with self._published_lock:
                self._published[:0] = message_ids
            raise

    def start(self):
        self._thread.start()
        return self

    def stop(self, timeout):
        """After the consumers: what they committed last is published too, if the broker takes it in time."""
        self._stopped.set()
        self._wake.set()
        self._thread.join(timeout)
        return f"outbox of {self._name}: " + ("relay still publishing" if self._thread.is_alive() else "relayed")

    def _run(self):
        while not self._stopped.is_set():
            self._relay_or_log()
            self._wake.wait(self._idle_wait)
            self._wake.clear()
        # A pass that began before stop() may have looked at the table before
        # the consumers' last commit: this one begins after it.
        self._relay_or_log()

    def _relay_or_log(self):
        try:
            self.relay()
        except Exception:  # the database or broker is away: the rows wait for the next look
            log.exception("outbox of %s: relaying failed; trying again in %ss", self._name, self._idle_wait)

    def relay(self):
        """Deletes the rows published by their senders, then publishes the
        committed rows, oldest first, until none is left or the broker refuses."""
        self._forget_published()
        if not self._db.is_postgresql:  # SQLite: one replica
            self._relay_all()
            return
        with self._db.engine.connect() as lock:
            if not lock.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self._lock_key}).scalar():
                return  # another replica is relaying
            try:
                self._relay_all()
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._lock_key})
                lock.commit()

    def _relay_all(self):
        while self._relay_batch():
            pass

    def _relay_batch(self):
        """True when a full batch went out and more may wait."""
        due = or_(outbox.c.not_before.is_(None), outbox.c.not_before <= self._clock())  # held rows: their sender's
        with self._db.transaction() as conn:
            rows = conn.execute(select(outbox).where(outbox.c.sender == self._name, due)
                                .order_by(outbox.c.id).limit(self._batch)).all()
        for row in rows:
            if row.not_before is not None:
                log.warning("outbox of %s: relaying %s of %s (%s), left by its sender: killed after the commit, "
                            "or its own publish took longer than the hold", self._name, row.routing_key,
                            row.owner_id, row.message_id)
            try:
                headers = orjson.loads(row.headers)
                with telemetry.resumed(headers):  # the trace and request id of the change
                    self._publisher.publish(row.routing_key, row.owner_id, orjson.loads(row.data),
                                            headers=_own_headers(headers), message_id=row.message_id)
            except Unroutable:
                level = logging.INFO if row.notify else logging.ERROR
                log.log(level, "outbox of %s: no queue takes %s of %s: dropped", self._name, row.routing_key, row.owner_id)
            except PublishFailed as exc:
                log.warning("outbox of %s: %s of %s waits for the broker: %s", self._name, row.routing_key, row.owner_id, exc)
                return False
            self._delete(row.message_id)
        return len(rows) == self._batch


def _own_headers(headers):
    """The headers a row's message had of its own, beside the trace and
    request id that the relay's publish carries anew."""
    return {name: value for name, value in headers.items() if name == contract.ROLE_HEADER} or None
