"""What a binding per connected user costs the broker, against what a
connect costs it today (one confirmed publish of a marker to the
`gateway.notifications` stream), in the same run on the same broker.

Each phase does N operations from T threads, each thread with its own
connection and channel doing its share one after the other (a channel
answers one bind at a time, as a gateway worker's channel would):

- publish: the baseline, a confirmed marker publish to the stream;
- bind / unbind on the `trip` topic exchange: a per-user key
  (`live.rider.<digest>`) to one worker's exclusive queue;
- bind / unbind on a direct exchange behind `trip` (an exchange-to-exchange
  binding `live.#`), the alternative where per-user keys sit in a plain table.

It prints, per phase, operations per second, p50/p99 of one operation, the
broker's CPU per operation (net of its rate at rest just before), and the
ratio to the publish baseline; and the broker's memory per binding held.
Then what routing costs with the bindings in place: events published with a
CC of one bound user's key, consumed from the worker's queue, broker CPU per
event against the same events published to the stream alone.

    python -m bench.bindings --users 10000 --threads 1
    python -m bench.bindings --users 10000 --threads 8

With --idle-riders N, instead: what idle riders cost the broker's memory
with the gateway as built (a binding per rider with the per-worker queue),
against none, in the same run: one gateway worker, its broker memory
(`rabbitmq-diagnostics memory_breakdown`: its tables, where bindings live,
and the vhost's queues; and, moved by other sessions' traffic, all the Erlang
VM allocated and the beam's VmRSS) with 0 riders, with N idle riders connected, and
again once they left and their window ended. The goal, "near zero", read as
at most 5% of what the gateway worker itself holds per rider (same run).

    python -m bench.bindings --idle-riders 10000
"""
import argparse
import hashlib
import threading
import time

import pika

from bench import capacity
from bench.support import BINDING_TABLES, Bench, CpuMeter, broker_counts, broker_pid, load, machine, percentile, rss_kib, wait_until
from ridesync import contract

DIRECT_EXCHANGE = "bench.live"
WORKER_QUEUE = "bench.live.worker-1"
RECONNECT_TARGET = (10_000, 15.0)  # riders reconnecting, seconds to upgrade them all
IDLE_RIDER_GOAL = 0.05  # broker memory per idle rider, of the gateway worker's own per rider
WINDOW = 10  # the gateway's RECONNECT_WINDOW: how long a rider who left stays bound
SETTLE = 10.0  # seconds after the last connect: what the connects left in flight (markers, acks) is gone


def user_key(n):
    return "live.rider." + hashlib.blake2b(f"rider-{n}".encode(), digest_size=8).hexdigest()


def in_threads(url, users, threads, operation):
    """Runs operation(channel, n) for n in users, split over threads, each
    with a connection of its own: (seconds, per-operation latencies in ms)."""
    shares = [users[i::threads] for i in range(threads)]
    latencies = [[] for _ in shares]
    errors = []

    def work(share, out):
        try:
            with pika.BlockingConnection(pika.URLParameters(url)) as connection:
                channel = connection.channel()
                channel.confirm_delivery()
                for n in share:
                    started = time.perf_counter()
                    operation(channel, n)
                    out.append(1000 * (time.perf_counter() - started))
        except Exception as exc:  # reported by the caller: a phase that failed has no figures
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(share, out)) for share, out in zip(shares, latencies)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.monotonic() - started
    if errors:
        raise RuntimeError(f"{len(errors)} threads failed: {errors[0]!r}")
    return seconds, sorted(ms for share in latencies for ms in share)


def publish_marker(channel, n):
    channel.basic_publish("", contract.NOTIFICATIONS_STREAM, b"",
                          pika.BasicProperties(message_id=f"m{n}", delivery_mode=2,
                                               headers={"type": "gateway.connected", "role": "rider",
                                                        "owner": f"rider-{n}", "session": f"s{n}"}))


def measure(url, label, users, threads, operation, baseline=None):
    with CpuMeter([]) as meter:
        seconds, latencies = in_threads(url, users, threads, operation)
    cpu_ms = 1000 * meter.broker_net / len(users)
    row = {"label": label, "rate": len(users) / seconds, "p50": percentile(latencies, 50),
           "p99": percentile(latencies, 99), "broker_ms": cpu_ms, "seconds": seconds}
    ratio = "" if baseline is None else (f"  ({row['rate'] / baseline['rate']:.2f}x the publish rate, "
                                         f"{cpu_ms / baseline['broker_ms']:.2f}x its broker CPU)"
                                         if baseline["broker_ms"] else "")
    print(f"  {label:<28} {row['rate']:8.0f}/s  p50 {row['p50']:6.2f} ms  p99 {row['p99']:7.2f} ms  "
          f"broker {cpu_ms:6.3f} ms/op{ratio}", flush=True)
    return row


def routing(url, users, events, bound_key):
    """Broker CPU per event: published to `trip` with a CC of one bound user's
    key (to the stream and the worker's queue), against to the stream alone."""
    rows = {}
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        for label, headers in (("stream only", {}), ("stream + CC to the worker", {"CC": [bound_key]})):
            props = pika.BasicProperties(delivery_mode=2, headers={"owner": "rider-0", "type": "x", **headers})
            with CpuMeter([]) as meter:
                for _ in range(events):
                    channel.basic_publish(contract.TRIP_EXCHANGE, contract.TRIP_NO_DRIVERS_FOUND, b"{}", props)
            rows[label] = 1000 * meter.broker_net / events
        queued = channel.queue_declare(WORKER_QUEUE, passive=True).method.message_count
    print(f"  routing, {users} bindings held: broker CPU per confirmed event "
          + ", ".join(f"{label} {ms:.3f} ms" for label, ms in rows.items())
          + f" ({rows['stream + CC to the worker'] / rows['stream only']:.2f}x); worker queue got {queued}", flush=True)


def run(users=10_000, threads=1, events=5000):
    print(f"bindings: {users} users, {threads} threads; {machine()}", flush=True)
    print(f"  machine before: {load()}", flush=True)
    numbers = list(range(users))
    with Bench("bindings") as bench:
        url = bench.amqp_url
        with pika.BlockingConnection(pika.URLParameters(url)) as owner:
            setup = owner.channel()
            setup.queue_declare(WORKER_QUEUE)  # a worker's would be exclusive; here other connections bind it
            setup.exchange_declare(DIRECT_EXCHANGE, "direct", auto_delete=True)
            setup.exchange_bind(DIRECT_EXCHANGE, contract.TRIP_EXCHANGE, routing_key="live.#")
            broker = broker_pid()

            base = measure(url, "publish (a connect today)", numbers, threads, publish_marker)
            rss_before = rss_kib(broker)
            topic = measure(url, "bind on `trip` (topic)", numbers, threads,
                            lambda ch, n: ch.queue_bind(WORKER_QUEUE, contract.TRIP_EXCHANGE, user_key(n)), base)
            per_binding = (rss_kib(broker) - rss_before) / users
            routing(url, users, events, user_key(0))
            measure(url, "unbind on `trip` (topic)", numbers, threads,
                    lambda ch, n: ch.queue_unbind(WORKER_QUEUE, contract.TRIP_EXCHANGE, user_key(n)), base)
            direct = measure(url, "bind on a direct exchange", numbers, threads,
                             lambda ch, n: ch.queue_bind(WORKER_QUEUE, DIRECT_EXCHANGE, user_key(n)), base)
            measure(url, "unbind on a direct exchange", numbers, threads,
                    lambda ch, n: ch.queue_unbind(WORKER_QUEUE, DIRECT_EXCHANGE, user_key(n)), base)
    count, seconds = RECONNECT_TARGET
    print(f"  broker memory per topic binding held: {per_binding:.2f} KiB (VmRSS, other sessions move it too)")
    for row in (base, topic, direct):
        print(f"  {count} reconnects at this rate, one {row['label']} each: {count / row['rate']:.1f} s "
              f"of a {seconds:.0f} s budget")
    print(f"  machine after: {load()}")


def idle_riders(riders=10_000, steps=2):
    """Broker memory per idle rider of a real gateway: 0, then riders
    connected (in steps), then none again once they left and were unbound."""
    print(f"bindings: broker memory per idle rider, {riders} riders on one gevent worker; {machine()}", flush=True)
    print(f"  machine before: {load()}", flush=True)
    with Bench("idle-riders") as bench:
        gateway = bench.gunicorn("app:app", name="gateway", RECONNECT_WINDOW=str(WINDOW))
        stats = lambda: gateway.get_json("/live/stats?greenlets=1")  # noqa: E731
        rows = capacity.measure(bench, gateway, "gateway", riders, steps, 100, stats=stats, broker=True, settle=SETTLE)
        none, full = rows[0], rows[-1]
        wait_until(lambda: broker_counts(bench.vhost)["bindings"] <= none["broker"]["bindings"], WINDOW + 120,
                   "the riders who left to be unbound", interval=1)
        time.sleep(SETTLE)
        after = capacity.sample(bench, gateway.workers()[0], 0, 0.0, stats, broker=True)
    n = full["sockets"]
    memory = lambda row, *kinds: sum(row["broker_memory"][kind] for kind in kinds)  # noqa: E731
    tables = (memory(full, *BINDING_TABLES) - memory(none, *BINDING_TABLES)) / n
    tables_after = (memory(full, *BINDING_TABLES) - memory(after, *BINDING_TABLES)) / n
    queues = (full["broker"]["queue_memory_kib"] - none["broker"]["queue_memory_kib"]) / n
    held = tables + queues
    worker = (full["rss_kib"] - none["rss_kib"]) / n
    print()
    print(f"idle-rider results ({n} riders connected, idle; one gevent worker)")
    print(f"  broker bindings on the vhost: {none['broker']['bindings']} with 0 riders, {full['broker']['bindings']} "
          f"with {n}, {after['broker']['bindings']} after they left; queues {none['broker']['queues']} -> "
          f"{full['broker']['queues']}; the worker says bound {full['stats'].get('bound', '(not reported)')}")
    allocated = [(memory(full, "allocated") - memory(row, "allocated")) / n for row in (none, after)]
    print(f"  broker memory per idle rider, against 0 riders (against after they left): in its tables "
          f"({' + '.join(BINDING_TABLES)}: bindings, queues, exchanges) {tables:.2f} KiB ({tables_after:.2f}), in the "
          f"vhost's queues {queues:.2f} KiB; all it allocated {allocated[0]:.2f} KiB ({allocated[1]:.2f}), beam VmRSS "
          f"{(full['broker_kib'] - none['broker_kib']) / n:.2f} KiB (these two move with other sessions' traffic)")
    print(f"  tables + queues against the gateway worker's own memory per rider, same run ({worker:.1f} KiB): "
          f"{100 * held / worker:.1f}% (goal \"near zero\", read as at most {100 * IDLE_RIDER_GOAL:.0f}%: "
          f"{'met' if held <= IDLE_RIDER_GOAL * worker else 'MISSED'})")
    print(f"  machine after: {load()}")
    return held


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1, help="connections binding at once")
    parser.add_argument("--events", type=int, default=5000, help="events for the routing phase")
    parser.add_argument("--idle-riders", type=int, metavar="N",
                        help="instead: broker memory per idle rider of a real gateway, N riders against none")
    args = parser.parse_args()
    if args.idle_riders:
        idle_riders(args.idle_riders)
    else:
        run(args.users, args.threads, args.events)


if __name__ == "__main__":
    main()
