"""gunicorn's gevent worker, made to drain the moment it is told to stop.

Out of the box, on SIGTERM the gevent worker notices only at its next
one-second tick, then waits for every handler to return; a WebSocket handler
never returns on its own, so every stop took the whole graceful_timeout and
phones saw 1006. This worker starts the drain in the signal handler: every
socket gets 1001 at once, its handler returns, and the worker exits as soon
as in-flight HTTP requests have their answers and the drain is done, not at
a tick: a keep-alive connection is closed after its answer, and one idle
between two requests at once.

It also bounds how long a request may take to arrive: its line and headers,
then its body (read here, whole, before the app sees it), each within
BODY_TIMEOUT, or the answer is 408 and the connection closed; a body that
trickles in (a slowloris) holds a connection no longer than that.

And it collects its garbage in full less often than CPython would: see
FULL_COLLECTION_AFTER."""
import gc
import io
import json
import queue
import signal
import sys
import time
import weakref

import gevent
from gevent.event import Event
from gunicorn.http.body import Body
from gunicorn.workers.ggevent import GeventWorker

from ridesync.gateway import MAX_BODY_BYTES
from ridesync.settings import process_settings

QUICK_DRAIN = 1.5  # seconds; gunicorn's quick shutdown (SIGINT/SIGQUIT) kills at 2 s
TIMEOUT_WRITE = 1.0  # seconds to hand a 408 to a client that may read nothing
# Younger collections between two full ones (CPython's default: 10). In a
# connect storm the heap grows by every socket's objects, and each full
# collection walks all of them: 7-8 of 190-230 ms each, 20% of the
# worker's CPU, while 5,000 riders connected (bench.reconnect, loaded).
# As by default, a full one also waits until what reached the oldest
# generation since the last is a quarter of what that held. Cyclic
# garbage that lived that long waits longer to be freed.
FULL_COLLECTION_AFTER = 100


class RequestTimedOut(Exception):
    """A request's head or body did not arrive within BODY_TIMEOUT."""


class WorkerStopping(Exception):
    """Thrown into a keep-alive connection idle between two requests when
    the worker stops: it is closed without an answer (no request came)."""


class GatewayWorker(GeventWorker):
    def init_process(self):
        gc.set_threshold(*gc.get_threshold()[:2], FULL_COLLECTION_AFTER)
        self._drain = None
        self._stopped = None  # an Event once run() began: set when the worker is told to stop
        self._handling = set()  # each connection's handler, while it lasts (what gunicorn's pool holds)
        self._between_requests = weakref.WeakSet()  # handlers of keep-alive connections waiting for their next request
        self._body_timeout = process_settings().body_timeout
        super().init_process()

    def timeout_ctx(self):
        """Around reading each request's line and headers (an idle
        keep-alive connection waits as long, then gets its 408 too)."""
        return gevent.Timeout(self._body_timeout, RequestTimedOut("the request's headers"))

    def handle(self, listener, client, addr):
        """A connection, while it lasts: a stop waits for these."""
        handler = gevent.getcurrent()
        self._handling.add(handler)
        try:
            super().handle(listener, client, addr)
        finally:
            self._handling.discard(handler)

    def handle_request(self, listener_name, req, sock, addr):
        self._between_requests.discard(gevent.getcurrent())
        with gevent.Timeout(self._body_timeout, RequestTimedOut("the request's body")):
            body = req.body.read(MAX_BODY_BYTES + 1)  # no more: the app refuses larger ones (413)
        if len(body) > MAX_BODY_BYTES:
            req.must_close = True  # the rest is never read, so the connection cannot be reused
        req.body = Body(io.BytesIO(body))
        super().handle_request(listener_name, req, sock, addr)
        if not self.alive:
            raise StopIteration  # gunicorn's way to close the connection: answered during a stop, kept for no other
        self._between_requests.add(gevent.getcurrent())

    def handle_error(self, req, client, addr, exc):
        if isinstance(exc, WorkerStopping):
            return
        if not isinstance(exc, RequestTimedOut):
            return super().handle_error(req, client, addr, exc)
        self.log.info("408 to %s: %s did not arrive within BODY_TIMEOUT (%ss)", addr[0], exc, self._body_timeout)
        message = f"{exc} did not arrive within {self._body_timeout:g} s"
        body = json.dumps({"error": {"code": "request_timeout", "message": message}}).encode()
        head = (f"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        with gevent.Timeout(TIMEOUT_WRITE, False):
            client.sendall(head + body)

    def init_signals(self):
        super().init_signals()
        # A stop signal that came between the fork and now went to the
        # master's handler, which this process inherited with the master's
        # signal queue (gunicorn.conf.py's post_fork hands it over).
        for sig in _emptied(getattr(self, "master_signal_queue", None)):
            if sig == signal.SIGTERM:
                self.handle_exit(sig, None)
            elif sig in (signal.SIGINT, signal.SIGQUIT):
                self.handle_quit(sig, None)

    def handle_exit(self, sig, frame):
        """SIGTERM: a graceful stop within graceful_timeout."""
        super().handle_exit(sig, frame)
        self._start_drain(self.cfg.graceful_timeout - 1)

    def handle_quit(self, sig, frame):
        """SIGINT or SIGQUIT: a quick stop, still with close frames."""
        self.alive = False
        gevent.spawn(self._quit)  # out of the signal handler: worker_int may block

    def run(self):
        hub = getattr(self.wsgi, "extensions", {}).get("ridesync.hub")  # none in bench's bare echo app
        if hub is not None:
            hub.start()  # the live side's broker connection, before the first socket
        self._stopped = Event()
        gevent.spawn(self._exit_once_stopped)
        super().run()  # returns once no request is in flight, unless the worker exited first
        if self._drain is not None:
            self._drain.join(self.cfg.graceful_timeout)

    def _start_drain(self, timeout):
        for handler in list(self._between_requests):  # they would hold the worker up to BODY_TIMEOUT
            handler.kill(WorkerStopping(), block=False)
        if self._drain is None and hasattr(self, "wsgi"):  # still booting: nothing to drain
            # The drain only lets go of what the worker holds, and the worker exits after it: no full
            # collection walks it again (one took 0.7-0.8 s of a 10,000-socket drain); young ones go on.
            gc.freeze()
            self._drain = gevent.spawn(_gateway(self.wsgi).drain, timeout)
        if self._stopped is not None:
            self._stopped.set()

    def _exit_once_stopped(self):
        """gunicorn's loop (run()) notices a stop at its next one-second
        tick, and that its connections are done at a tick after: 0.5-1 s of
        every stop. Once stopped, this exits the worker as soon as its
        connections are done and its drain is; what outlasts the graceful
        timeout is left to gunicorn's loop, which kills it."""
        self._stopped.wait()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while self._handling and time.monotonic() < deadline:  # new ones while it still accepts
            gevent.joinall(list(self._handling), timeout=deadline - time.monotonic())
        if self._drain is not None:
            self._drain.join(max(0.0, deadline - time.monotonic()))
        if not self._handling and (self._drain is None or self._drain.dead):
            sys.exit(0)  # as gunicorn's own quick stop ends a gevent worker: gevent raises it in the main greenlet

    def _quit(self):
        # The worker exits once the drained handlers have returned: well inside the master's 2 s.
        self.cfg.worker_int(self)
        self._start_drain(QUICK_DRAIN)


def _emptied(signal_queue):
    while signal_queue is not None:
        try:
            yield signal_queue.get_nowait()
        except queue.Empty:
            return


def _gateway(app):
    return app.extensions["ridesync.hub"]
