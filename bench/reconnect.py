"""Riders coming back: N riders connecting to one worker at once (each
client process keeps --concurrency handshakes in flight), timed from when
the started client processes are told to go until every one is upgraded, then one event published to each, timed until every one
has arrived. Then a deploy: gunicorn's HUP, the old worker drains (every
socket closed 1001, every rider away), an event is published to each rider
while away, and the same riders connect to the new worker: timed until
every one is upgraded, until each has the event published while it was
away (exactly once), and until each has one more published after. The
baseline, in the same run: the same riders connecting to a bare flask-sock
echo socket (bench/bare_app.py). The worker's CPU seconds in each connect
are printed; --profile PREFIX also records the worker with py-spy (pip
install py-spy) in each connect, and the new one from its boot to its
connect, as collapsed stacks (PREFIX.fresh.txt, PREFIX.boot.txt,
PREFIX.back.txt).

    python -m bench.reconnect --riders 10000
"""
import argparse
import signal
import time

from bench.fanout import ROUTING_KEY, PacedPublisher, check, received_rows, serving
from bench.support import Bench, broker_pid, cpu_seconds, load, machine, wait_until

TARGET_SECONDS = 15.0
CLIENT_PROCESSES = 4
WINDOW = 60  # RECONNECT_WINDOW: the riders come back well within it
STALL = 20.0  # seconds without one more event: what has not come is missing
LIMIT = 120.0  # seconds a phase is waited for at most: what has not come by then is late (counted as lost)
NOT_BOUND = "has not bound the user within MARKER_WAIT"  # the worker's warning (routes.py)
SPY_LONGEST = 600  # seconds; a py-spy record is stopped (SIGINT) when its phase ends


def connect(bench, server, label, riders, concurrency):
    """Seconds from the go of the started client processes until every
    rider is upgraded; the client fleets; the CPU seconds their processes
    used meanwhile (on the same cores as the server); when they went (monotonic)."""
    per_fleet = -(-riders // CLIENT_PROCESSES)
    fleets = [bench.clients(server.ws_base + "/ws/riders?userID=", f"{label}-{n}-", min(per_fleet, riders - n * per_fleet),
                            concurrency, name=f"{label}-clients-{n}", wait_for_go=True) for n in range(CLIENT_PROCESSES)]
    for fleet in fleets:
        fleet.wait_ready(60)
    cpu_before = sum(cpu_seconds(fleet.proc.pid) for fleet in fleets)
    started = time.monotonic()
    for fleet in fleets:
        fleet.go()
    reports = [fleet.wait_connected(900) for fleet in fleets]
    seconds = time.monotonic() - started
    upgraded = sum(report["open"] for report in reports)
    if upgraded != riders:
        raise RuntimeError(f"{label}: {upgraded} of {riders} upgraded: {reports}")
    return seconds, fleets, sum(cpu_seconds(fleet.proc.pid) for fleet in fleets) - cpu_before, started


class Spied:
    """A phase of the worker: its CPU seconds and the broker's, the upgrades
    that outwaited MARKER_WAIT (the worker's log says so), and its py-spy
    record if profile (a file prefix) is given."""

    def __init__(self, bench, gateway, pid, profile, phase):
        self.pid, self._gateway, self._broker = pid, gateway, broker_pid()
        self._before = self._now()
        self._spy = bench.spy(pid, f"{profile}.{phase}.txt", SPY_LONGEST) if profile else None

    def done(self):
        """What it used since, as text."""
        worker, broker, late = (after - before for after, before in zip(self._now(), self._before))
        if self._spy is not None:
            self._spy.send_signal(signal.SIGINT)  # py-spy writes what it recorded
            self._spy.wait(30)
        return f"CPU: worker {worker:.1f} s, broker {broker:.1f} s; {late} upgrades past MARKER_WAIT"

    def _now(self):
        return cpu_seconds(self.pid), cpu_seconds(self._broker), self._gateway.output().count(NOT_BOUND)


def owners_of(fleets):
    return [f"rider-{n}-{i}" for n, fleet in enumerate(fleets) for i in range(fleet.count)]


def publish_one_each(bench, owners, rate, label):
    return PacedPublisher(bench.amqp_url, owners, rate, len(owners) / rate, label, ROUTING_KEY, in_turn=True).run(120)


def received(fleets):
    return sum(fleet.command("status")["received"] for fleet in fleets)


def received_by(fleets, count, started, what):
    """Seconds from started until the fleets received count events in all;
    if they stop short (nothing more for STALL seconds, or LIMIT seconds
    gone), says so and returns when the last one came (the exactly-once
    check counts what is missing)."""
    called = last = time.monotonic()
    seen = received(fleets)
    while seen < count:
        time.sleep(0.2)
        now = received(fleets)
        if now != seen:
            last, seen = time.monotonic(), now
        elif time.monotonic() - last > STALL or time.monotonic() - called > LIMIT:
            print(f"  {what}: {seen} of {count} received, {time.monotonic() - called:.0f} s waited", flush=True)
            break
    return last - started


def served(gateway, riders):
    """Until the worker says it serves every rider (LIMIT s at most): how many it serves."""
    try:
        serving(gateway, riders, workers=1)
    except AssertionError:  # not all within the time: the run goes on and counts what comes late
        pass
    return gateway.get_json("/live/stats")["consuming"]


def deploy(bench, gateway, profile):
    """gunicorn's HUP: a new worker boots, the old one drains and exits.
    Seconds it took, and the new worker Spied from its boot on."""
    [old] = gateway.workers()
    started = time.monotonic()
    gateway.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: set(gateway.workers()) - {old}, 60, "the new worker to boot", interval=0.05)
    [new] = set(gateway.workers()) - {old}
    boot = Spied(bench, gateway, new, profile, "boot")
    wait_until(lambda: old not in gateway.workers(), 120, "the old worker to drain and exit", interval=0.2)
    gateway.wait_ready(1)
    return time.monotonic() - started, boot


def run(riders=10_000, concurrency=250, rate=5000, profile=None):
    print(f"reconnect: {riders} riders at once to one gevent worker, then again after a deploy; {machine()}",
          flush=True)
    print(f"  machine before: {load()}", flush=True)
    with Bench("reconnect") as bench:
        bare_server = bench.gunicorn("bench.bare_app:app", name="bare")
        bare_seconds, fleets, bare_clients, _ = connect(bench, bare_server, "bare", riders, concurrency)
        for fleet in fleets:
            fleet.stop()
        bare_server.stop()
        print(f"  bare flask-sock echo: {riders} upgraded in {bare_seconds:.1f} s, clients' CPU {bare_clients:.1f} s",
              flush=True)

        gateway = bench.gunicorn("app:app", name="gateway", RECONNECT_WINDOW=str(WINDOW))
        [worker] = gateway.workers()
        spied = Spied(bench, gateway, worker, profile, "fresh")
        upgraded, fleets, fresh_clients, started = connect(bench, gateway, "rider", riders, concurrency)
        fresh_cpu = f"{spied.done()}; clients' CPU {fresh_clients:.1f} s"
        fresh_served = served(gateway, riders)
        owners = owners_of(fleets)
        publish_one_each(bench, owners, rate, "fresh")
        receiving = received_by(fleets, riders, started, "every rider's event")
        fresh_received = received(fleets)
        print(f"  gateway, fresh: {riders} upgraded in {upgraded:.1f} s, {fresh_served} served, each with an event by "
              f"{receiving:.1f} s", flush=True)

        drained, boot = deploy(bench, gateway, profile)
        for fleet in fleets:
            fleet.stop()
        away = publish_one_each(bench, owners, rate, "away")
        boot_cpu = boot.done()
        spied = Spied(bench, gateway, boot.pid, profile, "back")
        boundary = time.time()  # events published before it: while away
        back, fleets, back_clients, started = connect(bench, gateway, "rider", riders, concurrency)
        back_cpu = f"{spied.done()}; clients' CPU {back_clients:.1f} s"
        caught_up = received_by(fleets, riders, started, "every rider's event published while away")
        back_served = served(gateway, riders)
        before = received(fleets)  # counted before the publish: its first events arrive while it publishes
        later = publish_one_each(bench, owners, rate, "later")
        receiving_back = received_by(fleets, before + riders, started, "every rider's event published after")
        time.sleep(1)  # a late duplicate would show up here
        rows = received_rows(bench, fleets, "back")
        for fleet in fleets:
            fleet.stop()
    away_check = check(away, [row for row in rows if row[2] < boundary])
    later_check = check(later, [row for row in rows if row[2] >= boundary])

    print()
    print(f"reconnect results ({riders} riders, one gevent worker, {CLIENT_PROCESSES} client processes)")
    print(f"  fresh: all upgraded in {upgraded:.1f} s ({riders / upgraded:.0f} riders/s), {fresh_served} served; "
          f"{fresh_received} of {riders} riders' events received by {receiving:.1f} s after the first connect; "
          f"bare echo: all upgraded in {bare_seconds:.1f} s "
          f"({riders / bare_seconds:.0f}/s, clients' CPU {bare_clients:.1f} s); ours/bare connect rate {bare_seconds / upgraded:.2f}x; while they connected, {fresh_cpu}")
    print(f"  after a deploy (HUP: the old worker drained in {drained:.1f} s): all upgraded in {back:.1f} s "
          f"({bare_seconds / back:.2f}x the bare echo's rate), {back_served} served; from the new worker's boot to "
          f"the connect, {boot_cpu}; while they connected, {back_cpu}; the events published while "
          f"away received by {caught_up:.1f} s (missing at the end {away_check['lost']}, duplicates "
          f"{away_check['duplicates']}, at the wrong rider {away_check['wrong_rider']}), one more each by "
          f"{receiving_back:.1f} s (missing {later_check['lost']}, duplicates {later_check['duplicates']})")
    print(f"  target: all upgraded and receiving within {TARGET_SECONDS:.0f} s: fresh "
          f"{'met' if receiving <= TARGET_SECONDS and fresh_received >= riders else 'MISSED'}, after a deploy "
          f"{'met' if receiving_back <= TARGET_SECONDS and not away_check['lost'] + later_check['lost'] else 'MISSED'}")
    print(f"  machine after: {load()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--riders", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=250, help="handshakes in flight per client process")
    parser.add_argument("--profile", metavar="PREFIX", help="py-spy the worker in each connect: PREFIX.<phase>.txt")
    args = parser.parse_args()
    run(args.riders, args.concurrency, profile=args.profile)


if __name__ == "__main__":
    main()
