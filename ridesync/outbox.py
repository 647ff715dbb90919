"""Publishing what a transaction decided, even if the process dies right
after the commit (the transactional outbox). Shaped like rabbit.Publisher:
a publish made inside a database transaction becomes a row of the `outbox`
table, committed with the change it announces; the relay, a thread of the
service, publishes the rows in order once they are committed and deletes
each once the broker confirmed it. A row published but not yet deleted when
the process dies is published again, with the same message_id, which
consumers and sockets drop as a second copy. Outside a transaction a
publish goes to the broker at once, as Publisher's does (CreateTrip answers
503 when the broker does not take its event)."""
import json
import logging
import threading
import uuid
import zlib

from sqlalchemy import delete, insert, select, text

from ridesync import telemetry
from ridesync.rabbit import PublishFailed, Unroutable
from ridesync.tables import outbox

log = logging.getLogger(__name__)
RELAY_LOCK = 0x6F7574626F78  # "outbox", and the sender: one replica of each relays at a time, so rows go out in order
BATCH = 100
IDLE_WAIT = 1.0  # seconds between looks at the table when no commit woke the relay


class Outbox:
    def __init__(self, database, publisher, name):
        """name: the service (trip, payment), whose relay publishes only its own rows."""
        self._db = database
        self._publisher = publisher
        self._name = name
        self._lock_key = RELAY_LOCK + zlib.crc32(name.encode())
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-outbox", daemon=True)

    def publish(self, routing_key, owner_id, data):
        self._send(routing_key, owner_id, data, notify=False)

    def notify(self, routing_key, owner_id, data):
        self._send(routing_key, owner_id, data, notify=True)

    def _send(self, routing_key, owner_id, data, notify):
        if not self._db.in_transaction():
            (self._publisher.notify if notify else self._publisher.publish)(routing_key, owner_id, data)
            return
        with self._db.transaction() as conn:
            conn.execute(insert(outbox).values(
                sender=self._name, routing_key=routing_key, owner_id=owner_id, data=json.dumps(data), notify=notify,
                headers=json.dumps(telemetry.message_headers()), message_id=uuid.uuid4().hex))
        self._db.after_commit(self._wake.set)

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
        while True:
            try:
                self.relay()
            except Exception:  # the database or broker is away: the rows wait for the next look
                log.exception("outbox of %s: relaying failed; trying again in %ss", self._name, IDLE_WAIT)
            if self._stopped.is_set():
                return
            self._wake.wait(IDLE_WAIT)
            self._wake.clear()

    def relay(self):
        """Publishes the committed rows, oldest first, until none is left or the broker refuses."""
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
        with self._db.transaction() as conn:
            rows = conn.execute(select(outbox).where(outbox.c.sender == self._name).order_by(outbox.c.id).limit(BATCH)).all()
        for row in rows:
            try:
                with telemetry.resumed(json.loads(row.headers)):  # the trace and request id of the change
                    self._publisher.publish(row.routing_key, row.owner_id, json.loads(row.data),
                                            message_id=row.message_id)
            except Unroutable:
                level = logging.INFO if row.notify else logging.ERROR
                log.log(level, "outbox of %s: no queue takes %s of %s: dropped", self._name, row.routing_key, row.owner_id)
            except PublishFailed as exc:
                log.warning("outbox of %s: %s of %s waits for the broker: %s", self._name, row.routing_key, row.owner_id, exc)
                return False
            with self._db.transaction() as conn:
                conn.execute(delete(outbox).where(outbox.c.id == row.id))
        return len(rows) == BATCH
