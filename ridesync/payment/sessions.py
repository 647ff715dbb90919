"""Handles payment.cmd.create_session (owner: the rider, data {"tripID",
"userID", "amount" in cents, "currency"}): a session from the provider, and
payment.event.session_created for the rider; and payment.cmd.void_session
(owner: the rider, data {"tripID", "userID"}): the trip's session voided."""
import logging

from ridesync import contract
from ridesync.contract import MalformedMessage, field

log = logging.getLogger(__name__)


class SessionDesk:
    def __init__(self, provider, publisher):
        self._provider = provider
        self._publisher = publisher

    def handle(self, routing_key, owner_id, data):
        if routing_key == contract.PAYMENT_VOID_SESSION:
            self._void(owner_id, field(data, "tripID"))
        else:
            self._create(owner_id, data)

    def _void(self, owner_id, trip_id):
        session = self._provider.void_session(trip_id)
        if session is None:
            log.warning("no payment session to void for trip %s of rider %s", trip_id, owner_id)
        else:
            log.info("payment session %s for trip %s of rider %s voided", session.id, trip_id, owner_id)

    def _create(self, owner_id, data):
        amount = field(data, "amount", float)
        if amount != int(amount) or amount <= 0:
            raise MalformedMessage("data.amount must be a positive whole number of cents")
        session = self._provider.create_session(
            field(data, "tripID"), field(data, "userID"), int(amount), field(data, "currency")
        )
        self._publisher.notify(contract.PAYMENT_SESSION_CREATED, owner_id, {
            "tripID": session.trip_id,
            "sessionID": session.id,
            "amount": session.amount,
            "currency": session.currency,
        })
        log.info("payment session %s for trip %s of rider %s: %d %s",
                 session.id, session.trip_id, owner_id, session.amount, session.currency)
