"""Handles payment.cmd.create_session (owner: the rider, data {"tripID",
"userID", "amount" in cents, "currency"}): a session from the provider, and
payment.event.session_created for the rider."""
import logging

from ridesync import contract
from ridesync.contract import MalformedMessage, field

log = logging.getLogger(__name__)


class SessionDesk:
    def __init__(self, provider, publisher):
        self._provider = provider
        self._publisher = publisher

    def handle(self, _routing_key, owner_id, data):
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
