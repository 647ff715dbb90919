"""What the broker pays to route one notification to its worker's queue as
the users bound grow: a message published to a topic exchange (`trip`'s
part) with a CC of one user's live key, handed on by `live.#` to the
exchange where the workers bind their users' keys, with N other users'
keys bound there; that exchange a direct one (what `gateway.live` was) and
a topic one (`contract.LIVE_EXCHANGE`). The baseline, in the same run: the
direct exchange with no other binding. And what each binding holds in the
broker's tables on each kind (the memory an idle rider costs the broker).

    python -m bench.live_routing --users 10000 --events 5000
"""
import argparse
import time

import pika

from bench.support import Bench, CpuMeter, broker_tables_kib, load, machine
from ridesync import contract

KINDS = ("direct", "topic")


def route(url, kind, users, events):
    """Broker CPU ms per message, messages per second, and bytes of the
    broker's tables per binding, with users other keys bound."""
    exchange, queue, target = f"trip-{kind}-{users}", f"worker-{kind}-{users}", "live.rider.target"
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.exchange_declare(exchange, "topic", auto_delete=True)
        channel.exchange_declare(f"{exchange}-live", kind, auto_delete=True)
        channel.exchange_bind(f"{exchange}-live", exchange, routing_key="live.#")
        channel.queue_declare(queue, auto_delete=True)
        channel.queue_bind(queue, f"{exchange}-live", routing_key=target)
        tables = broker_tables_kib()
        for n in range(users):
            channel.queue_bind(queue, f"{exchange}-live", routing_key=contract.live_key("rider", f"rider-{n}"))
        per_binding = 1024 * (broker_tables_kib() - tables) / users if users else 0.0
        props = pika.BasicProperties(headers={"CC": [target]})
        with CpuMeter([]) as meter:
            started = time.monotonic()
            for _ in range(events):
                channel.basic_publish(exchange, "trip.event.no_drivers_found", b"x" * 200, props)
            while channel.queue_declare(queue, passive=True).method.message_count < events:
                time.sleep(0.05)
            seconds = time.monotonic() - started
        channel.queue_delete(queue)
    return 1000 * meter.broker_net / events, events / seconds, per_binding


def run(users=10_000, events=5000):
    print(f"live routing: {events} messages with a CC, {users} other users bound; {machine()}", flush=True)
    print(f"  machine before: {load()}", flush=True)
    with Bench("live-routing") as bench:
        baseline, _, _ = route(bench.amqp_url, "direct", 0, events)
        print(f"  baseline, direct exchange, no other binding: broker {baseline:.3f} ms a message", flush=True)
        for kind in KINDS:
            ms, rate, per_binding = route(bench.amqp_url, kind, users, events)
            print(f"  {kind} exchange, {users} other users bound: broker {ms:.3f} ms a message "
                  f"({ms / baseline:.1f}x the baseline), {rate:.0f} messages/s; "
                  f"{per_binding:.0f} bytes of its tables a binding", flush=True)
    print(f"  machine after: {load()}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000, help="other users' keys bound")
    parser.add_argument("--events", type=int, default=5000, help="messages routed per phase")
    args = parser.parse_args()
    run(args.users, args.events)


if __name__ == "__main__":
    main()
