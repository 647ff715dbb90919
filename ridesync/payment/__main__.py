"""The payment process: a consumer of payment_trip_response until SIGTERM or SIGINT."""
import logging

from ridesync import contract, logs, shutdown, telemetry
from ridesync.database import Database
from ridesync.outbox import Outbox
from ridesync.payment.providers import LocalProvider
from ridesync.payment.sessions import SessionDesk
from ridesync.rabbit import Publisher, WorkQueueConsumer
from ridesync.settings import process_settings

log = logging.getLogger("ridesync.payment")


def main():
    settings = process_settings()
    logs.configure("payment")
    telemetry.start("payment", settings.payment_metrics_port)
    publisher = Publisher(settings.amqp_url, "payment-service")
    database = Database(settings.database_url)
    outbox = Outbox(database, publisher, "payment")
    desk = SessionDesk(LocalProvider(database, settings.payment_local_latency), outbox)
    sessions = WorkQueueConsumer(
        settings.amqp_url, contract.PAYMENT_TRIP_RESPONSE, desk.handle, "payment-sessions", handled=database,
    ).start()
    outbox.start()
    log.info("payment service up (local provider, %ss per session)", settings.payment_local_latency)
    shutdown.serve_until_signal("payment service", consumers=[sessions, outbox], publishers=[publisher])
    database.close()


main()
