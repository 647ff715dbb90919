"""The phones connected to this worker: each WebSocket with its one writer,
and the register of who is connected. Which of a user's sockets is the one
(a newer one anywhere replaces it) is the feed's to say (mailroom.py)."""
import logging
import socket
from collections import deque

import gevent
import orjson
from gevent.lock import RLock
from simple_websocket import ConnectionClosed

from ridesync.gateway import observed

log = logging.getLogger(__name__)

REPLACED = (4000, "replaced by a newer connection")
RECENT_MESSAGES = 64  # message ids remembered to drop redelivered copies
WRITE_TIMEOUT = 10.0  # seconds a write may wait on a phone that reads nothing


class Phone:
    def __init__(self, ws, role, user_id):
        self.role, self.user_id = role, user_id
        self.replaced = False
        self._ws = ws
        # simple-websocket writes from its reader thread too (pongs, close
        # replies), with a bare send(): one lock and sendall keep frames whole.
        self._sock = ws.sock = _OneWriterSocket(ws.sock)
        self._recent = deque(maxlen=RECENT_MESSAGES)

    def send(self, kind, data):
        """Raises ConnectionClosed when the socket is gone."""
        frame = orjson.dumps({"type": kind, "data": data}).decode()
        # Built and written under one lock: with permessage-deflate (every
        # browser asks for it) each frame is compressed against the ones
        # before it, so frames must leave in the order they were built.
        with self._sock.lock:
            self._ws.send(frame)

    def deliver(self, kind, message_id, data, headers):
        """Writes a notification unless this socket already had it; False
        when the socket is gone."""
        if not self.first_time(message_id):
            return True
        try:
            with observed.delivering(self, kind, headers, data):
                self.send(kind, data)
                log.info("%s -> %s %s", kind, self.role, self.user_id)
        except (ConnectionClosed, OSError):
            return False
        return True

    def replace(self):
        """A newer socket of this user opened, here or on another worker."""
        log.info("%s %s reconnected; closing the older socket", self.role, self.user_id)
        self.replaced = True
        self.close(*REPLACED)

    def send_error(self, code, message):
        self.send("error", {"code": code, "message": message})

    def receive(self):
        """The next frame, or None once the socket is closed."""
        try:
            return self._ws.receive()
        except ConnectionClosed:
            return None

    def first_time(self, message_id):
        """False for a message this socket was already given (a redelivery)."""
        if message_id is None:
            return True
        if message_id in self._recent:
            return False
        self._recent.append(message_id)
        return True

    def close(self, code, reason):
        try:
            self._ws.close(code, reason)
        except (ConnectionClosed, OSError):
            pass
        self._ws.event.set()  # wakes the handler waiting in receive()

    @property
    def close_code(self):
        return self._ws.close_reason


class Switchboard:
    """Who is connected to this worker, by role and user."""

    def __init__(self):
        self._phones = set()

    def connect(self, phone):
        self._phones.add(phone)

    def disconnect(self, phone):
        self._phones.discard(phone)

    def __len__(self):
        return len(self._phones)

    def count(self, role):
        return sum(1 for phone in self._phones if phone.role == role)

    def phones(self):
        return list(self._phones)


class _OneWriterSocket:
    def __init__(self, sock):
        self._sock = sock
        self.lock = RLock()

    def send(self, data):
        """All of data or OSError; a phone that takes nothing for
        WRITE_TIMEOUT seconds is dead and its socket is shut."""
        with self.lock:
            try:
                with gevent.Timeout(WRITE_TIMEOUT):
                    self._sock.sendall(data)
            except gevent.Timeout:
                self.close()
                raise OSError(f"the phone took nothing for {WRITE_TIMEOUT}s") from None
        return len(data)

    def recv(self, size):
        return self._sock.recv(size)

    def fileno(self):
        return self._sock.fileno()

    def close(self):
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
