"""Payment providers. A provider has two methods, both idempotent per trip:
create_session(trip_id, user_id, amount, currency) -> PaymentSession (asking
again for the same trip, a redelivered command, gives the same session), and
void_session(trip_id) -> the PaymentSession now voided, or None when the trip
has none. LocalProvider is the default; a Stripe provider would create a
Checkout Session with the trip id as its idempotency key, and expire it."""
import logging
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import insert, select, update

from ridesync.tables import payment_sessions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaymentSession:
    id: str
    trip_id: str
    user_id: str
    amount: int  # smallest unit of the currency: cents
    currency: str
    voided: bool = False


class LocalProvider:
    """Sessions made up and kept in the database (one per trip, whichever
    replica asks), each after `latency` seconds: the round trip to a real
    provider, to try slow payments (timeouts, shutdowns) without one."""

    def __init__(self, database, latency=0.0):
        self._db = database
        self._latency = latency

    def create_session(self, trip_id, user_id, amount, currency):
        if self._latency:
            log.info("local provider: making the session for trip %s of rider %s, taking %ss as set",
                     trip_id, user_id, self._latency)
            time.sleep(self._latency)
        with self._db.transaction() as conn:
            row = conn.execute(select(payment_sessions).where(payment_sessions.c.trip_id == trip_id)).first()
            if row is not None:
                return _session(row)
            session = PaymentSession(id=f"cs_local_{uuid.uuid4().hex}", trip_id=trip_id, user_id=user_id,
                                     amount=amount, currency=currency)
            conn.execute(insert(payment_sessions).values(**session.__dict__))
            return session

    def void_session(self, trip_id):
        with self._db.transaction() as conn:
            voided = conn.execute(update(payment_sessions).where(payment_sessions.c.trip_id == trip_id)
                                  .values(voided=True).returning(*payment_sessions.c)).first()
            return None if voided is None else _session(voided)


def _session(row):
    return PaymentSession(**row._mapping)
