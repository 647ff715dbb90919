"""What following a trip costs DriverService per driver's fix, against the
fix of a driver on no trip (what UpdateLocation does for every driver: the
pool moved) measured in the same run, rounds interleaved, on each store (the
process's memory, Redis); and what one push costs (claim, reads, the frame
published to a real RabbitMQ and confirmed, the push recorded) against a
bare confirmed publish of the same frame. No gRPC, no OSRM (the route is the
estimate: OSRM_ENABLED=false).

    python -m bench.locations [--fixes 2000] [--rounds 3]
"""
import argparse
import time
import uuid

import redis

from bench.support import Bench, percentile
from ridesync import contract, messages, rabbit
from ridesync.driver.locations import Locations, TripsUnderWay
from ridesync.driver.pool import DriverPool
from ridesync.driver.redis_locations import RedisTripsUnderWay
from ridesync.driver.redis_pool import RedisDriverPool
from ridesync.ride.model import Coordinate
from ridesync.settings import Settings
from ridesync.trip.planner import RoutePlanner
from tests.databases import REDIS_URL
from tests.service_support import trip_driver_json, trip_json
from tests.support import PICKUP

STEP = 1 / 111_195  # a metre north, in degrees


def timed(call, n):
    samples = []
    for i in range(n):
        began = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - began)
    return samples


def store_round(pool, trips, publisher, fixes):
    """(free driver's fix, on-trip driver's fix, push) samples on one store."""
    clock = [time.time()]  # moved on by more than the push interval before each push: every push is due
    planner = RoutePlanner.from_settings(Settings.from_env({"OSRM_ENABLED": "false"}))
    locations = Locations(trips, planner, publisher, push_interval=1.0, eta_refresh=15.0, hold=40.0,
                          clock=lambda: clock[0])
    free, busy, trip_id = f"free-{uuid.uuid4().hex[:6]}", f"busy-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    for driver in (free, busy):
        pool.register(driver, "sedan")
    pool.assign(busy, trip_id)
    locations.follow(messages.decode({**trip_json(trip_id=trip_id), "status": "accepted",
                                      "driver": trip_driver_json(busy)}, messages.Trip))

    def fix(driver):
        def move(i):
            where = Coordinate(PICKUP.latitude + i * STEP, PICKUP.longitude)
            on_trip = pool.on_trip(pool.move(driver, where).id)
            if on_trip is not None:
                locations.fix(on_trip, where)
        return move

    def push(_i):
        clock[0] += 2.0
        locations.fix(trip_id, PICKUP)
        locations.push(trip_id)

    samples = timed(fix(free), fixes), timed(fix(busy), fixes), timed(push, min(fixes, 300))
    trips.end(trip_id)
    pool.release(busy, trip_id)
    return samples


def bare_publish(publisher, n):
    frame = {"tripID": "t", "location": {"latitude": 37.77, "longitude": -122.41}, "heading": 0.0,
             "etaSeconds": 60, "distanceMeters": 500, "at": "2026-12-03T20:00:00+00:00"}
    return timed(lambda i: publisher.publish(contract.TRIP_DRIVER_LOCATION, "bench-rider", frame,
                                             contract.for_role("rider")), n)


def _forget(client, prefix):
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


def ms(samples, p):
    return percentile(samples, p) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with Bench("locations") as bench:
        publisher = rabbit.Publisher(bench.amqp_url, "bench-locations")
        bench.defer(publisher.close)
        prefix = f"ridesync-bench:{uuid.uuid4().hex[:8]}:"
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        bench.defer(lambda: _forget(client, prefix))
        stores = {"memory": (DriverPool(), TripsUnderWay()),
                  "redis": (RedisDriverPool(REDIS_URL, prefix), RedisTripsUnderWay(REDIS_URL, prefix))}
        results = {name: ([], [], []) for name in stores}
        bare = []
        for _ in range(args.rounds):
            for name, (pool, trips) in stores.items():
                for kept, new in zip(results[name], store_round(pool, trips, publisher, args.fixes)):
                    kept.extend(new)
            bare.extend(bare_publish(publisher, min(args.fixes, 300)))
    print(f"bench.locations: {args.rounds} rounds, {args.fixes} fixes per driver and round")
    for name, (free, busy, pushes) in results.items():
        print(f"  {name:6} fix, driver on no trip (baseline): p50 {ms(free, 50):.3f} ms  p99 {ms(free, 99):.3f} ms")
        print(f"  {name:6} fix, driver on a trip:             p50 {ms(busy, 50):.3f} ms  p99 {ms(busy, 99):.3f} ms"
              f"  ratio p50 {ms(busy, 50) / ms(free, 50):.2f}x")
        print(f"  {name:6} push (claim, frame, confirmed publish): p50 {ms(pushes, 50):.3f} ms  p99 {ms(pushes, 99):.3f} ms"
              f"  ratio p50 to a bare publish {ms(pushes, 50) / ms(bare, 50):.2f}x")
    print(f"  bare confirmed publish (baseline): p50 {ms(bare, 50):.3f} ms  p99 {ms(bare, 99):.3f} ms")


if __name__ == "__main__":
    main()
