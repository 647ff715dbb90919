"""Where a connected rider's worker memory goes: the gateway under
tracemalloc (bench/gunicorn_tracemalloc.py), a snapshot when idle and one
with N riders connected, and the biggest differences per socket.

    python -m bench.memprofile --riders 2000 [--app bench.bare_app:app]
"""
import argparse
import os
import time
import tracemalloc

from bench.support import Bench, rss_kib, wait_until


def snapshot(directory, name, timeout=120):
    open(os.path.join(directory, "take-" + name), "w").close()
    path = os.path.join(directory, name + ".snap")
    wait_until(lambda: os.path.exists(path), timeout, f"snapshot {name}", interval=0.2)
    return tracemalloc.Snapshot.load(path)


def run(riders, app, top, group):
    with Bench("memprofile") as bench:
        directory = os.path.join(bench.tmp, "snapshots")
        os.mkdir(directory)
        server = bench.gunicorn(app, name="profiled", MEMPROFILE_DIR=directory, RECONNECT_WINDOW="10",
                                conf="bench/gunicorn_tracemalloc.py")
        (worker,) = server.workers()
        url = server.ws_base + "/ws/riders?userID="
        warm = bench.clients(url, "warm-", 20, name="warm")
        warm.wait_connected(60)
        warm.stop()
        time.sleep(2)
        idle_rss = rss_kib(worker)
        idle = snapshot(directory, "idle")
        fleet = bench.clients(url, "profiled-", riders, name="profiled-clients")
        report = fleet.wait_connected(900)
        time.sleep(3)
        busy_rss = rss_kib(worker)
        busy = snapshot(directory, "busy")
        sockets = report["open"]
        fleet.stop()
        server.stop()

    print(f"{app}: {sockets} sockets; VmRSS (with tracemalloc) {(busy_rss - idle_rss) / sockets:.1f} KiB/socket")
    stats = busy.compare_to(idle, group)
    traced = sum(s.size_diff for s in stats)
    print(f"traced Python allocations: {traced / 1024 / sockets:.1f} KiB/socket; biggest, per socket:")
    for stat in stats[:top]:
        print(f"  {stat.size_diff / 1024 / sockets:7.2f} KiB {stat.count_diff / sockets:6.1f} blocks")
        for line in stat.traceback.format(limit=6 if group == "traceback" else 1, most_recent_first=True):
            print("      " + line.strip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--riders", type=int, default=2000)
    parser.add_argument("--app", default="app:app")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--group", default="traceback", choices=("traceback", "lineno", "filename"))
    args = parser.parse_args()
    run(args.riders, args.app, args.top, args.group)


if __name__ == "__main__":
    main()
