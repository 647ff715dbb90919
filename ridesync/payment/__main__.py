"""The payment process: a consumer of payment_trip_response until SIGTERM or SIGINT."""
import logging

from ridesync import contract, logs, shutdown, telemetry
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
    desk = SessionDesk(LocalProvider(settings.payment_local_latency), publisher)
    sessions = WorkQueueConsumer(
        settings.amqp_url, contract.PAYMENT_TRIP_RESPONSE, desk.handle, "payment-sessions"
    ).start()
    log.info("payment service up (local provider, %ss per session)", settings.payment_local_latency)
    shutdown.serve_until_signal("payment service", consumers=[sessions], publishers=[publisher])


main()
