"""The rush hour of issue 10: riders looping preview, start and cancel
through the gateway while drivers stay online, on the SQLite store against
the same loop on the in-memory store, in the same run.

Each phase starts its own vhost, DriverService (pool in process), TripService
(OSRM off; `ridesync.trip` on a SQLite file in the bench's directory, or
`bench.memory_trip_service`), and gunicorn with --workers gevent workers
(AUTH_MODE=open, PREVIEW_RATE and PREVIEW_BURST out of reach). The drivers
(bench.clients: /ws/drivers, sedan, v1) answer pings and ignore their trip
requests: an offer stands until the rider's cancel withdraws it, so no driver
is ever busy and no trip waits for OFFER_TIMEOUT. The riders (bench.riders,
in --processes processes) loop POST /trip/preview, /trip/start with their
sedan fare, /trip/cancel: a start that found no free driver ends as
no_drivers_found, and its cancel answers 409.

    python -m bench.rush [--riders 200] [--drivers 50] [--seconds 20] [--workers 2] [--profile DIR]

Printed per store: p50/p99 of each call and previews per second, each
against the in-memory store's; and the CPU each kind of process used per
loop (a preview, a start and a cancel) over the window, with the cores it
used: on a machine shared with others, latency follows the share of the
cores we get, CPU per loop much less.

--profile DIR records the gateway workers and TripService with py-spy
(500 samples a second, raw) over each phase's window, into DIR."""
import argparse
import os
import sys
import time
from collections import Counter

from bench.support import Bench, cpu_seconds, load, machine, percentile, read_json_line

STORES = {"in memory": "bench.memory_trip_service", "SQLite": "ridesync.trip"}
WARMUP = 3.0  # seconds the riders loop before the measured window


def run(riders, drivers, seconds, workers, processes, profile, log_level):
    print(f"{riders} riders in {processes} processes, {drivers} drivers online, {workers} gateway workers, "
          f"{seconds:.0f} s after {WARMUP:.0f} s of warm-up; OSRM off; LOG_LEVEL {log_level}; {machine()}")
    print(f"machine before: {load()}")
    results = {store: phase(store, module, riders, drivers, seconds, workers, processes, profile, log_level)
               for store, module in STORES.items()}
    print(f"machine after: {load()}")
    base = results["in memory"]
    for store, result in results.items():
        print(f"  {store:9s}: {summary(result, base)}")
        failed = {k: n for k, n in result["statuses"].items() if not k.split()[-1].startswith("2") and k != "cancel 409"}
        if failed:
            print(f"  {store:9s}: FAILED calls (counted in the latencies above): {failed}")


def phase(store, module, riders, drivers, seconds, workers, processes, profile, log_level):
    """Every rider process's report, merged."""
    with Bench("rush") as bench:
        driver, driver_addr = bench.service("ridesync.driver", "driver", DRIVER_SERVICE_ADDR="{address}",
                                            LOG_LEVEL=log_level)
        trip, trip_addr = bench.service(module, "trip", TRIP_SERVICE_ADDR="{address}", OSRM_ENABLED="false",
                                        DATABASE_URL=f"sqlite:///{bench.tmp}/rush.db", LOG_LEVEL=log_level)
        gateway = bench.gunicorn("app:app", workers=workers, TRIP_SERVICE_ADDR=trip_addr, DRIVER_SERVICE_ADDR=driver_addr,
                                 PREVIEW_RATE="1000000", PREVIEW_BURST="1000000", LOG_LEVEL=log_level)
        online = bench.clients(f"{gateway.ws_base}/ws/drivers?packageSlug=sedan&userID=", "d-", drivers,
                               name="drivers").wait_connected(timeout=120)
        if online["open"] != drivers:
            raise SystemExit(f"{store}: not every driver connected: {online}")
        procs = [bench.python("bench.riders", "--url", gateway.base, "--prefix", f"r{n}-",
                              "--count", str(riders // processes + (n < riders % processes)),
                              "--seconds", str(seconds), "--warmup", str(WARMUP), name=f"riders-{n}")
                 for n in range(processes)]
        time.sleep(WARMUP)  # the window, not the warm-up
        pids = {"gateway": gateway.workers(), "trip": [trip.pid], "driver": [driver.pid],
                "riders": [proc.pid for proc in procs]}
        spies = spy(bench, profile, store, seconds, pids) if profile else []
        cores = cores_used(pids, seconds - 1)  # the riders' processes exit at the end of the window
        reports = [read_json_line(proc, timeout=seconds + 120) for proc in procs]
        for proc in spies:
            proc.wait(timeout=60)  # it writes its file as it ends
    return {**merged(reports), "cores": cores}


def spy(bench, directory, store, seconds, pids):
    """py-spy record (the thread holding the GIL) of the gateway's workers
    and TripService: the Popens."""
    os.makedirs(directory, exist_ok=True)
    return [bench.spy(pid, os.path.join(directory, f"{store.replace(' ', '-')}-{name}-{pid}.txt"), seconds,
                      rate=500, gil=True)
            for name in ("gateway", "trip") for pid in pids[name]]


def cores_used(pids, seconds):
    """{name: cores} that each group of processes used over the next seconds."""
    before = {name: sum(map(cpu_seconds, group)) for name, group in pids.items()}
    time.sleep(seconds)
    return {name: (sum(map(cpu_seconds, group)) - before[name]) / seconds for name, group in pids.items()}


def merged(reports):
    ms = {kind: [sample for report in reports for sample in report["ms"][kind]] for kind in reports[0]["ms"]}
    statuses = sum((Counter(report["statuses"]) for report in reports), Counter())
    return {"window": reports[0]["window"], "ms": ms, "statuses": dict(statuses)}


def summary(result, base):
    ms, base_ms = result["ms"], base["ms"]
    rate = len(ms["preview"]) / result["window"]
    parts = [f"{kind} p50 {percentile(ms[kind], 50):7.1f} ms p99 {percentile(ms[kind], 99):7.1f} ms "
             f"({percentile(ms[kind], 50) / percentile(base_ms[kind], 50):.2f}x)" for kind in ms]
    cpu = ", ".join(f"{name} {1000 * cores / rate:.1f} ms ({cores:.2f})" for name, cores in result["cores"].items())
    return (" | ".join(parts) + f" | previews/s {rate:6.1f} ({rate / (len(base_ms['preview']) / base['window']):.2f}x)"
            f"\n             CPU per loop (cores used): {cpu} | answers {result['statuses']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--riders", type=int, default=200)
    parser.add_argument("--drivers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2, help="rider processes")
    parser.add_argument("--profile", metavar="DIR", help="py-spy record into DIR")
    parser.add_argument("--log-level", default="INFO", help="of every process (INFO: what a deploy logs by default)")
    args = parser.parse_args()
    if args.riders < args.processes:
        sys.exit("--riders must be at least --processes")
    run(args.riders, args.drivers, args.seconds, args.workers, args.processes, args.profile, args.log_level)


if __name__ == "__main__":
    main()
