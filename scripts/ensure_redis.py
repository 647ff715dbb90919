"""Makes sure Redis answers at TEST_REDIS_URL, where the tests keep the
driver pool under a key prefix of their own: starts an installed
redis-server, or installs Debian's package when it is missing and we are
root; otherwise says what to do."""
import os
import subprocess
from urllib.parse import urlsplit

import redis

from scripts.local_server import ensure

URL = os.environ.get("TEST_REDIS_URL", "redis://localhost:6379/0")


def answers():
    try:
        return redis.Redis.from_url(URL, socket_timeout=2, socket_connect_timeout=2).ping()
    except redis.RedisError:
        return False


def start():
    port = str(urlsplit(URL).port or 6379)
    subprocess.run(["redis-server", "--port", port, "--daemonize", "yes"], check=False)


def main():
    ensure("Redis", URL, urlsplit(URL).hostname, answers, "redis-server", "redis-server", start,
           where_logs="redis-server's output")


if __name__ == "__main__":
    main()
