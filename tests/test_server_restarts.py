"""A PostgreSQL or Redis restart between requests costs no request: every
connection pooled before it is replaced by a fresh one when it is next
taken, instead of failing the request that takes it. Each test restarts a
server of its own (tests/private_servers.py)."""
import threading

from sqlalchemy import text

from ridesync.database import Database
from ridesync.driver.redis_pool import RedisDriverPool
from ridesync.driver.dispatch import TripToDispatch
from ridesync.ride.model import Coordinate
from tests.private_servers import postgres, private_redis  # noqa: F401 (fixtures)

PICKUP = Coordinate(latitude=52.52, longitude=13.40)
AT_ONCE = 8  # requests in flight together: the pool then holds this many connections


def together(request, count=AT_ONCE):
    """request(all_in) run by count threads at once, each waiting on all_in()
    while it holds its connection, so that the pool ends up with count of
    them; the errors the requests raised."""
    all_in, errors = threading.Barrier(count), []

    def one():
        try:
            request(lambda: all_in.wait(10))
        except Exception as exc:  # what a caller would have seen
            errors.append(exc)
            all_in.abort()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def test_every_request_after_a_postgresql_restart_is_served(postgres):
    database = Database(postgres.url)
    try:
        def a_transaction(all_in):
            with database.transaction() as conn:
                conn.execute(text("INSERT INTO handled_messages (consumer, message_id, handled_at) "
                                  "VALUES ('restart', gen_random_uuid()::text, 0)"))
                all_in()

        def a_read(all_in):
            with database.at_once() as conn:
                conn.execute(text("SELECT count(*) FROM handled_messages"))
                all_in()

        assert together(a_transaction) == [] and together(a_read) == []
        pooled = postgres.backend_pids()
        assert len(pooled) > AT_ONCE  # both engines keep connections (at_once's pool keeps 5)

        postgres.restart()

        assert not pooled & postgres.backend_pids()
        assert together(a_transaction) == [] and together(a_read) == []
    finally:
        database.close()


def test_a_request_made_while_postgresql_restarts_is_served_once_it_is_back(postgres):
    database = Database(postgres.url)
    try:
        postgres.stop()
        served = []

        def a_read():
            with database.at_once() as conn:
                served.append(conn.execute(text("SELECT count(*) FROM handled_messages")).scalar())

        request = threading.Thread(target=a_read)
        request.start()
        postgres.start()
        request.join(15)
        assert served == [0]
    finally:
        database.close()


def test_every_call_after_a_redis_restart_is_served(private_redis):
    pool = RedisDriverPool(private_redis.url, prefix="restart:")
    try:
        def a_call(all_in):
            driver = pool.register(f"d-{threading.get_ident()}", "sedan")
            pool.move(driver.id, PICKUP)
            assert driver.id in {d.id for d in pool.candidates(trip_near(PICKUP))}
            connections = pool._redis.connection_pool  # each call takes one and gives it back: fill the pool
            held = connections.get_connection()
            all_in()
            connections.release(held)

        assert together(a_call) == []
        private_redis.restart()
        assert together(a_call) == []
    finally:
        pool.close()


def trip_near(pickup):
    return TripToDispatch(trip={}, id="t-restart", rider_id="r-restart", package_slug="sedan", pickup=pickup,
                          declined=())


def test_a_call_made_while_redis_restarts_is_served_once_it_is_back(private_redis):
    pool = RedisDriverPool(private_redis.url, prefix="restart:")
    try:
        pool.register("d-before", "sedan")
        private_redis.stop()
        registered = []
        call = threading.Thread(target=lambda: registered.append(pool.register("d-during", "sedan")))
        call.start()
        private_redis.start()
        call.join(15)
        assert registered and pool.registered(["d-before", "d-during"]) == {"d-before", "d-during"}
    finally:
        pool.close()
