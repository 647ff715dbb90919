"""What the broker pays per delivered event as gateway instances are added:
the same riders and the same traffic with 1, 2 and 4 gateway instances (one
gunicorn gevent worker each, the riders spread evenly over them), one phase
after another in one run. The broker's CPU is its Erlang VM's (beam.smp,
from /proc), net of what it burned at rest just before each phase (other
sessions share it). Prints each phase's broker CPU per delivered event and
its ratio to the 1-instance figure, the baseline (the goal: it does not grow).

    python -m bench.broker_instances --riders 1000 --rate 1000 --seconds 10
"""
import argparse

from bench.fanout import gateway_phase, serving
from bench.support import Bench, load, machine

INSTANCES = (1, 2, 4)


def phase(bench, instances, riders, rate, seconds):
    """One phase: instances gateways started, their riders connected, the
    traffic published and received; every process of it stopped after."""
    gateways = [bench.gunicorn("app:app", name=f"gateway-{instances}-{n}", RECONNECT_WINDOW="10")
                for n in range(instances)]
    share = riders // instances
    fleets = [bench.clients(gateway.ws_base + "/ws/riders?userID=", f"i{instances}-{n}-", share,
                            name=f"clients-{instances}-{n}") for n, gateway in enumerate(gateways)]
    for fleet in fleets:
        if fleet.wait_connected(600)["open"] != share:
            raise RuntimeError("not every rider connected")
    for gateway in gateways:
        serving(gateway, share, 1)
    owners = [f"i{instances}-{n}-{i}" for n in range(instances) for i in range(share)]
    workers = [pid for gateway in gateways for pid in gateway.workers()]
    result = gateway_phase(bench, fleets, owners, rate, seconds, workers=workers)
    for process in fleets + gateways:
        process.stop()
    delivered = result["received"] - result["duplicates"]
    cpu = result["cpu"]
    scale = result["published"] / delivered  # per_event_ms is per event published
    return {**result, "broker_per_delivered": cpu["broker"] * scale, "broker_net_per_delivered": cpu["broker_net"] * scale,
            "workers_per_delivered": cpu["ours"] * scale}


def run(riders=1000, rate=1000, seconds=10):
    print(f"broker per instance: {riders} riders over 1, 2 and 4 gateway instances (1 worker each), "
          f"{rate} events/s for {seconds} s each; {machine()}", flush=True)
    print(f"  machine before: {load()}", flush=True)
    results = {}
    with Bench("broker-instances") as bench:
        for instances in INSTANCES:
            results[instances] = r = phase(bench, instances, riders, rate, seconds)
            print(f"  {instances} instance(s): broker {r['broker_per_delivered']:.3f} ms per delivered event "
                  f"({r['broker_net_per_delivered']:.3f} ms net of its {r['cpu']['idle_broker_cores']:.2f} cores at "
                  f"rest), workers together {r['workers_per_delivered']:.3f} ms; p50 {r['p50']:.1f} ms, "
                  f"p99 {r['p99']:.1f} ms at {r['rate']:.0f}/s; lost {r['lost']}, duplicates {r['duplicates']}, "
                  f"at the wrong rider {r['wrong_rider']}", flush=True)

    base = results[INSTANCES[0]]
    print()
    print(f"broker-per-instance results ({riders} riders, {rate}/s for {seconds} s per phase)")
    for instances, r in results.items():
        print(f"  {instances} instance(s): broker CPU per delivered event, net {r['broker_net_per_delivered']:.3f} ms "
              f"= {r['broker_net_per_delivered'] / base['broker_net_per_delivered']:.2f}x of 1 instance's "
              f"(gross {r['broker_per_delivered']:.3f} ms = {r['broker_per_delivered'] / base['broker_per_delivered']:.2f}x); "
              f"gateway workers together {r['workers_per_delivered']:.3f} ms "
              f"= {r['workers_per_delivered'] / base['workers_per_delivered']:.2f}x")
    print(f"  machine after: {load()}")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--riders", type=int, default=1000, help="riders in all, spread over the instances")
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    run(args.riders, args.rate, args.seconds)


if __name__ == "__main__":
    main()
