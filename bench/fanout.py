"""Fan-out latency: riders connected to the gateway, events published to
random riders at a steady rate (Publisher-compatible: the `trip` exchange,
trip.event.no_drivers_found, owner the rider, ridesync.rabbit.message_properties,
mandatory, confirmed, the publish time in data), timed from publish to the
rider's socket; and the floor, in the same run on the same broker: the same
publishes taken by a raw pika consumer (bench/floor.py). Every event is
checked to arrive exactly once, at its owner. Also the CPU each phase costs
the broker and our side, per event.

    python -m bench.fanout --riders 1000 --rate 1000 --seconds 10
"""
import argparse
import json
import os
import random
import time
from collections import Counter, deque

import pika

from bench import floor as floor_module
from bench.support import Bench, CpuMeter, load, machine, percentile, read_json_line, wait_until
from ridesync import contract, rabbit

TARGET_RATIO = 3.0
# A rider's notification that no service queue takes: each phase's events go
# to one place, the gateway's feed here and the floor's queue there.
ROUTING_KEY = contract.TRIP_NO_DRIVERS_FOUND


def sample_trip(owner):
    """A Trip of the usual size: what trip.event.created carries."""
    return {
        "id": "trip-0123456789abcdef", "userID": owner, "status": "pending",
        "selectedFare": {"id": "fare-0123456789abcdef", "userID": owner, "packageSlug": "sedan",
                         "totalPriceInCents": 1234.5},
        "route": {"distance": 4200.0, "duration": 600.0,
                  "geometry": [{"coordinates": [{"latitude": 37.77 + i / 1000, "longitude": -122.41 + i / 1000}
                                                for i in range(20)]}]},
    }


class PacedPublisher:
    """Publishes `rate` messages a second for `seconds`, pipelined: publisher
    confirms are counted as they come instead of awaited one by one
    (ridesync.rabbit.Publisher waits for each, which caps it near the round
    trip rate). One SelectConnection, on this thread."""

    def __init__(self, url, owners, rate, seconds, label, routing_key, in_turn=False):
        """in_turn: each owner in turn rather than one at random each time."""
        self.url, self.owners, self.rate, self.label = url, owners, rate, label
        self.routing_key, self.in_turn = routing_key, in_turn
        self.total = int(rate * seconds)
        self.owner_of = {}  # seq -> owner
        self.confirmed, self.nacked, self.returned = set(), set(), set()
        self._pending = deque()  # (delivery tag, seq), oldest first
        self._channel = None
        self._error = None
        self.first = self.last = None

    def run(self, timeout):
        params = rabbit.connection_parameters(self.url, f"bench-publisher-{self.label}")[0]  # one node: the first answering is enough
        self._connection = pika.SelectConnection(
            params, on_open_callback=lambda c: c.channel(on_open_callback=self._on_channel),
            on_open_error_callback=self._on_failure, on_close_callback=lambda c, r: c.ioloop.stop())
        self._connection.ioloop.call_later(timeout, lambda: self._stop(f"gave up after {timeout}s"))
        self._connection.ioloop.start()
        if self._error:
            raise RuntimeError(f"publisher: {self._error}")
        return self

    def _on_failure(self, connection, reason):
        self._error = reason
        connection.ioloop.stop()

    def _stop(self, error=None):
        self._error = self._error or error
        if self._connection.is_open:
            self._connection.close()

    def _on_channel(self, channel):
        self._channel = channel
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda _ok: self._start())

    def _start(self):
        self._t0 = time.monotonic()
        self._tag = 0
        self._tick()

    def _tick(self):
        due = min(self.total, int((time.monotonic() - self._t0) * self.rate) + 1)
        while len(self.owner_of) < due:
            seq = len(self.owner_of)
            owner = self.owners[seq % len(self.owners)] if self.in_turn else random.choice(self.owners)
            self.owner_of[seq] = owner
            now = time.time()
            body = contract.envelope(owner, {"seq": seq, "t": now, "trip": sample_trip(owner)})
            self._channel.basic_publish(contract.TRIP_EXCHANGE, self.routing_key, body,
                                        rabbit.message_properties(self.routing_key, owner), mandatory=True)
            self._tag += 1
            self._pending.append((self._tag, seq))
            self.first = self.first or now
            self.last = now
        if len(self.owner_of) < self.total:
            self._connection.ioloop.call_later(0.001, self._tick)
        else:
            self._maybe_done()

    def _on_confirm(self, frame):
        method = frame.method
        into = self.confirmed if isinstance(method, pika.spec.Basic.Ack) else self.nacked
        if method.multiple:
            while self._pending and self._pending[0][0] <= method.delivery_tag:
                into.add(self._pending.popleft()[1])
        else:
            for i, (tag, seq) in enumerate(self._pending):
                if tag == method.delivery_tag:
                    del self._pending[i]
                    into.add(seq)
                    break
        self._maybe_done()

    def _on_return(self, _channel, _method, _props, body):
        self.returned.add(json.loads(body)["data"]["seq"])

    def _maybe_done(self):
        if len(self.owner_of) == self.total and not self._pending:
            self._stop()

    @property
    def achieved_rate(self):
        return (len(self.owner_of) - 1) / (self.last - self.first) if len(self.owner_of) > 1 else 0.0

    @property
    def delivered(self):
        """The seqs the broker took and routed: the ones that must arrive."""
        return self.confirmed - self.returned


def check(publisher, rows):
    """Latencies (ms) and the exactly-once check of rows [user, seq, published, received]."""
    counts = Counter(seq for _user, seq, _t, _r in rows)
    wrong = sum(1 for user, seq, _t, _r in rows if publisher.owner_of.get(seq) != user)
    expected = publisher.delivered
    latencies = sorted((received - published) * 1000 for _u, _s, published, received in rows)
    start = min((published for _u, _s, published, _r in rows), default=0.0)
    by_second = {}
    for _u, _s, published, received in rows:
        by_second.setdefault(int(published - start), []).append((received - published) * 1000)
    return {
        "by_second": [(second, percentile(v, 50), percentile(v, 99))
                      for second, v in sorted(by_second.items())],
        "published": len(publisher.owner_of), "confirmed": len(publisher.confirmed),
        "nacked": len(publisher.nacked), "unroutable": len(publisher.returned),
        "received": len(rows), "lost": len(expected - set(counts)),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "wrong_rider": wrong, "unexpected": len(set(counts) - expected),
        "rate": publisher.achieved_rate,
        "p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99), "max": latencies[-1] if latencies else float("nan"),
    }


def show(name, r):
    seconds = " ".join(f"{second}s:{p50:.0f}/{p99:.0f}" for second, p50, p99 in r["by_second"])
    return (f"  {name}: p50 {r['p50']:.1f} ms, p90 {r['p90']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms; "
            f"published {r['published']} at {r['rate']:.0f}/s, confirmed {r['confirmed']}, nacked {r['nacked']}, "
            f"unroutable {r['unroutable']}, received {r['received']}, lost {r['lost']}, "
            f"duplicates {r['duplicates']}, at the wrong rider {r['wrong_rider']}\n"
            f"    p50/p99 ms by second of publishing: {seconds}")


def floor_phase(bench, owners, rate, seconds):
    out = os.path.join(bench.tmp, "floor.json")
    floor = bench.python("bench.floor", "--expect", str(int(rate * seconds)), "--out", out, name="floor")
    if read_json_line(floor, 30).get("event") != "ready":
        raise RuntimeError("the floor consumer did not start")
    with CpuMeter([]) as cpu:
        publisher = PacedPublisher(bench.amqp_url, owners, rate, seconds, "floor", floor_module.ROUTING_KEY)
        publisher.run(seconds * 3 + 30)
        done = read_json_line(floor, 60)
    floor.wait(30)
    with open(out) as f:
        rows = json.load(f)
    print(f"  floor consumer: {done}", flush=True)
    return {**check(publisher, rows), "cpu": cpu.per_event_ms(len(publisher.owner_of), done["cpu_seconds"])}


def gateway_phase(bench, fleets, owners, rate, seconds, profile=None, workers=()):
    """Publishes to owners, who hold their sockets in one or more client
    fleets, until every event arrived; the exactly-once check, latencies and
    CPU per event of the broker and the workers."""
    spies = [bench.spy(pid, f"{profile}.{pid}.txt", seconds) for pid in workers] if profile else []
    with CpuMeter(workers) as cpu:
        publisher = PacedPublisher(bench.amqp_url, owners, rate, seconds, "gateway", ROUTING_KEY)
        publisher.run(seconds * 3 + 30)
        expected = len(publisher.delivered)
        deadline, last, seen = time.monotonic() + 60, time.monotonic(), -1
        while time.monotonic() < deadline:  # drain: until all arrived, or nothing more for 5 s
            received = sum(fleet.command("status")["received"] for fleet in fleets)
            if received >= expected:
                break
            if received != seen:
                last, seen = time.monotonic(), received
            elif time.monotonic() - last > 5:
                break
            time.sleep(0.2)
    time.sleep(1)  # a late duplicate would show up here
    for spy in spies:
        spy.wait(30)
    rows = received_rows(bench, fleets, "gateway")
    return {**check(publisher, rows), "cpu": cpu.per_event_ms(len(publisher.owner_of))}


def received_rows(bench, fleets, label):
    """Every event the client fleets received: [user, seq, published, received] rows."""
    rows = []
    for n, fleet in enumerate(fleets):
        out = os.path.join(bench.tmp, f"{label}-{n}.json")
        fleet.command(f"dump {out}")
        with open(out) as f:
            rows += json.load(f)
    return rows


def serving(gateway, riders, workers):
    """Waits until the gateway's workers say they serve every rider (the
    stats of whichever worker answers: asked until every one has)."""
    latest = {}

    def every_rider_served():
        stats = gateway.get_json("/live/stats")
        latest[stats["pid"]] = stats["consuming"]
        return len(latest) >= workers and sum(latest.values()) >= riders

    wait_until(every_rider_served, 120, "every rider to be served", interval=0.05)


def run(riders=1000, rate=1000, seconds=10, workers=1, profile=None, conf="gunicorn.conf.py"):
    print(f"fan-out: {riders} riders on {workers} gevent worker(s), {rate} events/s for {seconds} s; {machine()}",
          flush=True)
    print(f"  machine before: {load()}", flush=True)
    with Bench("fanout") as bench:
        gateway = bench.gunicorn("app:app", workers=workers, name="gateway", conf=conf, RECONNECT_WINDOW="10")
        fleet = bench.clients(gateway.ws_base + "/ws/riders?userID=", "fan-", riders, name="clients")
        report = fleet.wait_connected(600)
        if report["open"] != riders:
            raise RuntimeError(f"not every rider connected: {report}")
        serving(gateway, riders, workers)
        print(f"  {riders} riders connected and served", flush=True)

        floor = floor_phase(bench, [f"floor-{n}" for n in range(riders)], rate, seconds)
        print(show("floor (raw pika)", floor), flush=True)

        print(f"  gateway phase starts at {time.time():.3f}", flush=True)
        ours = gateway_phase(bench, [fleet], [f"fan-{n}" for n in range(riders)], rate, seconds, profile,
                             gateway.workers())
        print(show("gateway (publish to socket)", ours), flush=True)
        status = fleet.command("status")

    print()
    print(f"fan-out results ({riders} riders, {workers} gevent worker(s), {rate}/s for {seconds} s)")
    print(f"  gateway publish-to-socket: p50 {ours['p50']:.1f} ms, p99 {ours['p99']:.1f} ms")
    print(f"  floor, raw pika publish-to-consume: p50 {floor['p50']:.1f} ms, p99 {floor['p99']:.1f} ms")
    print(f"  ours/floor: p50 {ours['p50'] / floor['p50']:.2f}x, p99 {ours['p99'] / floor['p99']:.2f}x; "
          f"target p99 within {TARGET_RATIO:.0f}x: {'met' if ours['p99'] <= TARGET_RATIO * floor['p99'] else 'MISSED'}")
    print(f"  CPU per event: broker {ours['cpu']['broker']:.3f} ms ({ours['cpu']['broker_net']:.3f} ms net of its "
          f"{ours['cpu']['idle_broker_cores']:.2f} cores at rest), gateway worker(s) {ours['cpu']['ours']:.3f} ms; "
          f"floor: broker {floor['cpu']['broker']:.3f} ms ({floor['cpu']['broker_net']:.3f} net), "
          f"raw pika consumer {floor['cpu']['ours']:.3f} ms; broker ours/floor (net) "
          f"{ours['cpu']['broker_net'] / max(floor['cpu']['broker_net'], 1e-9):.2f}x")
    print(f"  machine after: {load()}")
    print(f"  exactly once: lost {ours['lost']}, duplicates {ours['duplicates']}, at the wrong rider "
          f"{ours['wrong_rider']} (of {ours['confirmed'] - ours['unroutable']} confirmed and routed); "
          f"sockets still open {status['open']}, closed by the server {status['closed_by_server']}")
    return {"gateway": ours, "floor": floor}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--riders", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=1, help="gateway gevent workers (WEB_CONCURRENCY)")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="py-spy each worker during the gateway phase: PREFIX.<pid>.txt, collapsed stacks")
    parser.add_argument("--conf", default="gunicorn.conf.py", help="the gateway's gunicorn config file")
    args = parser.parse_args()
    run(args.riders, args.rate, args.seconds, args.workers, args.profile, args.conf)


if __name__ == "__main__":
    main()
