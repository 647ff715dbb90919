"""Capacity: how many connected riders one gevent worker holds, and what
each costs: worker memory (VmRSS delta from idle, per socket), greenlets,
broker connections, channels, queues and consumers, and broker memory (the
broker's VmRSS delta, per socket: other sessions move it too); and how fast
they connect.

The baseline, measured in the same run on the same gunicorn/gevent config:
a bare flask-sock echo WebSocket (bench/bare_app.py), no notifications.

    python -m bench.capacity --riders 10000
"""
import argparse
import time

from bench.support import Bench, broker_counts, broker_memory_kib, broker_pid, load, machine, rss_kib, wait_until

TARGET_RIDERS = 10_000
TARGET_KIB_PER_SOCKET = 39  # the Go original's, in the table


def measure(bench, server, label, riders, steps, concurrency, stats=None, broker=False, settle=2.0):
    """Connects riders in steps (one client process per step) and returns
    the rows measured after each (settle seconds after its last connect),
    starting with the idle worker."""
    (worker,) = server.workers()
    # Warm up: the first sockets make the worker's broker connection, import
    # what is imported lazily, and fill caches; idle is measured after them.
    warm = bench.clients(server.ws_base + "/ws/riders?userID=", f"warm-{label}-", 20, name=f"{label}-warm")
    report = warm.wait_connected(60)
    if report["open"] != 20:
        raise RuntimeError(f"{label}: warm-up sockets did not connect: {report}")
    warm.stop()
    if stats:
        wait_until(lambda: stats()["inboxes"] == 0, 30, "the warm-up sockets to be gone")
    time.sleep(1)
    rows = [sample(bench, worker, 0, 0.0, stats, broker)]
    print(f"  {label} idle: {_show(rows[0])}", flush=True)
    per_step = -(-riders // steps)
    fleets, connected = [], 0
    for step in range(steps):
        count = min(per_step, riders - connected)
        if count <= 0:
            break
        started = time.monotonic()
        fleet = bench.clients(server.ws_base + "/ws/riders?userID=", f"{label}-{step}-", count, concurrency,
                              name=f"{label}-clients-{step}")
        report = fleet.wait_connected(900)
        seconds = time.monotonic() - started
        fleets.append(fleet)
        if report["failed"] or report["open"] != count:
            print(f"  {label} step {step}: {report}", flush=True)
        connected += report["open"]
        if stats:  # every socket served from the feed, not only upgraded
            wait_until(lambda: stats()["consuming"] >= connected, 120, "every socket to be served")
        time.sleep(settle)
        row = sample(bench, worker, connected, seconds, stats, broker)
        row["rate"] = count / seconds
        rows.append(row)
        print(f"  {label} {connected} sockets: {_show(row, rows[0])}", flush=True)
    row = rows[-1]
    open_now = sum(f.command("status")["open"] for f in fleets)
    row["still_open"] = open_now
    for fleet in fleets:
        fleet.stop()
    return rows


def sample(bench, worker, sockets, seconds, stats, broker):
    """One row: the worker's and the broker's memory now; with broker, what
    the broker holds on the vhost and its memory by category too."""
    row = {"sockets": sockets, "rss_kib": rss_kib(worker), "seconds": seconds, "broker_kib": rss_kib(broker_pid())}
    if stats:
        row["stats"] = stats()
    if broker:
        row["broker"] = broker_counts(bench.vhost)
        row["broker_memory"] = broker_memory_kib()
    return row


def _show(row, idle=None):
    text = f"VmRSS {row['rss_kib'] / 1024:.1f} MiB"
    if idle and row["sockets"]:
        text += f", {(row['rss_kib'] - idle['rss_kib']) / row['sockets']:.1f} KiB/socket"
        text += f", connected at {row.get('rate', 0):.0f}/s"
    if "stats" in row:
        s = row["stats"]
        text += f"; stats: sockets {s['sockets']['rider']}, consuming {s['consuming']}, greenlets {s['greenlets']}"
    if "broker" in row:
        text += f"; broker {row['broker']}"
    return text


def per_socket(rows, key):
    idle, full = rows[0], rows[-1]
    return (key(full) - key(idle)) / full["sockets"]


def run(riders=TARGET_RIDERS, steps=4, concurrency=100, bare_riders=None):
    print(f"capacity: {riders} riders on one gevent worker; {machine()}", flush=True)
    print(f"  machine before: {load()}", flush=True)
    with Bench("capacity") as bench:
        bare_server = bench.gunicorn("bench.bare_app:app", name="bare")
        bare = measure(bench, bare_server, "bare", bare_riders or riders, steps, concurrency)
        bare_server.stop()

        gateway = bench.gunicorn("app:app", name="gateway", RECONNECT_WINDOW="10")
        ours = measure(bench, gateway, "gateway", riders, steps, concurrency,
                       stats=lambda: gateway.get_json("/live/stats?greenlets=1"), broker=True)
        gateway.stop()

    bare_kib = per_socket(bare, lambda r: r["rss_kib"])
    our_kib = per_socket(ours, lambda r: r["rss_kib"])
    full = ours[-1]
    stats = full["stats"]
    print()
    print("capacity results (one gevent worker, WEB_CONCURRENCY=1)")
    print(f"  riders connected and confirmed: {full['sockets']} of {riders} (still open at the end: "
          f"{full['still_open']}); /live/stats: sockets {stats['sockets']['rider']}, "
          f"served {stats['consuming']} (want {full['sockets']})")
    rate = lambda rows: sum(r["sockets"] - p["sockets"] for p, r in zip(rows, rows[1:])) / sum(  # noqa: E731
        r["seconds"] for r in rows[1:])
    print(f"  connect rate: gateway {rate(ours):.0f} riders/s, bare flask-sock echo {rate(bare):.0f}/s; "
          f"ours/bare {rate(ours) / rate(bare):.2f}x")
    print(f"  broker memory per socket (moved by other sessions too): VmRSS "
          f"{per_socket(ours, lambda r: r['broker_kib']):.1f} KiB, Erlang allocated "
          f"{per_socket(ours, lambda r: r['broker_memory']['allocated']):.2f} KiB (bench.bindings --idle-riders)")
    print(f"  worker memory per socket: gateway {our_kib:.1f} KiB, bare flask-sock echo {bare_kib:.1f} KiB; "
          f"ours/bare = {our_kib / bare_kib:.2f}x; target {TARGET_KIB_PER_SOCKET} KiB: "
          f"{our_kib / TARGET_KIB_PER_SOCKET:.2f}x of it ({'met' if our_kib < TARGET_KIB_PER_SOCKET else 'MISSED'})")
    print(f"  worker VmRSS: gateway idle {ours[0]['rss_kib'] / 1024:.1f} MiB -> {full['rss_kib'] / 1024:.1f} MiB; "
          f"bare idle {bare[0]['rss_kib'] / 1024:.1f} MiB -> {bare[-1]['rss_kib'] / 1024:.1f} MiB")
    print(f"  greenlets per socket: {per_socket(ours, lambda r: r['stats']['greenlets']):.2f}")
    for what in ("connections", "channels", "queues", "consumers", "bindings"):
        print(f"  broker {what} per socket: {per_socket(ours, lambda r: r['broker'][what]):.4f} "
              f"({ours[0]['broker'][what]} idle -> {full['broker'][what]})")
    print(f"  machine after: {load()}")
    print(f"  riders target {TARGET_RIDERS}: {'met' if full['sockets'] >= TARGET_RIDERS else 'MISSED'}"
          f"{'' if riders >= TARGET_RIDERS else ' (this run asked for fewer)'}")
    return {"bare": bare, "gateway": ours, "bare_kib": bare_kib, "our_kib": our_kib}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--riders", type=int, default=TARGET_RIDERS)
    parser.add_argument("--steps", type=int, default=4, help="measure after each of this many equal batches")
    parser.add_argument("--concurrency", type=int, default=100, help="handshakes in flight per client process")
    args = parser.parse_args()
    run(args.riders, args.steps, args.concurrency)


if __name__ == "__main__":
    main()
