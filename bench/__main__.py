"""`python -m bench` (`make bench`): every benchmark with modest defaults,
2,000 riders for capacity, 1,000 riders at 1,000 events/s for 5 s for
fan-out, an idle worker's CPU per event of the same traffic on another
worker, 2,000 riders reconnecting at once, 1,000 sockets for the shutdown
drain, and what token checking costs. The full targets:
`python -m bench.capacity` (10,000 riders), `python -m bench.fanout`
(10 s), `python -m bench.idle_worker` (10 s) and `python -m
bench.reconnect` (10,000 riders). Not run here (minutes each):
`python -m bench.broker_instances` and, on a 3-node cluster of its own,
`python -m bench.node_kill`. Figures and their meaning: bench/RESULTS.md."""
import argparse

from bench import auth, capacity, drain, fanout, idle_worker, reconnect


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--riders", type=int, default=2000, help="capacity: riders on one worker")
    parser.add_argument("--fanout-riders", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    capacity.run(args.riders, steps=2)
    print()
    fanout.run(args.fanout_riders, args.rate, args.seconds)
    print()
    idle_worker.run(args.fanout_riders, rate=args.rate, seconds=args.seconds)
    print()
    reconnect.run(args.riders)
    print()
    drain.run(1000)
    print()
    auth.run(2000, rounds=7)


if __name__ == "__main__":
    main()
