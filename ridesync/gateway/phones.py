"""The phones connected to this worker: each WebSocket with its one writer,
and the register of who is connected, where a newer socket replaces an
older one of the same user."""
import json
import logging
import socket
import time
import uuid
from collections import deque

import gevent
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
        self.session = uuid.uuid4().hex
        self.connected_at = time.time()
        self.replaced = False
        self._ws = ws
        # simple-websocket writes from its reader thread too (pongs, close
        # replies), with a bare send(): one lock and sendall keep frames whole.
        self._sock = ws.sock = _OneWriterSocket(ws.sock)
        self._recent = deque(maxlen=RECENT_MESSAGES)

    def send(self, kind, data):
        """Raises ConnectionClosed when the socket is gone."""
        frame = json.dumps({"type": kind, "data": data})
        # Built and written under one lock: with permessage-deflate (every
        # browser asks for it) each frame is compressed against the ones
        # before it, so frames must leave in the order they were built.
        with self._sock.lock:
            self._ws.send(frame)

    def deliver(self, delivery):
        """Writes an inbox's delivery unless this socket already had it;
        False when the socket is gone."""
        if not self.first_time(delivery.message_id):
            return True
        try:
            with observed.delivering(self, delivery):
                self.send(delivery.type, delivery.data)
                log.info("%s -> %s %s", delivery.type, self.role, self.user_id)
        except (ConnectionClosed, OSError):
            return False
        return True

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
        self._phones = {}

    def connect(self, phone):
        previous = self._phones.get((phone.role, phone.user_id))
        self._phones[(phone.role, phone.user_id)] = phone
        if previous is not None:
            self._replace(previous)

    def disconnect(self, phone):
        if self._phones.get((phone.role, phone.user_id)) is phone:
            del self._phones[(phone.role, phone.user_id)]

    def take_over(self, role, user_id, session, since):
        """A socket of this user opened at `since` on some worker: it
        replaces the one here if that one is older."""
        phone = self._phones.get((role, user_id))
        if phone is not None and phone.session != session and phone.connected_at <= since:
            del self._phones[(role, user_id)]
            self._replace(phone)

    def __len__(self):
        return len(self._phones)

    def count(self, role):
        return sum(1 for r, _ in self._phones if r == role)

    def phones(self):
        return list(self._phones.values())

    @staticmethod
    def _replace(phone):
        log.info("%s %s reconnected; closing the older socket", phone.role, phone.user_id)
        phone.replaced = True
        gevent.spawn(phone.close, *REPLACED)


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
