"""Handles payment.cmd.create_session (owner: the rider, data
messages.SessionOrder): a session from the provider, and
payment.event.session_created for the rider; and payment.cmd.void_session
(owner: the rider, data messages.SessionVoid): the trip's session voided."""
import logging

from ridesync import contract, messages

log = logging.getLogger(__name__)


class SessionDesk:
    def __init__(self, provider, publisher):
        self._provider = provider
        self._publisher = publisher

    def handle(self, routing_key, owner_id, data):
        if routing_key == contract.PAYMENT_VOID_SESSION:
            self._void(owner_id, messages.decode(data, messages.SessionVoid, "data").trip_id)
        else:
            self._create(owner_id, messages.decode(data, messages.SessionOrder, "data"))

    def _void(self, owner_id, trip_id):
        session = self._provider.void_session(trip_id)
        if session is None:
            log.warning("no payment session to void for trip %s of rider %s", trip_id, owner_id)
        else:
            log.info("payment session %s for trip %s of rider %s voided", session.id, trip_id, owner_id)

    def _create(self, owner_id, order):
        session = self._provider.create_session(order.trip_id, order.user_id, order.amount, order.currency)
        self._publisher.notify(contract.PAYMENT_SESSION_CREATED, owner_id, messages.as_json(messages.SessionCreated(
            trip_id=session.trip_id, session_id=session.id, amount=session.amount, currency=session.currency)))
        log.info("payment session %s for trip %s of rider %s: %d %s",
                 session.id, session.trip_id, owner_id, session.amount, session.currency)
