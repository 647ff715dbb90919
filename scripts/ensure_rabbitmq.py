"""Makes sure RabbitMQ answers at AMQP_URL: starts an installed
rabbitmq-server, or installs Debian's package when it is missing and we are
root; otherwise says what to do."""
import os
import subprocess

import pika

from ridesync.rabbit import broker_answers
from scripts.local_server import ensure

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")


def main():
    ensure(
        "RabbitMQ", URL, pika.URLParameters(URL).host, lambda: broker_answers(URL),
        "rabbitmq-server", "rabbitmq-server",
        lambda: subprocess.run(["rabbitmq-server", "-detached"], check=False),
        where_logs="its log in /var/log/rabbitmq",
    )


if __name__ == "__main__":
    main()
