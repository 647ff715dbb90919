"""The price of keeping state outside the process, each figure against a
baseline measured in the same run, rounds interleaved so that a busy
machine weighs on both alike:

1. TripService's preview and start (no gRPC; OSRM off; the start publishes
   trip.event.created to a real RabbitMQ, confirmed, through the outbox as
   the service does) on SQLite and on
   PostgreSQL against the in-memory store: p50/p99 of each, and rides
   (a preview and a start) per second with 4 threads.
2. PreviewTrip and CreateTrip over gRPC to a TripService process on
   SQLite and on PostgreSQL, against the same process on the in-memory
   store and the gRPC health check (the floor of any call).
3. POST /trip/preview and /trip/start through a gateway (one gevent
   worker) in front of each of those processes, against the in-memory
   one; and the gateway's preview against PreviewTrip direct, on SQLite.
4. Dispatch's nearest-driver search among N online drivers (10,000) in
   Redis against the in-process pool.

    python -m bench.state [--calls 300] [--rounds 3] [--drivers 10000]
"""
import argparse
import json
import statistics
import sys
import threading
import time
import uuid

import grpc
import redis
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.support import Bench, percentile
from ridesync import rabbit
from ridesync.database import Database
from ridesync.driver.dispatch import TripToDispatch
from ridesync.driver.pool import DriverPool
from ridesync.driver.redis_pool import RedisDriverPool
from ridesync.outbox import Outbox
from ridesync.pb import trip_pb2, trip_pb2_grpc
from ridesync.ride.model import Coordinate
from ridesync.trip.planner import RoutePlanner
from ridesync.trip.service import TripService
from ridesync.trip.sql_store import SqlTripStore
from ridesync.trip.store import TripStore
from tests.databases import POSTGRES_URL, REDIS_URL, create_database, drop_database
from tests.support import DESTINATION, DESTINATION_JSON, PICKUP, PICKUP_JSON



def percentiles(samples):
    """(p50, p99) of samples in seconds, in ms."""
    return percentile(samples, 50) * 1000, percentile(samples, 99) * 1000


def timed(call, n):
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        call()
        samples.append(time.perf_counter() - began)
    return samples


def stores_section(bench, calls, rounds, postgres):
    publisher = rabbit.Publisher(bench.amqp_url, "bench-state")
    databases = {"SQLite": Database(f"sqlite:///{bench.tmp}/bench.db"), "PostgreSQL": Database(postgres)}
    services = {"in memory": TripService(RoutePlanner(None, enabled=False), TripStore(), publisher)}
    outboxes = [Outbox(database, publisher, "trip").start() for database in databases.values()]
    for (name, database), outbox in zip(databases.items(), outboxes):  # wired as ridesync/trip/server.py does
        services[name] = TripService(RoutePlanner(None, enabled=False), SqlTripStore(database), outbox,
                                     transaction=database.transaction)
    previews, starts, rides = ({name: [] for name in services} for _ in range(3))
    for _ in range(rounds):
        for name, trips in services.items():
            fares = []
            previews[name] += timed(lambda: fares.append(trips.preview(_rider(), PICKUP, DESTINATION)[1][0]), calls)
            starts[name] += timed(lambda: trips.create_trip(fares[-1].id, fares.pop().user_id), calls)
            rides[name].append(rides_per_second(trips, seconds=2, threads=4))
    print(f"TripService in process, OSRM off, {rounds} rounds x {calls} calls; rides/s with 4 threads:")
    for name, preview, start, preview_ratio, start_ratio in against_memory(previews, starts):
        print(f"  {name:10s} preview p50 {preview[0]:6.2f} ms p99 {preview[1]:6.2f} ms ({preview_ratio:.2f}x)"
              f" | start p50 {start[0]:6.2f} ms p99 {start[1]:6.2f} ms ({start_ratio:.2f}x)"
              f" | rides/s {statistics.median(rides[name]):7.1f} (rounds {', '.join(f'{r:.0f}' for r in rides[name])})")
    for outbox in outboxes:
        outbox.stop(timeout=10)
    publisher.close()
    for database in databases.values():
        database.close()


def against_memory(previews, starts):
    """Per store: its name, preview and start (p50, p99), and each p50 over the in-memory store's."""
    base_preview, base_start = percentiles(previews["in memory"])[0], percentiles(starts["in memory"])[0]
    for name in previews:
        preview, start = percentiles(previews[name]), percentiles(starts[name])
        yield name, preview, start, preview[0] / base_preview, start[0] / base_start


def rides_per_second(trips, seconds, threads):
    done, stop = [], time.monotonic() + seconds

    def ride():
        while time.monotonic() < stop:
            rider = _rider()
            fare = trips.preview(rider, PICKUP, DESTINATION)[1][0]
            trips.create_trip(fare.id, rider)
            done.append(1)

    workers = [threading.Thread(target=ride) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return len(done) / seconds


def grpc_section(bench, calls, rounds, postgres):
    stubs = {name: start_trip_service(bench, name, url) for name, url in
             (("in memory", None), ("SQLite", f"sqlite:///{bench.tmp}/grpc.db"), ("PostgreSQL", postgres))}
    request = trip_pb2.PreviewTripRequest(
        userID="bench-rider", startLocation=trip_pb2.Coordinate(latitude=PICKUP.latitude, longitude=PICKUP.longitude),
        endLocation=trip_pb2.Coordinate(latitude=DESTINATION.latitude, longitude=DESTINATION.longitude))
    previews, starts, checks = {name: [] for name in stubs}, {name: [] for name in stubs}, []
    for trips, _health, _address in stubs.values():
        timed(lambda: trips.PreviewTrip(request, timeout=5), 50)  # warm up
    for _ in range(rounds):
        checks += timed(lambda: stubs["SQLite"][1].Check(health_pb2.HealthCheckRequest(), timeout=5), calls)
        for name, (trips, _health, _address) in stubs.items():
            fares = []
            previews[name] += timed(lambda: fares.append(trips.PreviewTrip(request, timeout=5).rideFares[0].id), calls)
            starts[name] += timed(lambda: trips.CreateTrip(
                trip_pb2.CreateTripRequest(rideFareID=fares.pop(), userID=request.userID), timeout=5), calls)
    check = percentiles(checks)
    print(f"over gRPC, one call at a time, {rounds} x {calls}: health check (the floor of any call) "
          f"p50 {check[0]:.2f} ms p99 {check[1]:.2f} ms")
    for name, preview, start, preview_ratio, start_ratio in against_memory(previews, starts):
        print(f"  {name:10s} PreviewTrip p50 {preview[0]:5.2f} ms p99 {preview[1]:5.2f} ms ({preview_ratio:.2f}x"
              f" in memory, {preview[0] / check[0]:.2f}x the floor) | CreateTrip p50 {start[0]:5.2f} ms"
              f" p99 {start[1]:5.2f} ms ({start_ratio:.2f}x in memory)")
    return {name: address for name, (_trips, _health, address) in stubs.items()}, percentiles(previews["SQLite"])


def gateway_section(bench, calls, rounds, addresses, direct_sqlite):
    """POST /trip/preview and /trip/start through a gateway (1 gevent worker)
    in front of each TripService of grpc_section: what a phone sees."""
    gateways = {name: bench.gunicorn("app:app", workers=1, name=f"gateway-{name.replace(' ', '-')}",
                                     OSRM_ENABLED="false", PREVIEW_RATE="1000000", PREVIEW_BURST="1000000",
                                     TRIP_SERVICE_ADDR=address, DRIVER_SERVICE_ADDR=address).base
                for name, address in addresses.items()}
    http, body = requests.Session(), json.dumps({
        "userID": "bench-rider", "pickup": PICKUP_JSON,
        "destination": DESTINATION_JSON})

    def call(url, data):
        answer = http.post(url, data=data, timeout=5)
        if answer.status_code != 201:
            raise SystemExit(f"{url} answered {answer.status_code}: {answer.text}")
        return answer.json()["data"]

    previews, starts = {name: [] for name in gateways}, {name: [] for name in gateways}
    for base in gateways.values():
        timed(lambda: call(f"{base}/trip/preview", body), 50)  # warm up
    for _ in range(rounds):
        for name, base in gateways.items():
            fares = []
            previews[name] += timed(lambda: fares.append(call(f"{base}/trip/preview", body)["rideFares"][0]["id"]), calls)
            starts[name] += timed(lambda: call(f"{base}/trip/start", json.dumps(
                {"userID": "bench-rider", "rideFareID": fares.pop()})), calls)
    print(f"through the gateway (1 gevent worker), one request at a time, {rounds} x {calls}:")
    for name, preview, start, preview_ratio, start_ratio in against_memory(previews, starts):
        print(f"  {name:10s} POST /trip/preview p50 {preview[0]:5.2f} ms p99 {preview[1]:5.2f} ms ({preview_ratio:.2f}x"
              f" in memory) | /trip/start p50 {start[0]:5.2f} ms p99 {start[1]:5.2f} ms ({start_ratio:.2f}x in memory)")
    through = percentiles(previews["SQLite"])
    print(f"  SQLite: POST /trip/preview p50 {through[0]:.2f} ms against PreviewTrip direct {direct_sqlite[0]:.2f} ms:"
          f" {through[0] - direct_sqlite[0]:+.2f} ms")


def start_trip_service(bench, name, database_url):
    """A TripService process on database_url, or on the in-memory store when
    None: (its stub, its health stub, its address)."""
    module, database = ("ridesync.trip", {"DATABASE_URL": database_url}) if database_url else (
        "bench.memory_trip_service", {})
    _, address = bench.service(module, f"trip-{name}", TRIP_SERVICE_ADDR="{address}", OSRM_ENABLED="false", **database)
    channel = grpc.insecure_channel(address)
    bench.defer(channel.close)
    return trip_pb2_grpc.TripServiceStub(channel), health_pb2_grpc.HealthStub(channel), address


def search_section(drivers, calls, rounds):
    prefix = f"ridesync-bench:{uuid.uuid4().hex[:8]}:"
    pools = {"in process": DriverPool(), "Redis": RedisDriverPool(REDIS_URL, prefix)}
    spread = 0.15  # degrees either way: the Bay Area
    for n in range(drivers):
        location = Coordinate(PICKUP.latitude + spread * ((n * 7919) % 1000 / 500 - 1),
                              PICKUP.longitude + spread * ((n * 104729) % 1000 / 500 - 1))
        for pool in pools.values():
            pool.register(f"d{n}", "sedan")
            pool.move(f"d{n}", location)
    trip = TripToDispatch(trip={}, id="t1", rider_id="r1", package_slug="sedan", pickup=PICKUP, declined=())
    samples = {name: [] for name in pools}
    for _ in range(rounds):
        for name, pool in pools.items():
            samples[name] += timed(lambda: next(iter(pool.candidates(trip))), calls)
    base = percentiles(samples["in process"])
    for name in pools:
        p50, p99 = percentiles(samples[name])
        print(f"nearest free driver among {drivers} online, {name:10s}: p50 {p50:.2f} ms p99 {p99:.2f} ms "
              f"({p50 / base[0]:.2f}x the in-process p50)")
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


def _rider():
    return f"bench-{uuid.uuid4().hex[:10]}"


def run(calls, rounds, drivers):
    print(f"PostgreSQL at {POSTGRES_URL.rsplit('@', 1)[-1]}, Redis at {REDIS_URL}; python {sys.version.split()[0]}")
    with Bench("state") as bench:
        postgres = create_database()
        bench.defer(lambda: drop_database(postgres))
        stores_section(bench, calls, rounds, postgres)
        addresses, direct_sqlite = grpc_section(bench, calls, rounds, postgres)
        gateway_section(bench, calls, rounds, addresses, direct_sqlite)
    search_section(drivers, calls, rounds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per round and kind")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--drivers", type=int, default=10000)
    args = parser.parse_args()
    run(args.calls, args.rounds, args.drivers)


if __name__ == "__main__":
    main()
