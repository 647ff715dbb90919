"""What one gateway worker process holds for its sockets: who is connected,
their inboxes on the broker, and a publisher. Made on first use, inside the
worker (after gunicorn's fork and gevent's patching), never at import."""
import os

from ridesync.gateway.inboxes import Inboxes
from ridesync.gateway.phones import Switchboard
from ridesync.rabbit import Publisher


class Worker:
    def __init__(self, settings):
        self._settings = settings
        self._pid = None

    def __getattr__(self, name):
        # switchboard, inboxes, publisher: built once per process, on first use
        if name.startswith("_") or self._pid == os.getpid():
            raise AttributeError(name)
        self._build()
        return getattr(self, name)

    def _build(self):
        name = f"gateway-{os.getpid()}"
        self._pid = os.getpid()
        self.switchboard = Switchboard()
        self.inboxes = Inboxes(
            self._settings.amqp_url, self._settings.reconnect_window, name, self.switchboard.take_over
        ).start()
        self.publisher = Publisher(self._settings.amqp_url, name)
