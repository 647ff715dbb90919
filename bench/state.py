"""The price of keeping state outside the process, each figure against a
baseline measured in the same run, the stores taking turns call by call
(their order reversed at each turn: ABBA), so that the machine's drift,
which moved the in-memory baseline by half between runs, weighs on all
alike; each ratio is given with the spread of its rounds' ratios:

1. TripService's preview and start (no gRPC; OSRM off; the start publishes
   trip.event.created to a real RabbitMQ, confirmed, through the outbox as
   the service does) on SQLite and on
   PostgreSQL against the in-memory store: p50/p99 of each, and rides
   (a preview and a start) per second with 4 threads.
2. PreviewTrip and CreateTrip over gRPC to a TripService process on
   SQLite and on PostgreSQL, against the same process on the in-memory
   store and the gRPC health check (the floor of any call); and, in the
   same turns, what a start waits on beside its store: a confirmed
   publish of trip.event.created, one durable INSERT on PostgreSQL.
3. POST /trip/preview and /trip/start through a gateway (one gevent
   worker) in front of each of those processes, against the in-memory
   one; and the gateway's preview against PreviewTrip direct, on SQLite.
4. Dispatch's nearest-driver search among N online drivers (10,000) in
   Redis against the in-process pool.

    python -m bench.state [--calls 300] [--rounds 3] [--drivers 10000]
"""
import argparse
import collections
import json
import statistics
import sys
import threading
import time
import uuid

import grpc
import redis
import requests
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.support import Bench, percentile
from ridesync import contract, rabbit
from ridesync.database import Database, at_once_engine_for
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

PREVIEW, START = "preview", "start"
RideSeconds = collections.namedtuple("RideSeconds", (PREVIEW, START))  # what a ride() step gives
IN_MEMORY = "in memory"  # the baseline
CONFIRMED_PUBLISH, DURABLE_INSERT = "confirmed publish", "durable INSERT"  # parts_of_a_start's steps


def percentiles(samples):
    """(p50, p99) of samples in seconds, in ms."""
    return percentile(samples, 50) * 1000, percentile(samples, 99) * 1000


def seconds_of(call):
    """A step of alternated() timing one call: its seconds."""
    def step():
        began = time.perf_counter()
        call()
        return time.perf_counter() - began
    return step


def stores_section(bench, calls, rounds, postgres):
    publisher = rabbit.Publisher(bench.amqp_url, "bench-state")
    databases = {"SQLite": Database(f"sqlite:///{bench.tmp}/bench.db"), "PostgreSQL": Database(postgres)}
    services = {IN_MEMORY: TripService(RoutePlanner(None, enabled=False), TripStore(), publisher)}
    outboxes = [Outbox(database, publisher, "trip").start() for database in databases.values()]
    for (name, database), outbox in zip(databases.items(), outboxes):  # wired as ridesync/trip/server.py does
        services[name] = TripService(RoutePlanner(None, enabled=False), SqlTripStore(database), outbox,
                                     transaction=database.transaction)
    samples = alternated({name: ride(lambda trips=trips: trips.preview(_rider(), PICKUP, DESTINATION)[1][0],
                                      lambda fare, trips=trips: trips.create_trip(fare.id, fare.user_id))
                          for name, trips in services.items()}, calls, rounds)
    rides = {name: [rides_per_second(trips, seconds=2, threads=4) for _ in range(rounds)]
             for name, trips in services.items()}
    print(f"TripService in process, OSRM off, {rounds} rounds x {calls} calls; rides/s with 4 threads:")
    for name in services:
        print(f"  {name:10s} preview {against_memory(samples, name, PREVIEW)} | start {against_memory(samples, name, START)}"
              f" | rides/s {statistics.median(rides[name]):7.1f} (rounds {', '.join(f'{r:.0f}' for r in rides[name])})")
    for outbox in outboxes:
        outbox.stop(timeout=10)
    publisher.close()
    for database in databases.values():
        database.close()


def ride(preview, start):
    """A step of alternated(): preview() gives a fare, start(fare) starts a
    trip on it; the step gives the RideSeconds of both. Its start_trip()
    does both untimed, and returns what start returned."""
    def step():
        began = time.perf_counter()
        fare = preview()
        previewed = time.perf_counter()
        start(fare)
        return RideSeconds(previewed - began, time.perf_counter() - previewed)
    step.start_trip = lambda: start(preview())
    return step


def alternated(steps, calls, rounds):
    """{name: [each round's [what its step gave at each call]]}: each name's step
    run calls times a round, the names taking turns call by call, their
    order reversed at each turn (ABBA), so that what moves the machine
    meanwhile weighs on every name alike."""
    samples, order = {name: [] for name in steps}, list(steps)
    for _ in range(rounds):
        for name in steps:
            samples[name].append([])
        for _ in range(calls):
            for name in order:
                samples[name][-1].append(steps[name]())
            order.reverse()
    return samples


def against_memory(samples, name, kind):
    """name's p50 and p99 of its rides' kind (PREVIEW or START) over all rounds,
    its p50 over the in-memory store's, and the lowest and highest of each round's ratio."""
    def p50(*rounds):
        return percentile(_kind(rounds, kind), 50)

    if name == IN_MEMORY:
        return figures(samples, name, kind)
    ratios = [p50(round_) / p50(base) for round_, base in zip(samples[name], samples[IN_MEMORY])]
    return (f"{figures(samples, name, kind)} ({p50(*samples[name]) / p50(*samples[IN_MEMORY]):.2f}x {IN_MEMORY},"
            f" rounds {min(ratios):.2f}-{max(ratios):.2f}x)")


def figures(samples, name, kind=None):
    """name's p50 and p99 over all rounds: of its one call, or of its rides' kind."""
    seconds = _kind(samples[name], kind)
    return f"p50 {percentile(seconds, 50) * 1000:5.2f} ms p99 {percentile(seconds, 99) * 1000:5.2f} ms"


def _kind(rounds, kind):
    """Each call's seconds over rounds: a one-call step's, or its rides' kind."""
    return [seconds if kind is None else getattr(seconds, kind) for round_ in rounds for seconds in round_]


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
             ((IN_MEMORY, None), ("SQLite", f"sqlite:///{bench.tmp}/grpc.db"), ("PostgreSQL", postgres))}
    request = trip_pb2.PreviewTripRequest(
        userID="bench-rider", startLocation=trip_pb2.Coordinate(latitude=PICKUP.latitude, longitude=PICKUP.longitude),
        endLocation=trip_pb2.Coordinate(latitude=DESTINATION.latitude, longitude=DESTINATION.longitude))
    health_check = health_pb2.HealthCheckRequest()
    steps = {name: ride(lambda trips=trips: trips.PreviewTrip(request, timeout=5).rideFares[0].id,
                        lambda fare, trips=trips: trips.CreateTrip(
                            trip_pb2.CreateTripRequest(rideFareID=fare, userID=request.userID), timeout=5))
             for name, (trips, _health, _address) in stubs.items()}
    steps["health check"] = seconds_of(lambda: stubs["SQLite"][1].Check(health_check, timeout=5))
    trip = json_format.MessageToDict(steps[IN_MEMORY].start_trip().trip)
    steps.update(parts_of_a_start(bench, postgres, trip))
    alternated(steps, 50, 1)  # warm up
    samples = alternated(steps, calls, rounds)
    print(f"over gRPC, one call at a time, {rounds} x {calls}: health check (the floor of any call) "
          f"{figures(samples, 'health check')}")
    for name in stubs:
        print(f"  {name:10s} PreviewTrip {against_memory(samples, name, PREVIEW)}"
              f" | CreateTrip {against_memory(samples, name, START)}")
    print("  what a start waits on beside its store, from this process in the same turns:"
          f" a confirmed publish of {contract.TRIP_CREATED} (every store's start waits for one)"
          f" {figures(samples, CONFIRMED_PUBLISH)}; one durable INSERT on CreateTrip's PostgreSQL pool"
          f" (the least a durable store adds) {figures(samples, DURABLE_INSERT)}")
    return ({name: address for name, (_trips, _health, address) in stubs.items()},
            percentile(_kind(samples["SQLite"], PREVIEW), 50))


def parts_of_a_start(bench, postgres, trip):
    """Steps of alternated() timing, from this process, the confirmed
    publish of the trip's trip.event.created (as TripService publishes it)
    and one durable INSERT of a row on the pool CreateTrip's statement
    goes through on PostgreSQL (its round trip and its commit's flush)."""
    publisher = rabbit.Publisher(bench.amqp_url, "bench-state-publish")
    bench.defer(publisher.close)
    engine = at_once_engine_for(postgres, durable=True)
    bench.defer(engine.dispose)
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE durable_insert (id bigserial PRIMARY KEY, at double precision)")

    def insert():
        connection = engine.raw_connection()
        try:
            connection.driver_connection.execute("INSERT INTO durable_insert (at) VALUES (%s)", (time.time(),))
        finally:
            connection.close()

    return {CONFIRMED_PUBLISH: seconds_of(lambda: publisher.publish(contract.TRIP_CREATED, trip["userID"], trip)),
            DURABLE_INSERT: seconds_of(insert)}


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

    steps = {name: ride(lambda base=base: call(f"{base}/trip/preview", body)["rideFares"][0]["id"],
                        lambda fare, base=base: call(f"{base}/trip/start", json.dumps(
                            {"userID": "bench-rider", "rideFareID": fare})))
             for name, base in gateways.items()}
    alternated(steps, 50, 1)  # warm up
    samples = alternated(steps, calls, rounds)
    print(f"through the gateway (1 gevent worker), one request at a time, {rounds} x {calls}:")
    for name in gateways:
        print(f"  {name:10s} POST /trip/preview {against_memory(samples, name, PREVIEW)}"
              f" | /trip/start {against_memory(samples, name, START)}")
    through = percentile(_kind(samples["SQLite"], PREVIEW), 50)
    print(f"  SQLite: POST /trip/preview p50 {through * 1000:.2f} ms against PreviewTrip direct"
          f" {direct_sqlite * 1000:.2f} ms: {(through - direct_sqlite) * 1000:+.2f} ms")


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
            search = seconds_of(lambda: next(iter(pool.candidates(trip))))
            samples[name] += [search() for _ in range(calls)]
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
