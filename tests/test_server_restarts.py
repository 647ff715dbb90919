"""A PostgreSQL or Redis restart between requests costs no request: every
connection pooled before it is replaced by a fresh one when it is next
taken, instead of failing the request that takes it. Each test restarts a
server of its own (tests/private_servers.py)."""
import threading
import time

from sqlalchemy import text

from ridesync.database import Database
import redis

from ridesync.driver.redis_locations import RedisTripsUnderWay
from ridesync.driver.redis_pool import RedisDriverPool
from ridesync.driver.dispatch import Offer, TripToDispatch
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


def trip_near(pickup, trip_id="t-restart"):
    return TripToDispatch(trip={}, id=trip_id, rider_id="r-restart", package_slug="sedan", pickup=pickup,
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


def reply_lost_once(client, command, restart):
    """The first reply to command that client reads is lost: the command ran,
    then Redis restarted (keeping what it ran) and the client saw its
    connection end, as a restart between a script and its reply does. The
    client's retry sends it again, on a Redis whose script cache is empty."""
    parse_response = client.parse_response
    lost = []

    def parse(conn, command_name, **options):
        reply = parse_response(conn, command_name, **options)
        if command_name == command and not lost:
            lost.append(reply)
            restart()
            raise redis.exceptions.ConnectionError("the reply was lost to a restart")
        return reply

    client.parse_response = parse
    return lost


def test_a_push_claim_sent_again_after_its_reply_was_lost_is_still_its_claimers(private_redis):
    trips = RedisTripsUnderWay(private_redis.url, prefix="restart:")
    try:
        trips.claim("t-before", now=100.0, hold=5.0)  # the script in Redis's cache, as after the first push
        lost = reply_lost_once(trips._redis, "EVALSHA", private_redis.restart)
        token, free_at = trips.claim("t-claimed", now=100.0, hold=5.0)
        assert lost == [""] and free_at is None and token  # the first run claimed it; the second says so
        assert trips.claim("t-claimed", now=101.0, hold=5.0) == (None, 105.0)  # and no one else has it
    finally:
        trips.close()


def test_an_offer_sent_again_after_its_reply_was_lost_still_claims_its_driver(private_redis):
    pool = RedisDriverPool(private_redis.url, prefix="restart:")
    try:
        asked, _before = (pool.register(driver_id, "sedan") for driver_id in ("d-asked", "d-before"))
        offer = Offer(trip_near(PICKUP), time.time() + 30, asked)
        assert pool.ask("d-before", offer)  # the script in Redis's cache
        lost = reply_lost_once(pool._redis, "EVALSHA", private_redis.restart)
        assert pool.ask("d-asked", offer) and lost == [1]
        assert not pool.ask("d-asked", Offer(trip_near(PICKUP, "t-other"), time.time() + 30, asked))
    finally:
        pool.close()


def test_what_a_taking_script_took_is_its_answer_again_when_it_is_sent_again_after_its_reply_was_lost(private_redis):
    pool = RedisDriverPool(private_redis.url, prefix="restart:")
    trips = RedisTripsUnderWay(private_redis.url, prefix="restart:")
    try:
        drivers = {d: pool.register(d, "sedan", session="s") for d in ("d-late", "d-took", "d-also", "d-gone")}
        asked = {"d-late": ("t-late", -1), "d-took": ("t-took", 30), "d-also": ("t-took", 30), "d-gone": ("t-gone", 30)}
        for driver_id, (trip_id, within) in asked.items():
            assert pool.ask(driver_id, Offer(trip_near(PICKUP, trip_id), time.time() + within, drivers[driver_id]))
        trips.defer("t-due", 1.0)

        def lost_once(warm_up, client=pool._redis):
            warm_up()  # the script in Redis's cache, taking nothing
            reply_lost_once(client, "EVALSHA", private_redis.restart)

        lost_once(lambda: pool.expired_offers(0.0))
        assert [driver_id for driver_id, _offer in pool.expired_offers(time.time())] == ["d-late"]
        lost_once(lambda: pool.assign("d-nobody", "t-nothing"))
        assert pool.assign("d-took", "t-took") == ["d-also"]  # d-also is told its offer was taken
        lost_once(lambda: pool.unregister("d-nobody", "s"))
        driver, offer = pool.unregister("d-gone", "s")
        assert driver.id == "d-gone" and offer.trip.id == "t-gone"  # the trip is passed on to the next driver
        lost_once(lambda: trips.due(0.0), trips._redis)
        assert trips.due(2.0) == ["t-due"]
    finally:
        trips.close()
        pool.close()
