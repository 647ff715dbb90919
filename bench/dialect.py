"""What the v1 dialect costs a worker per notification written, against v2
(written as it comes) in the same run.

Each round hands the same Trip notification (`trip.event.created`, a route
of --points points; bench.fanout's sample Trip has 20, a real OSRM route a
few hundred) to a socket's dialect (ridesync/gateway/dialects.py) and
serialises what it writes as Phone.send does; the writer is a list. Rounds
alternate v2, v1 rider and v1 driver; the figure is the median round's mean.

    .venv/bin/python -m bench.dialect [--frames 20000] [--rounds 7] [--points 20]"""
import argparse
import statistics
import time

import orjson

from bench.fanout import sample_trip
from ridesync import contract
from ridesync.gateway import dialects
from ridesync.gateway.sockets.ledger import Notice

SOCKETS = {"v2": ("rider", True), "v1 rider": ("rider", False), "v1 driver": ("driver", False)}
KINDS = {"v2": contract.TRIP_CREATED, "v1 rider": contract.TRIP_CREATED, "v1 driver": contract.DRIVER_TRIP_REQUEST}


def per_frame_us(name, trip, frames):
    role, v2 = SOCKETS[name]
    dialect = dialects.for_socket(role, v2)
    notice = Notice(KINDS[name], "m0", contract.envelope("r1", trip), {})
    out = []

    def send(write):
        out.append(orjson.dumps({"type": write.kind, "data": write.data}))
        return True

    started = time.perf_counter()
    for _ in range(frames):
        dialect.deliver(notice.type, trip, notice, send, lambda: dialects.UNREAD)
    elapsed = time.perf_counter() - started
    assert len(out) == frames
    return elapsed / frames * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--points", type=int, default=20)
    args = parser.parse_args()
    trip = sample_trip("r1")
    points = trip["route"]["geometry"][0]["coordinates"]
    trip["route"]["geometry"][0]["coordinates"] = [points[i % len(points)] for i in range(args.points)]
    rounds = {name: [] for name in SOCKETS}
    for _ in range(args.rounds):
        for name in SOCKETS:
            rounds[name].append(per_frame_us(name, trip, args.frames))
    baseline = statistics.median(rounds["v2"])
    print(f"a Trip with a {args.points}-point route, {args.frames} frames x {args.rounds} rounds, median round:")
    for name in SOCKETS:
        figure = statistics.median(rounds[name])
        print(f"  {name:9s} {figure:6.1f} us per frame written ({figure / baseline:.2f}x v2)")


if __name__ == "__main__":
    main()
