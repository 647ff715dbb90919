"""This run's PostgreSQL database and Redis key prefix, so that runs side by
side never meet: a database made for the run and dropped at its end (on the
server at TEST_POSTGRES_URL, which `make test` starts), and a prefix of the
run's own under TEST_REDIS_URL."""
import os
import uuid

import psycopg
import redis
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres:postgres@localhost:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://localhost:6379/0")
RUN = uuid.uuid4().hex[:12]


def create_database():
    """The URL of a new, empty database of this run."""
    name = f"ridesync_test_{RUN}_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url):
    _admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def _admin(statement):
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(statement)


def in_redis(make):
    """The body of a fixture (`yield from in_redis(RedisDriverPool)`): yields
    a function making make(REDIS_URL, prefix) under a key prefix of the
    test's own; afterwards closes each and removes the prefix's keys."""
    prefix = f"ridesync-test:{RUN}:{uuid.uuid4().hex[:8]}:"
    made = []
    yield lambda: made.append(make(REDIS_URL, prefix)) or made[-1]
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()
    for store in made:
        store.close()
