"""One user's WebSocket on this worker: who it is, the frames it gets
first, and the notifications the hub gives it, written in order by one
greenlet that runs only while there is something to write (an idle rider
holds none, bench/RESULTS.md). It calls nothing back: the hub tells it what
to write, when it may start, and when it is cut off.

It also reads its socket, in the socket's own greenlet: simple-websocket's
reader thread is never started (ReadByHandler), so an idle socket holds one
greenlet and no selector (bench/RESULTS.md, "memory per rider")."""
import logging
import socket
import time
import uuid

import gevent
import orjson
from gevent.lock import RLock
from simple_websocket import ConnectionClosed
from wsproto.events import Ping
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from ridesync import contract, metrics
from ridesync.gateway import dialects, observed

log = logging.getLogger(__name__)

REPLACED = (4000, "replaced by a newer connection")
RECENT_MESSAGES = 64  # message ids remembered to drop redelivered copies
WRITE_TIMEOUT = 10.0  # seconds a write may wait on a phone that reads nothing
PING_UNANSWERED = (CloseReason.POLICY_VIOLATION, "Ping/Pong timeout")  # simple-websocket's close


class ReadByHandler:
    """simple-websocket's thread_class (SOCK_SERVER_OPTIONS): the reader
    thread it makes for each socket is never started; Connection.receive
    reads in the socket's own greenlet instead."""
    __slots__ = ("name",)

    def __init__(self, target):
        self.name = "read by its handler"

    def start(self):
        pass


class Connection:
    __slots__ = ("role", "user_id", "v2", "dialect", "session", "first", "driver", "position", "closed", "replaced",
                 "started", "cut_off", "_unwritable", "_ws", "_sock", "_readable", "_next_ping", "_recent", "_pending",
                 "_writer", "_writing", "_read_trip")

    def __init__(self, role, user_id, v2, read_trip):
        """read_trip() -> the user's current trip (JSON), None, or dialects.UNREAD: for the v1 dialect."""
        self.role, self.user_id, self.v2 = role, user_id, v2
        self.dialect = dialects.for_socket(role, v2)
        self._read_trip = read_trip
        self.session = uuid.uuid4().hex  # its markers' in the feed, and what registers a driver with DriverService
        self.first = []  # (type, data) frames the socket gets before any other
        self.driver = None  # a driver's: the Driver as DriverService registered it
        self.position = None  # a rider's: where the rider's phone last said they are
        self.closed = False  # the socket is gone (or never opened)
        self.replaced = False  # a newer socket of the user took over
        self.started = False  # the hub let it write: what an older socket left is in front
        self.cut_off = False  # gets nothing more
        self._unwritable = False  # a write failed: the socket is gone, its teardown comes
        self._ws = self._sock = self._readable = None
        self._next_ping = None  # when the phone is pinged next (time.monotonic)
        self._recent = []  # the last RECENT_MESSAGES message ids it wrote, oldest first
        self._pending = []  # notifications given, not yet written, oldest first
        self._writer = None  # the greenlet writing, while there is something to write
        self._writing = None  # the notice it is writing, out of _pending: back in front unless written

    # The socket.

    def open(self, ws):
        """The WebSocket is up."""
        self._ws = ws
        # simple-websocket writes pongs and close replies (from receive())
        # with a bare send(), beside the writer: one lock and sendall keep
        # frames whole.
        self._sock = ws.sock = _OneWriterSocket(ws.sock)
        metrics.socket_opened(self.role)
        log.info("%s %s connected (%s)", self.role, self.user_id, "v2" if self.v2 else "v1")

    def greet(self):
        """Its first frames, then the notifications it is given."""
        for frame in self.first:
            self.send(*frame)
        if self.replaced:  # cut while it opened
            self._close_replaced()
        self._wake()

    def send(self, kind, data):
        """Raises ConnectionClosed when the socket is gone."""
        frame = orjson.dumps({"type": kind, "data": data}).decode()
        # Built and written under one lock: with permessage-deflate (every
        # browser asks for it) each frame is compressed against the ones
        # before it, so frames must leave in the order they were built.
        with self._sock.lock:
            self._ws.send(frame)

    def send_error(self, code, message):
        self.send("error", {"code": code, "message": message})

    def receive(self):
        """The next frame the phone sends; None once the socket is closed.
        Read as simple-websocket's reader thread would: its events handled
        by it (pings answered, a close answered, a message too big refused),
        a ping every ping_interval, and the socket closed (1008) when the
        phone did not answer the one before."""
        ws = self._ws
        if self._readable is None:  # the first call
            self._readable = gevent.get_hub().loop.io(self._sock.fileno(), 1)  # 1: readable
            if ws.ping_interval:
                self._next_ping = time.monotonic() + ws.ping_interval
        while not ws.input_buffer:
            if not ws.connected:
                return None
            if self._arrived():
                self._read()
            else:
                self._ping()
        return ws.input_buffer.pop(0)

    def _arrived(self):
        """True once the phone sent something (or close() woke it), False
        at the next ping; when that is overdue (a frame took long to
        handle), only what had already arrived counts."""
        ws = self._ws
        wait = None if self._next_ping is None else self._next_ping - time.monotonic()
        ws.event.clear()  # set for the messages just read; a close() since would have been seen
        self._readable.start(ws.event.set)
        try:
            if wait is None or wait > 0:
                ws.event.wait(wait)
            else:
                gevent.idle()  # after what the event loop has ready
            return ws.event.is_set()
        finally:
            self._readable.stop()

    def _read(self):
        ws = self._ws
        if not ws.connected:  # close() woke it
            return
        try:
            data = self._sock.recv(ws.receive_bytes)
            if not data:
                raise OSError("the phone hung up")
            ws.ws.receive_data(data)
            ws.connected = ws._handle_events()
        except (OSError, LocalProtocolError):
            ws.connected = False

    def _ping(self):
        ws = self._ws
        if not ws.pong_received:
            self.close(*PING_UNANSWERED)
            ws.connected = False  # even if the close frame could not be written
            return
        ws.pong_received = False
        self._next_ping = max(time.monotonic(), self._next_ping) + ws.ping_interval
        try:
            self._sock.send(ws.ws.send(Ping()))
        except OSError:
            ws.connected = False

    def close(self, code, reason):
        try:
            self._ws.close(code, reason)
        except (ConnectionClosed, OSError):
            pass
        self._ws.event.set()  # wakes the handler waiting in receive()

    def hang_up(self):
        """The socket is gone: nothing more is written; what was not stays
        for the hub to hand on."""
        self.closed = True
        self._stop_writing()
        if self._readable is not None:  # receive()'s watcher, stopped after each wait: freed here
            self._readable.close()
        if self._ws is not None:
            metrics.socket_closed(self.role)
            log.info("%s %s disconnected (close code %s%s)", self.role, self.user_id,
                     self._ws.close_reason, ", replaced" if self.replaced else "")

    # What the hub gives it.

    def give(self, notice):
        self._pending.append(notice)
        self._wake()

    def start(self, first):
        """From now on it writes: first these (what an older socket did not), then what it was given."""
        self._pending[:0] = first
        self.started = True
        self._wake()

    def cut(self):
        """Nothing more for it: a socket still open was replaced by a newer
        one and is closed. Returns its writer if that is in the middle of a
        notice, which its phone then gets or not: what it did not write
        (unwritten()) is known once that writer is done."""
        self.cut_off = True
        writer = self._writer if self._writing is not None else None
        if writer is None:
            self._stop_writing()  # one not started yet
        if not self.closed:
            self.replaced = True
            if self._ws is not None:
                gevent.spawn(self._close_replaced)
        return writer

    def unwritten(self):
        """What it was given and did not write, oldest first; it writes nothing more."""
        unwritten, self._pending = [*self.dialect.held, *self._pending], []  # held back by the dialect: older
        return unwritten

    @property
    def connected(self):
        """Its WebSocket is up."""
        return self._ws is not None and not self.closed

    def _close_replaced(self):
        log.info("%s %s reconnected; closing the older socket", self.role, self.user_id)
        self.close(*REPLACED)

    def _wake(self):
        if (self.started and self._ws is not None and not (self.closed or self._unwritable or self.cut_off)
                and self._writer is None and self._pending):
            self._writer = gevent.spawn(self._write_all)

    def _write_all(self):
        try:
            while self._pending and not self.cut_off:
                self._writing = self._pending.pop(0)
                if not self._write(self._writing):
                    self._unwritable = True  # its teardown hands on what is left
                    return
                self._writing = None
        finally:
            if self._writing is not None:  # not written (the socket failed, or the writer was killed)
                self._pending.insert(0, self._writing)
                self._writing = None
            self._writer = None  # no switch since the list was seen empty: give() cannot slip in between

    def _stop_writing(self):
        if self._writer is not None:
            self._writer.kill(block=False)  # one it was writing goes back in front: at worst, sent again
            self._writer = None

    def _write(self, notice):
        """A notification as this socket's dialect has it (dialects.py): a
        refused answer is an `error` frame on v2 (counted on both). False
        once the socket is gone."""
        try:
            _owner, data = contract.open_envelope(notice.body)
        except ValueError as exc:
            log.error("%s %s: %s %s is not an envelope, skipped: %s",
                      self.role, self.user_id, notice.type, notice.message_id, exc)
            return True
        kind = notice.type
        if kind == contract.DRIVER_ANSWER_REFUSED:
            code, message = str(data.get("code")), str(data.get("message"))
            log.info("driver %s was refused: %s", self.user_id, message)
            metrics.FRAMES_REJECTED.labels(code).inc()
            kind, data = "error", {"code": code, "message": message}
        return self.dialect.deliver(kind, data, notice, self._send_written, self._read_trip)

    def _send_written(self, write):
        """One frame the dialect made of a notification, unless this socket already had it."""
        if not self._first_time(write.message_id):
            return True
        try:
            with observed.delivering(self, write.kind, write.notice.headers, write.data):
                self.send(write.kind, write.data)
                log.info("%s -> %s %s", write.kind, self.role, self.user_id)
        except (ConnectionClosed, OSError):
            return False
        return True

    def _first_time(self, message_id):
        """False for a message this socket was already given (a redelivery)."""
        if message_id is None:
            return True
        if message_id in self._recent:
            return False
        self._recent.append(message_id)
        del self._recent[:-RECENT_MESSAGES]
        return True


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
