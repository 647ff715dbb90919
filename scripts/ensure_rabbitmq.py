"""Makes sure RabbitMQ answers at AMQP_URL: starts an installed
rabbitmq-server, or installs Debian's package when it is missing and we are
root; otherwise says what to do."""
import os
import shutil
import subprocess
import sys
import time

import pika

from ridesync.rabbit import broker_answers

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def install():
    if shutil.which("rabbitmq-server"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("RabbitMQ is not installed. Install it (Debian: apt-get install rabbitmq-server) "
                 "or point AMQP_URL at a running broker.")
    print("installing Debian's rabbitmq-server", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "rabbitmq-server"], check=True, env=env)


def main():
    if broker_answers(URL):
        return
    host = pika.URLParameters(URL).host
    if host not in LOCAL_HOSTS:
        sys.exit(f"RabbitMQ does not answer at {URL}, and it is not on this machine to start.")
    install()
    print("starting rabbitmq-server", flush=True)
    subprocess.run(["rabbitmq-server", "-detached"], check=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if broker_answers(URL):
            print("RabbitMQ answers", flush=True)
            return
        time.sleep(1)
    sys.exit(f"RabbitMQ was started but does not answer at {URL} after 120 s; see its log in /var/log/rabbitmq.")


if __name__ == "__main__":
    main()
