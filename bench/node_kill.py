"""A broker node killed mid-ride: every process of RideSync on a 3-node
RabbitMQ cluster (bench/cluster.py; WORK_QUEUE_TYPE=quorum, the streams
replicated on every node), rides in flight, and a node SIGKILLed in the
middle of them (--kill): by default the one holding most of the gateway's
own queues (a classic worker queue lives on one node, a quorum one is led
from one), else the notifications stream's leader.

- Rides: --rides riders and as many drivers, each on a v2 socket through one
  gateway (2 gevent workers). A rider previews, starts, and follows its trip
  to `completed`, then a new rider does the same; a driver accepts what it is
  offered and drives it through arrived, started, completed. A phone whose
  socket closes opens another and reads `trip.state`. Each event a phone
  waits for is received, or recovered (a later `trip.state` shows the step),
  or lost.
- Publisher-confirmed events: --riders more riders (bench.clients) get
  events published at --rate with publisher confirms, all through the kill;
  lost = confirmed and routed, never received.
- Commands: every start the gateway answered 201 (its event confirmed), and
  every accept and step it took without an `error` frame, must show in the
  trip's record at the end.

    python -m bench.node_kill --rides 6 --riders 100 --rate 100 --before 10 --after 20
"""
import argparse
import json
import os
import queue
import threading
import time
from collections import Counter

import requests
import websocket

from bench.cluster import Cluster
from bench.fanout import ROUTING_KEY, PacedPublisher, check, received_rows, serving
from bench.support import Bench, load, machine, percentile
from ridesync import contract
from ridesync.ride import lifecycle
from tests.support import DESTINATION_JSON, PICKUP_JSON

TIMEOUT = 30.0  # seconds a phone waits for one event
PAUSE = 0.5  # seconds a driver takes between steps
ORDER = ["pending", "accepted", "arrived", "in_progress", "completed"]
STATUS_OF = {"trip.event.created": "pending", "trip.event.driver_assigned": "accepted",
             "driver.cmd.trip_request": "pending", "trip.event.driver_arrived": "arrived",
             "trip.event.started": "in_progress", "trip.event.completed": "completed"}


class Phone:
    """A v2 socket of one user, read by a thread of its own into a queue,
    opened again (and `trip.state` read) whenever the server closes it."""

    def __init__(self, who, url, started):
        self.who, self.url, self.started = who, url, started
        self.saw = []  # what it saw, in order: "type" or "type(status)"
        self.reconnects = 0
        self.frames = queue.Queue()
        self.early = []  # frames read while waiting for another
        self.closing = False
        self.ws = self._open()
        threading.Thread(target=self._read, daemon=True).start()

    def _open(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                return websocket.create_connection(self.url, timeout=TIMEOUT, subprotocols=["ridesync.v2"])
            except (OSError, websocket.WebSocketException):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _read(self):
        while not self.closing:
            try:
                frame = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            except (OSError, websocket.WebSocketException, ValueError):
                if self.closing:
                    return
                self.saw.append(f"[socket closed at {time.monotonic() - self.started:.1f}s]")
                self.reconnects += 1
                self.ws = self._open()
                continue
            data = frame.get("data") or {}
            self.saw.append(frame["type"] + (f"({data.get('status')})" if frame["type"] == "trip.state" and data
                                             else ""))
            self.frames.put(frame)

    def send(self, kind, data):
        self.ws.send(json.dumps({"type": kind, "data": data}))

    def next(self, timeout=TIMEOUT):
        return self.frames.get(timeout=timeout)

    def expect(self, kind, trip_id):
        """'received' when the event for this trip comes, 'recovered' when a
        `trip.state` shows the trip at or past its step, 'lost' after TIMEOUT;
        an `error` frame is returned as it is, for the caller to act on.
        Other frames are kept for later: two services' events may cross."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            for frame in self.early:
                outcome = _answers(frame, kind, trip_id)
                if outcome is not None:
                    self.early.remove(frame)
                    return outcome
            try:
                self.early.append(self.next(max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return "lost"

    def close(self):
        self.closing = True
        self.ws.close()


def _answers(frame, kind, trip_id):
    data = frame.get("data") or {}
    if frame["type"] == "error":
        return frame
    if frame["type"] == kind and trip_id in (data.get("id"), data.get("tripID")):
        return "received"
    if frame["type"] == "trip.event.no_drivers_found" and data.get("id") == trip_id:
        return "no driver"
    if frame["type"] == "trip.state" and data and data.get("id") == trip_id and (
            _at_least(data, trip_id, STATUS_OF[kind]) if kind in STATUS_OF else "payment" in data):
        return "recovered"
    return None


def _at_least(trip, trip_id, status):
    return bool(trip) and trip.get("id") == trip_id and trip.get("status") in ORDER \
        and ORDER.index(trip["status"]) >= ORDER.index(status)


class Ledger:
    """What every phone waited for and how it came, and what the gateway acknowledged."""

    def __init__(self):
        self.lock = threading.Lock()
        self.outcomes = Counter()
        self.lost = []  # (who, kind, trip id)
        self.acknowledged = {}  # trip id -> the furthest status a command took it to, unrefused
        self.riders = {}  # trip id -> its rider
        self.retries = Counter()
        self.phones = []
        self.rides = Counter()

    def outcome(self, phone, kind, trip_id, outcome):
        with self.lock:
            self.outcomes[outcome] += 1
            if outcome == "lost":
                self.lost.append((phone.who, kind, trip_id))

    def acknowledge(self, trip_id, status, rider_id):
        with self.lock:
            self.acknowledged[trip_id] = status
            self.riders[trip_id] = rider_id


class Refused(Exception):
    """A 4xx answer; after_retry: to a call made again after a 5xx or a failure."""

    def __init__(self, answer, after_retry):
        super().__init__(answer)
        self.after_retry = after_retry


def http(method, url, ledger, what, **body):
    """The JSON answer's data; retried (and counted) while the answer is a
    5xx or the call fails; Refused for a 4xx."""
    for attempt in range(20):
        try:
            answer = requests.request(method, url, data=json.dumps(body) if body else None, timeout=TIMEOUT)
            if answer.status_code < 400:
                return answer.json()["data"]
            if answer.status_code < 500:
                raise Refused(f"{answer.status_code} {answer.text.strip()}", after_retry=attempt > 0)
        except (requests.ConnectionError, requests.Timeout):
            pass
        ledger.retries[what] += 1
        time.sleep(0.5)
    raise RuntimeError(f"{method} {url} failed 20 times")


def rider_loop(base, n, ledger, stop, started):
    ws_base = base.replace("http", "ws", 1)
    ride = 0
    while not stop.is_set():
        rider_id = f"rider-{n}-{ride}"
        ride += 1
        phone = Phone(rider_id, f"{ws_base}/ws/riders?userID={rider_id}", started)
        ledger.phones.append(phone)
        try:
            phone.next()  # trip.state
            follow(phone, start(base, rider_id, ledger), ledger)
        except Exception as exc:  # counted as a failed ride; the next rider goes on
            ledger.rides[f"failed: {exc!r:.200}"] += 1
        finally:
            phone.close()


def start(base, rider_id, ledger):
    """The id of the rider's new trip. A start whose answer was a 5xx may
    still have been made (the gateway's deadline passed while TripService
    waited on the broker): its retry is refused, and the rider reads the trip
    from GET /trip/current, as a phone would."""
    preview = http("POST", f"{base}/trip/preview", ledger, "preview", userID=rider_id, pickup=PICKUP_JSON,
                   destination=DESTINATION_JSON)
    fare = next(f for f in preview["rideFares"] if f["packageSlug"] == "sedan")
    try:
        trip = http("POST", f"{base}/trip/start", ledger, "start", userID=rider_id, rideFareID=fare["id"])["trip"]
    except Refused as refused:
        if not refused.after_retry:
            raise
        ledger.rides["started, the answer lost: read from GET /trip/current"] += 1
        return http("GET", f"{base}/trip/current?userID={rider_id}", ledger, "current")["id"]
    ledger.acknowledge(trip["id"], "pending", rider_id)
    return trip["id"]


def follow(phone, trip_id, ledger):
    """A rider's trip, event by event, until it ends."""
    for kind in ("trip.event.created", "trip.event.driver_assigned", "payment.event.session_created",
                 "trip.event.driver_arrived", "trip.event.started", "trip.event.completed"):
        outcome = phone.expect(kind, trip_id)
        if outcome == "no driver":
            ledger.rides["no driver found"] += 1
            return
        ledger.outcome(phone, kind, trip_id, outcome if isinstance(outcome, str) else "error frame")
    ledger.rides["completed, seen by the rider"] += 1


def driver_loop(base, n, ledger, stop, started):
    ws_base = base.replace("http", "ws", 1)
    driver_id = f"driver-{n}"
    phone = Phone(driver_id, f"{ws_base}/ws/drivers?userID={driver_id}&packageSlug=sedan", started)
    ledger.phones.append(phone)
    try:
        registered = phone.next()["data"]
        while not stop.is_set():
            try:
                frame = phone.next(1.0)
            except queue.Empty:
                continue
            if frame["type"] == "driver.cmd.trip_request":
                drive(phone, frame["data"], registered, ledger)
    except Exception as exc:  # counted; this driver goes offline
        ledger.rides[f"driver failed: {exc!r:.200}"] += 1
    finally:
        phone.close()


def drive(phone, trip, registered, ledger):
    """Accepts the trip and drives it to `completed`; a command answered
    with an `error` frame is sent again."""
    steps = [("driver.cmd.trip_accept", "trip.event.driver_assigned", "accepted"),
             ("driver.cmd.trip_arrived", "trip.event.driver_arrived", "arrived"),
             ("driver.cmd.trip_started", "trip.event.started", "in_progress"),
             ("driver.cmd.trip_completed", "trip.event.completed", "completed")]
    for command, event, status in steps:
        time.sleep(PAUSE)
        for _ in range(20):
            phone.send(command, {"tripID": trip["id"], "riderID": trip["userID"], "driver": registered})
            outcome = phone.expect(event, trip["id"])
            if isinstance(outcome, str):
                break
            if outcome["data"].get("code") == "failed_precondition":  # taken by another driver, or cancelled
                return
            ledger.retries[command] += 1
            time.sleep(0.5)
        else:
            ledger.outcome(phone, event, trip["id"], "error frame")
            return
        ledger.outcome(phone, event, trip["id"], outcome)
        ledger.acknowledge(trip["id"], status, trip["userID"])


def victim_node(cluster, kill):
    """The node to kill, and what it holds of the gateway's. kill="queues":
    the node holding most of the gateway's own queues (a classic one lives
    on one node; a quorum one's leader), else (none: every worker reads the
    stream) the notifications stream's leader; kill="stream": that leader."""
    rows = cluster.nodes[0].ctl("list_queues", "--no-table-headers", "name", "type", "pid", "leader")
    held = {node.name: [] for node in cluster.nodes}
    for name, kind, pid, leader in (line.split("\t") for line in rows.splitlines() if line.count("\t") == 3):
        if not name.startswith("gateway."):
            continue
        if kind == "classic":
            held[pid.lstrip("<").split(".")[0]].append(name)
        elif kind == "quorum" and leader in held:
            held[leader].append(f"{name} (quorum leader)")
        elif leader in held:
            held[leader].append(f"{name} ({kind} leader)")
    own = {node: sum(1 for name in names if not name.endswith("(stream leader)")) for node, names in held.items()}
    if kill == "queues" and any(own.values()):
        name = max(own, key=own.get)
    else:
        name = next(node for node, names in held.items() if f"{contract.NOTIFICATIONS_STREAM} (stream leader)" in names)
    return next(node for node in cluster.nodes if node.name == name), held[name]


def start_ridesync(bench):
    """Every process of RideSync on the bench's broker: the gateway."""
    _, trip_addr = bench.service("ridesync.trip", "trip", TRIP_SERVICE_ADDR="{address}", OSRM_ENABLED="false",
                                 DATABASE_URL=f"sqlite:///{bench.tmp}/trips.db", LOG_LEVEL="INFO")
    _, driver_addr = bench.service("ridesync.driver", "driver", DRIVER_SERVICE_ADDR="{address}",
                                   TRIP_SERVICE_ADDR=trip_addr, LOG_LEVEL="INFO")
    bench.python("ridesync.payment", name="payment")
    return bench.gunicorn("app:app", workers=2, TRIP_SERVICE_ADDR=trip_addr, DRIVER_SERVICE_ADDR=driver_addr,
                          OFFER_TIMEOUT="60", PREVIEW_RATE="1000", PREVIEW_BURST="1000", LOG_LEVEL="INFO")


def run(rides=6, riders=100, rate=100.0, before=10.0, after=20.0, kill="queues"):
    print(f"node kill: {rides} rides at a time and {riders} riders getting {rate:.0f} confirmed events/s, through one "
          f"gateway (2 workers) on a 3-node cluster; a node SIGKILLed ({kill}) after {before:.0f} s, "
          f"{after:.0f} s more; {machine()}", flush=True)
    print(f"  machine before: {load()}", flush=True)
    os.environ["WORK_QUEUE_TYPE"] = "quorum"  # for the bench's own declaration and every process it starts
    ledger, stop = Ledger(), threading.Event()
    with Cluster(3) as cluster, Bench("node-kill", cluster.url) as bench:
        gateway = start_ridesync(bench)
        fleet = bench.clients(gateway.ws_base + "/ws/riders?userID=", "fleet-", riders, name="fleet")
        if fleet.wait_connected(120)["open"] != riders:
            raise RuntimeError("not every rider connected")
        serving(gateway, riders, 2)
        victim, victim_held = victim_node(cluster, kill)
        survivor = next(node for node in cluster.nodes if node is not victim)
        publisher = PacedPublisher(survivor.url, [f"fleet-{n}" for n in range(riders)], rate, before + after,
                                   "confirmed", ROUTING_KEY)
        publishing = threading.Thread(target=publisher.run, args=(before + after + 60,))
        started = time.monotonic()
        publishing.start()
        phones = [threading.Thread(target=loop, args=(gateway.base, n, ledger, stop, started), daemon=True)
                  for loop in (driver_loop, rider_loop) for n in range(rides)]
        for thread in phones:
            thread.start()
        time.sleep(before)
        victim.kill()
        killed_at, killed_wall = time.monotonic() - started, time.time()
        for phone in list(ledger.phones):
            if not phone.closing:
                phone.saw.append("[NODE KILLED]")
        print(f"  killed {victim.name} at {killed_at:.1f} s; it held {victim_held}", flush=True)
        time.sleep(after)
        stop.set()
        for thread in phones:
            thread.join(TIMEOUT * 8)
        publishing.join(120)
        confirmed = received(bench, fleet, publisher, killed_wall)
        records = final_records(gateway.base, ledger)
        running = cluster.running_nodes(via=survivor)
        leaders = survivor.ctl("list_queues", "--no-table-headers", "name", "type", "leader", "members")
        print(f"  what the processes' logs say of the kill: {failovers(bench)}")
        if not report(ledger, confirmed, records, running, leaders, victim, killed_at):
            raise SystemExit("node kill: something acknowledged was lost (the logs stay, see above)")


def received(bench, fleet, publisher, killed_wall):
    """The confirmed events' exactly-once check, once every one arrived or none came for 10 s; and their
    publish-to-socket p99 before the kill (the baseline) and after it."""
    expected, last, seen = len(publisher.delivered), time.monotonic(), -1
    while (count := fleet.command("status")["received"]) < expected and time.monotonic() - last < 10:
        if count != seen:
            last, seen = time.monotonic(), count
        time.sleep(0.2)
    rows = received_rows(bench, [fleet], "fleet")
    split = {"before": [], "after": []}
    for _user, _seq, sent, got in rows:
        split["before" if sent < killed_wall else "after"].append(1000 * (got - sent))
    return {**check(publisher, rows), **{f"p99_{when}": percentile(ms, 99) for when, ms in split.items()}}


def failovers(bench):
    """By process: broker connections lost (and made again on another node), publishes given up for want of a confirm."""
    seen = {}
    for name in sorted(os.listdir(bench.tmp)):
        if name.endswith(".log"):
            with open(os.path.join(bench.tmp, name), errors="replace") as f:
                text = f.read()
            lost = sum(text.count(words) for words in ("lost the broker", "lost its connection", "feed channel closed"))
            if lost:
                seen[name[:-4]] = f"{lost} connections lost, {text.count('ConfirmTimeout')} lines of a confirm given up"
    return seen


def final_records(base, ledger):
    """Each acknowledged trip's status in its record: (trip id, acknowledged, recorded)."""
    return [(trip_id, status, requests.get(f"{base}/trip/{trip_id}", params={"userID": ledger.riders[trip_id]},
                                           timeout=TIMEOUT).json()["data"]["status"])
            for trip_id, status in ledger.acknowledged.items()]


def _kept(acked, recorded):
    """Whether a trip's record holds the last command the gateway took for it: at or past its step, or a
    started trip no driver took (its record moved on to no_drivers_found)."""
    if recorded == lifecycle.NO_DRIVERS_FOUND:
        return acked == lifecycle.PENDING
    return recorded in ORDER and ORDER.index(recorded) >= ORDER.index(acked)


def report(ledger, confirmed, records, running, leaders, victim, killed_at):
    """Prints what each phone saw and the results; whether nothing acknowledged was lost."""
    print()
    print("what each phone saw:")
    for phone in ledger.phones:
        print(f"  {phone.who}: {', '.join(kind.replace('trip.event.', '') for kind in phone.saw)}")
    behind = [(trip, acked, recorded) for trip, acked, recorded in records if not _kept(acked, recorded)]
    print()
    print(f"node-kill results ({victim.name} SIGKILLed at {killed_at:.1f} s; {running} of 3 nodes running after)")
    print(f"  rides: {dict(ledger.rides)}; events the phones waited for: {dict(ledger.outcomes)}; "
          f"lost {len(ledger.lost)} {ledger.lost[:10]}")
    print(f"  phones: {len(ledger.phones)}, sockets closed by the server and opened again: "
          f"{sum(phone.reconnects for phone in ledger.phones)}; calls and commands retried: {dict(ledger.retries)}")
    print(f"  commands acknowledged (starts answered 201, steps unrefused): {len(records)} trips; behind their "
          f"record: {len(behind)} {behind[:10]}")
    print(f"  confirmed events: published {confirmed['published']}, confirmed {confirmed['confirmed']}, nacked "
          f"{confirmed['nacked']}, received {confirmed['received']}, lost {confirmed['lost']}, duplicates "
          f"{confirmed['duplicates']}, at the wrong rider {confirmed['wrong_rider']}; publish-to-socket p50 "
          f"{confirmed['p50']:.0f} ms, p99 {confirmed['p99']:.0f} ms, max {confirmed['max']:.0f} ms; p99 published "
          f"before the kill {confirmed['p99_before']:.0f} ms (the baseline), after it {confirmed['p99_after']:.0f} ms "
          f"({confirmed['p99_after'] / confirmed['p99_before']:.1f}x)")
    print(f"  queues after: " + "; ".join(" ".join(line.split("\t")[:3]) for line in leaders.splitlines()))
    print(f"  machine after: {load()}")
    return not (ledger.lost or behind or confirmed["lost"] or any("failed" in kind for kind in ledger.rides))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rides", type=int, default=6, help="riders (and drivers) riding at once")
    parser.add_argument("--riders", type=int, default=100, help="riders getting the confirmed events")
    parser.add_argument("--rate", type=float, default=100, help="confirmed events a second")
    parser.add_argument("--before", type=float, default=10, help="seconds of rides before the kill")
    parser.add_argument("--after", type=float, default=20, help="seconds of rides after it")
    parser.add_argument("--kill", choices=("queues", "stream"), default="queues",
                        help="queues: the node holding most of the gateway's own queues (else the stream's leader); "
                             "stream: the notifications stream's leader")
    args = parser.parse_args()
    run(args.rides, args.riders, args.rate, args.before, args.after, args.kill)


if __name__ == "__main__":
    main()
