"""A process of riders, each a greenlet looping over HTTP keep-alive:
POST /trip/preview, POST /trip/start with its sedan fare, POST /trip/cancel
(so that the rider may start again). Every call is timed; only calls begun
after --warmup seconds and ended within --seconds after that count.

    python -m bench.riders --url http://127.0.0.1:8081 --prefix r- --count 100 --seconds 20

Prints one JSON line at the end: {"window": seconds, "ms": {kind: [latency,
...]}, "statuses": {"kind status": count}}. The gateway must be in open mode."""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402

from tests.support import DESTINATION_JSON, PICKUP_JSON  # noqa: E402

CALL_TIMEOUT = 60.0  # seconds: a call this slow is a failure, not a sample
PAUSE_AFTER_FAILURE = 0.1  # seconds, so that a failing gateway is not asked in a tight loop


class Loop:
    def __init__(self, url, warm_until, stop_at):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.warm_until, self.stop_at = warm_until, stop_at
        self.ms = {"preview": [], "start": [], "cancel": []}
        self.statuses = Counter()

    def rider(self, user):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=CALL_TIMEOUT)
        while time.monotonic() < self.stop_at:
            try:
                self._ride(conn, user)
            except (OSError, http.client.HTTPException, ValueError, KeyError, StopIteration) as exc:
                self.statuses[f"error {type(exc).__name__}"] += 1
                conn.close()
                gevent.sleep(PAUSE_AFTER_FAILURE)

    def _ride(self, conn, user):
        preview = self._call(conn, "preview", {"userID": user, "pickup": PICKUP_JSON, "destination": DESTINATION_JSON})
        if preview is None:
            return
        fare = next(f for f in preview["data"]["rideFares"] if f["packageSlug"] == "sedan")
        start = self._call(conn, "start", {"userID": user, "rideFareID": fare["id"]})
        if start is not None:  # a trip with no driver left has ended: 409, and that is fine
            self._call(conn, "cancel", {"userID": user, "tripID": start["data"]["tripID"], "reason": "bench"})

    def _call(self, conn, kind, body):
        """The answer's JSON on a 2xx, else None (after a pause on a 5xx)."""
        began = time.monotonic()
        conn.request("POST", f"/trip/{kind}", body=json.dumps(body), headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        data = answer.read()
        ended = time.monotonic()
        if began >= self.warm_until and ended <= self.stop_at:
            self.ms[kind].append(round((ended - began) * 1000, 3))
            self.statuses[f"{kind} {answer.status}"] += 1
        if answer.status >= 500:
            gevent.sleep(PAUSE_AFTER_FAILURE)
        return json.loads(data) if 200 <= answer.status < 300 else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the gateway, http://host:port")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True, help="how long the measured window lasts")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of looping before the window")
    args = parser.parse_args()
    now = time.monotonic()
    loop = Loop(args.url, now + args.warmup, now + args.warmup + args.seconds)
    gevent.joinall([gevent.spawn(loop.rider, f"{args.prefix}{n}") for n in range(args.count)])
    sys.stdout.write(json.dumps({"window": args.seconds, "ms": loop.ms, "statuses": loop.statuses}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
