"""Shutdown drain: open sockets, SIGTERM to the gunicorn master, then the
time until every socket has its close frame and until the master has exited.
Target: under 10 s (graceful_timeout); under 2 s is the mark to beat.

The baseline, measured in the same run: the same gateway app on gunicorn's
stock gevent worker (bench/gunicorn_stock.py), which notices SIGTERM at its
next one-second tick and then waits for WebSocket handlers that never return.

    python -m bench.drain --sockets 1000
"""
import argparse
import signal
import time

from bench.fanout import serving
from bench.support import Bench, broker_counts, machine

TARGET_SECONDS = 10.0
MARK_SECONDS = 2.0


def measure(bench, label, conf, sockets, workers):
    server = bench.gunicorn("app:app", workers=workers, name=label, conf=conf, RECONNECT_WINDOW="10")
    fleet = bench.clients(server.ws_base + "/ws/riders?userID=", f"{label}-", sockets, name=f"{label}-clients")
    report = fleet.wait_connected(900)
    if report["open"] != sockets:
        raise RuntimeError(f"{label}: only {report['open']} of {sockets} sockets connected: {report}")
    serving(server, sockets, workers)

    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    closed_at = exited_at = None
    while closed_at is None or exited_at is None:
        now = time.monotonic() - started
        if closed_at is None and fleet.command("status")["open"] == 0:
            closed_at = now
        if exited_at is None and server.proc.poll() is not None:
            exited_at = now
        if now > 30:
            raise RuntimeError(f"{label}: still open after 30 s: {fleet.command('status')}")
        time.sleep(0.02)
    how = fleet.command("status")["closed_by_server"]
    left = broker_counts(bench.vhost)["connections"]
    print(f"  {label}: every socket closed {closed_at:.2f} s after SIGTERM ({how}); "
          f"master exited at {exited_at:.2f} s (code {server.proc.returncode}); "
          f"broker connections left: {left}", flush=True)
    fleet.stop()
    return {"closed": closed_at, "exited": exited_at, "how": how, "left": left}


def run(sockets=1000, workers=2):
    print(f"drain: {sockets} rider sockets over {workers} gevent workers, SIGTERM to the master; {machine()}",
          flush=True)
    with Bench("drain") as bench:
        stock = measure(bench, "stock-gevent-worker", "bench/gunicorn_stock.py", sockets, workers)
        ours = measure(bench, "gateway", "gunicorn.conf.py", sockets, workers)
    print()
    print(f"drain results ({sockets} sockets, {workers} workers)")
    print(f"  every socket closed: gateway {ours['closed']:.2f} s ({ours['how']}), "
          f"stock gevent worker {stock['closed']:.2f} s ({stock['how']}); stock/ours = "
          f"{stock['closed'] / ours['closed']:.1f}x")
    print(f"  master exited: gateway {ours['exited']:.2f} s, stock gevent worker {stock['exited']:.2f} s; "
          f"stock/ours = {stock['exited'] / ours['exited']:.1f}x")
    verdict = "met" if ours["exited"] < TARGET_SECONDS else "MISSED"
    mark = "beaten" if ours["exited"] < MARK_SECONDS else "not beaten"
    print(f"  target under {TARGET_SECONDS:.0f} s: {verdict}; mark {MARK_SECONDS:.0f} s: {mark}")
    return {"stock": stock, "gateway": ours}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    run(args.sockets, args.workers)


if __name__ == "__main__":
    main()
