"""What a gateway worker pays for other workers' traffic: two gateway
instances of one gunicorn gevent worker each, on one broker; the holding
worker holds the riders every event is for, the idle worker holds a few
riders who get nothing. Prints each worker's CPU seconds per event of that
traffic, and idle/holding (the goal: at most 5%); and the same net of what
the idle worker burns at rest (its timers and pings, sampled for 5 s before
the traffic), which it pays with or without the traffic. The holding
worker's figure is the baseline, measured in the same run.

    python -m bench.idle_worker --riders 1000 --idle 10 --rate 1000 --seconds 10
"""
import argparse
import time

from bench.fanout import gateway_phase, serving
from bench.support import Bench, cpu_seconds, load, machine

GOAL = 0.05
REST = 5.0  # seconds the idle worker's CPU at rest is sampled for, before the traffic


def run(riders=1000, idle=10, rate=1000, seconds=10):
    print(f"idle worker: {riders} riders with traffic on one worker, {idle} idle riders on another, "
          f"{rate} events/s for {seconds} s; {machine()}", flush=True)
    print(f"  machine before: {load()}", flush=True)
    with Bench("idle-worker") as bench:
        holding = bench.gunicorn("app:app", name="holding", RECONNECT_WINDOW="10")
        quiet = bench.gunicorn("app:app", name="idle", RECONNECT_WINDOW="10")
        busy = bench.clients(holding.ws_base + "/ws/riders?userID=", "busy-", riders, name="busy-clients")
        still = bench.clients(quiet.ws_base + "/ws/riders?userID=", "still-", idle, name="idle-clients")
        for fleet, count in ((busy, riders), (still, idle)):
            if fleet.wait_connected(600)["open"] != count:
                raise RuntimeError("not every rider connected")
        serving(holding, riders, 1)
        serving(quiet, idle, 1)
        [holding_pid], [idle_pid] = holding.workers(), quiet.workers()
        before = cpu_seconds(idle_pid)
        time.sleep(REST)
        at_rest = (cpu_seconds(idle_pid) - before) / REST  # its timers and pings: paid with or without traffic
        result = gateway_phase(bench, [busy, still], [f"busy-{n}" for n in range(riders)], rate, seconds,
                               workers=[holding_pid, idle_pid])
        idle_status = still.command("status")
        idle_read = quiet.get_json("/live/stats").get("received", "(not reported)")  # from its own queue

    each = result["cpu"]["each"]
    ratio = each[idle_pid] / each[holding_pid]
    idle_net = max(0.0, each[idle_pid] - 1000 * at_rest * result["cpu"]["seconds"] / result["published"])
    print()
    print(f"idle-worker results ({riders} riders with traffic, {idle} idle, {rate}/s for {seconds} s)")
    print(f"  CPU per event of the traffic: holding worker {each[holding_pid]:.3f} ms, idle worker "
          f"{each[idle_pid]:.3f} ms; idle/holding {100 * ratio:.1f}% (goal at most {100 * GOAL:.0f}%: "
          f"{'met' if ratio <= GOAL else 'MISSED'})")
    print(f"  the idle worker at rest: {1000 * at_rest:.2f} ms of CPU a second; net of it, {idle_net:.3f} ms per event, "
          f"{100 * idle_net / each[holding_pid]:.1f}% of the holding worker's")
    print(f"  broker {result['cpu']['broker']:.3f} ms per event ({result['cpu']['broker_net']:.3f} ms net of its "
          f"{result['cpu']['idle_broker_cores']:.2f} cores at rest); publish-to-socket p50 {result['p50']:.1f} ms, "
          f"p99 {result['p99']:.1f} ms at {result['rate']:.0f}/s")
    print(f"  delivered: lost {result['lost']}, duplicates {result['duplicates']}, at the wrong rider "
          f"{result['wrong_rider']} (of {result['confirmed'] - result['unroutable']} confirmed and routed); "
          f"the idle riders got {idle_status['received']} events and {idle_status['other_frames']} other frames; "
          f"the idle worker read {idle_read} notices from its queue")
    print(f"  machine after: {load()}")
    return ratio


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--riders", type=int, default=1000, help="riders on the holding worker")
    parser.add_argument("--idle", type=int, default=10, help="riders on the idle worker")
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    run(args.riders, args.idle, args.rate, args.seconds)


if __name__ == "__main__":
    main()
