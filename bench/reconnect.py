"""Riders coming back after a deploy: N riders connecting to one worker at
once (each client process keeps --concurrency handshakes in flight), timed
until every one is upgraded, then one event published to each, timed until
every one has arrived. The baseline, in the same run: the same riders
connecting to a bare flask-sock echo socket (bench/bare_app.py).

    python -m bench.reconnect --riders 10000
"""
import argparse
import time

from bench.fanout import ROUTING_KEY, PacedPublisher, serving
from bench.support import Bench, load, machine, wait_until

TARGET_SECONDS = 15.0
CLIENT_PROCESSES = 4


def connect(bench, server, label, riders, concurrency):
    """Seconds until every rider is upgraded; the client fleets."""
    started = time.monotonic()
    per_fleet = -(-riders // CLIENT_PROCESSES)
    fleets = [bench.clients(server.ws_base + "/ws/riders?userID=", f"{label}-{n}-", min(per_fleet, riders - n * per_fleet),
                            concurrency, name=f"{label}-clients-{n}") for n in range(CLIENT_PROCESSES)]
    reports = [fleet.wait_connected(900) for fleet in fleets]
    seconds = time.monotonic() - started
    upgraded = sum(report["open"] for report in reports)
    if upgraded != riders:
        raise RuntimeError(f"{label}: {upgraded} of {riders} upgraded: {reports}")
    return seconds, fleets


def run(riders=10_000, concurrency=250, rate=5000):
    print(f"reconnect: {riders} riders at once to one gevent worker; {machine()}", flush=True)
    print(f"  machine before: {load()}", flush=True)
    with Bench("reconnect") as bench:
        bare_server = bench.gunicorn("bench.bare_app:app", name="bare")
        bare_seconds, fleets = connect(bench, bare_server, "bare", riders, concurrency)
        for fleet in fleets:
            fleet.stop()
        bare_server.stop()
        print(f"  bare flask-sock echo: {riders} upgraded in {bare_seconds:.1f} s", flush=True)

        gateway = bench.gunicorn("app:app", name="gateway", RECONNECT_WINDOW="10")
        started = time.monotonic()
        upgraded, fleets = connect(bench, gateway, "rider", riders, concurrency)
        serving(gateway, riders, workers=1)
        owners = [f"rider-{n}-{i}" for n, fleet in enumerate(fleets) for i in range(fleet.count)]
        PacedPublisher(bench.amqp_url, owners, rate, riders / rate, "reconnect", ROUTING_KEY, in_turn=True).run(120)
        wait_until(lambda: sum(fleet.command("status")["received"] for fleet in fleets) >= riders, 120,
                   "every rider's event", interval=0.2)
        receiving = time.monotonic() - started
        for fleet in fleets:
            fleet.stop()

    print()
    print(f"reconnect results ({riders} riders, one gevent worker, {CLIENT_PROCESSES} client processes)")
    print(f"  gateway: all upgraded in {upgraded:.1f} s ({riders / upgraded:.0f} riders/s), every rider's event "
          f"received {receiving:.1f} s after the first connect; bare echo: all upgraded in {bare_seconds:.1f} s "
          f"({riders / bare_seconds:.0f}/s); ours/bare connect rate {bare_seconds / upgraded:.2f}x")
    print(f"  target: all upgraded and receiving within {TARGET_SECONDS:.0f} s: "
          f"{'met' if receiving <= TARGET_SECONDS else 'MISSED'}")
    print(f"  machine after: {load()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--riders", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=250, help="handshakes in flight per client process")
    args = parser.parse_args()
    run(args.riders, args.concurrency)


if __name__ == "__main__":
    main()
