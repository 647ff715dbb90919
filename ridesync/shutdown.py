"""How a service process (trip, driver, payment) stops on SIGTERM or SIGINT.

New gRPC calls are refused and the consumers stop taking messages at once;
the calls in flight and the message in hand then finish within the grace, in
parallel. The publishers close last: an in-flight CreateTrip, or a message in
hand, still publishes with them."""
import logging
import signal
import threading
import time

from ridesync.settings import process_settings

log = logging.getLogger(__name__)
SIGNAL_POLL = 0.1  # seconds


def wait_for_stop_signal():
    """Blocks until SIGTERM or SIGINT; returns the signal's name."""
    received = []
    stop = threading.Event()

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Python runs the handler in this thread, but a signal the kernel gives
    # another thread does not wake it from an untimed wait: wake up often.
    while not stop.wait(SIGNAL_POLL):
        pass
    return received[0]


def serve_until_signal(name, server=None, consumers=(), publishers=()):
    """Runs until SIGTERM or SIGINT, then stops gracefully and returns."""
    signame = wait_for_stop_signal()
    grace = process_settings().shutdown_grace
    log.info("%s stopping on %s: refusing new calls and messages, finishing those in hand within %ss",
             name, signame, grace)
    began = time.monotonic()
    drained = stop(server, consumers, began + grace)
    for publisher in publishers:
        publisher.close()
    log.info("%s stopped %.1fs after %s: %s; publishers closed",
             name, time.monotonic() - began, signame, "; ".join(drained))


def stop(server, consumers, deadline):
    """What each intake drained, stopping them all by the deadline."""
    calls = _drain_calls(server, deadline) if server else None
    drained = [consumer.stop(_left(deadline)) for consumer in consumers]
    return ([calls()] if calls else []) + drained


def _drain_calls(server, deadline):
    """Refuses new calls at once; returns a function that waits for the
    calls in flight and says what became of them."""
    done = server.stop(_left(deadline))
    in_flight = len(server.calls)

    def finished():
        done.wait()
        cut = len(server.calls)
        return f"gRPC calls in flight: {in_flight}, " + (f"{cut} cut at the grace" if cut else "all finished")

    return finished


def _left(deadline):
    return max(0.0, deadline - time.monotonic())
