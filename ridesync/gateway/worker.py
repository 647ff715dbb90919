"""What one gateway worker process holds for its sockets: who is connected,
their inboxes on the broker, and a publisher. Made on first use, inside the
worker (after gunicorn's fork and gevent's patching), never at import; and
drained when the worker is told to stop."""
import logging
import os
import time

import gevent

from ridesync.gateway.inboxes import Inboxes
from ridesync.gateway.phones import Switchboard
from ridesync.rabbit import Publisher

log = logging.getLogger(__name__)
GOING_AWAY = (1001, "server shutting down; reconnect")


class Worker:
    def __init__(self, settings):
        self._settings = settings
        self._pid = None
        self.draining = False
        self.lines = set()  # every open line, until its teardown is over
        self.registrar = None  # the greenlet keeping its drivers registered (live.py), once it has one

    @property
    def switchboard(self):
        return self._started()._switchboard

    @property
    def inboxes(self):
        return self._started()._inboxes

    @property
    def publisher(self):
        return self._started()._publisher

    def _started(self):
        if self._pid != os.getpid():
            name = f"gateway-{os.getpid()}"
            self._pid = os.getpid()
            self._switchboard = Switchboard()
            self._inboxes = Inboxes(self._settings.amqp_url, self._settings.reconnect_window, name).start()
            self._publisher = Publisher(self._settings.amqp_url, name)
        return self

    def drain(self, timeout):
        """Closes every socket with 1001 (going away), waits for their
        teardown (drivers unregistered, and what each socket had not written
        handed on in the feed for its user's next socket), then closes the
        broker connections. Returns within timeout seconds."""
        self.draining = True
        if self._pid != os.getpid():
            return  # this worker never opened a socket
        deadline = time.monotonic() + timeout
        phones = self._switchboard.phones()
        log.info("draining: closing %d sockets (1001)", len(phones))
        for phone in phones:  # at once: one phone slow to take its frame holds up no other
            gevent.spawn(phone.close, *GOING_AWAY)
        _wait(lambda: not self.lines and self._inboxes.settled, deadline)
        if self.lines or not self._inboxes.settled:
            log.warning("draining: %d sockets still tearing down, %d not yet handed on in the feed at the deadline",
                        len(self.lines), self._inboxes.open_count)
        self._inboxes.stop()
        self._publisher.close()
        _wait(lambda: self._inboxes.stopped, deadline)
        log.info("drained: sockets closed, broker connections %s",
                 "closed" if self._inboxes.stopped else "still closing")


def _wait(condition, deadline):
    while not condition() and time.monotonic() < deadline:
        gevent.sleep(0.01)
