"""The payment process: a consumer of payment_trip_response until SIGTERM or SIGINT."""
import logging

from ridesync import contract, grpc_server, logs, telemetry
from ridesync.payment.providers import LocalProvider
from ridesync.payment.sessions import SessionDesk
from ridesync.rabbit import Publisher, WorkQueueConsumer
from ridesync.settings import Settings

log = logging.getLogger("ridesync.payment")


def main():
    logs.configure("payment")
    settings = Settings.from_env()
    telemetry.start("payment", settings.payment_metrics_port)
    publisher = Publisher(settings.amqp_url, "payment-service")
    sessions = WorkQueueConsumer(
        settings.amqp_url, contract.PAYMENT_TRIP_RESPONSE, SessionDesk(LocalProvider(), publisher).handle,
        "payment-sessions",
    ).start()
    log.info("payment service up (local provider)")
    log.info("payment service stopping on %s", grpc_server.wait_for_stop_signal())
    sessions.stop()
    publisher.close()


main()
