"""Payment providers. A provider has two methods, both idempotent per trip:
create_session(trip_id, user_id, amount, currency) -> PaymentSession (asking
again for the same trip, a redelivered command, gives the same session), and
void_session(trip_id) -> the PaymentSession now voided, or None when the trip
has none. LocalProvider is the default; a Stripe provider would create a
Checkout Session with the trip id as its idempotency key, and expire it."""
import threading
import time
import uuid
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class PaymentSession:
    id: str
    trip_id: str
    user_id: str
    amount: int  # smallest unit of the currency: cents
    currency: str
    voided: bool = False


class LocalProvider:
    """Sessions made up and kept in this process's memory, each after
    `latency` seconds: the round trip to a real provider, to try slow
    payments (timeouts, shutdowns) without one."""

    def __init__(self, latency=0.0):
        self._latency = latency
        self._lock = threading.Lock()
        self._sessions = {}  # trip id -> PaymentSession

    def create_session(self, trip_id, user_id, amount, currency):
        time.sleep(self._latency)
        with self._lock:
            if trip_id not in self._sessions:
                self._sessions[trip_id] = PaymentSession(
                    id=f"cs_local_{uuid.uuid4().hex}", trip_id=trip_id, user_id=user_id,
                    amount=amount, currency=currency,
                )
            return self._sessions[trip_id]

    def void_session(self, trip_id):
        with self._lock:
            session = self._sessions.get(trip_id)
            if session is not None:
                session = self._sessions[trip_id] = replace(session, voided=True)
            return session
