"""A process holding many WebSocket clients cheaply: gevent and raw sockets
doing the RFC 6455 handshake themselves (one greenlet and a few hundred bytes
each), answering the server's pings, and timing every frame that carries a
benchmark event ({"seq", "t"} in its data).

    python -m bench.clients --url ws://127.0.0.1:8081/ws/riders?userID= --prefix r- --count 10000

It connects riders <prefix>0 .. <prefix>N-1 (a client counts as connected
once the server's 101 answer carries the right Sec-WebSocket-Accept), prints
one JSON line when done (with --wait-for-go it first says it is ready and
connects on a `go` line, so that its start is not timed), then obeys commands on stdin, one per line, each
answered by one JSON line: `status`, `dump <path>` (the events received, as
[user, seq, published, received] rows) and `quit` (close every socket with
1000 and exit; end of input does the same)."""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
from gevent.fileobject import FileObjectPosix  # noqa: E402
from gevent.pool import Pool  # noqa: E402

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
HANDSHAKE_TIMEOUT = 60.0


class Refused(Exception):
    pass


class Client:
    __slots__ = ("user", "sock", "closed_by_server")

    def __init__(self, user, sock):
        self.user, self.sock, self.closed_by_server = user, sock, None


class Fleet:
    def __init__(self, url, prefix):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        # Resolved once: socket.create_connection asks gevent's resolver (a
        # thread pool) at each connect, a quarter of the clients' CPU.
        self.family, _, _, _, self.address = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0]
        self.path = parts.path + ("?" + parts.query if parts.query else "")
        self.prefix = prefix
        self.open = {}  # user -> Client
        self.failures = Counter()
        self.connected = 0
        self.closed_by_server = Counter()
        self.received = []  # (user, seq, published, received)
        self.other_frames = 0

    def connect_all(self, count, concurrency, deadline):
        pool = Pool(concurrency)
        for n in range(count):
            if time.monotonic() > deadline:
                self.failures["deadline"] += count - n
                break
            pool.spawn(self._connect, f"{self.prefix}{n}")
        pool.join(timeout=max(0.0, deadline - time.monotonic()) + HANDSHAKE_TIMEOUT)
        pool.kill()

    def _connect(self, user):
        try:
            sock, rest = self._handshake(user)
        except (OSError, Refused) as exc:
            self.failures[type(exc).__name__ + (f": {exc}" if isinstance(exc, Refused) else "")] += 1
            return
        client = Client(user, sock)
        self.open[user] = client
        self.connected += 1
        gevent.spawn(self._read, client, rest)

    def _handshake(self, user):
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(HANDSHAKE_TIMEOUT)
            sock.connect(self.address)
            key = base64.b64encode(os.urandom(16))
            sock.sendall(b"GET %s%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                         % (self.path.encode(), user.encode(), self.host.encode(), self.port, key))
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    raise Refused("closed before the upgrade")
                data += chunk
                if len(data) > 65536:
                    raise Refused("oversized answer")
            head, rest = data.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            if lines[0].split(" ")[1:2] != ["101"]:
                raise Refused(lines[0])
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
            if headers.get("sec-websocket-accept") != accept:
                raise Refused("bad Sec-WebSocket-Accept")
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        return sock, rest

    def _read(self, client, buf):
        sock = client.sock
        try:
            while True:
                while len(buf) >= 2:
                    length, start = buf[1] & 0x7F, 2
                    if length == 126:
                        if len(buf) < 4:
                            break
                        length, start = struct.unpack(">H", buf[2:4])[0], 4
                    elif length == 127:
                        if len(buf) < 10:
                            break
                        length, start = struct.unpack(">Q", buf[2:10])[0], 10
                    if len(buf) < start + length:
                        break
                    opcode, payload, buf = buf[0] & 0x0F, buf[start:start + length], buf[start + length:]
                    if not self._frame(client, opcode, payload):
                        return
                chunk = sock.recv(65536)
                if not chunk:
                    self._gone(client, "eof")
                    return
                buf += chunk
        except OSError as exc:
            self._gone(client, type(exc).__name__)

    def _frame(self, client, opcode, payload):
        now = time.time()
        if opcode == OP_TEXT:
            try:
                data = json.loads(payload)["data"]
                self.received.append((client.user, data["seq"], data["t"], now))
            except (ValueError, KeyError, TypeError):
                self.other_frames += 1
        elif opcode == OP_PING:
            _send(client.sock, OP_PONG, payload)
        elif opcode == OP_CLOSE:
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
            try:
                _send(client.sock, OP_CLOSE, payload[:2])
            except OSError:
                pass
            self._gone(client, f"close {code}")
            return False
        return True

    def _gone(self, client, why):
        if self.open.pop(client.user, None) is client:
            self.closed_by_server[why] += 1
        client.sock.close()

    def status(self):
        return {"open": len(self.open), "connected": self.connected, "failed": dict(self.failures),
                "closed_by_server": dict(self.closed_by_server), "received": len(self.received),
                "other_frames": self.other_frames}

    def quit(self):
        clients, self.open = list(self.open.values()), {}
        for client in clients:
            try:
                _send(client.sock, OP_CLOSE, struct.pack(">H", 1000))
            except OSError:
                pass
        gevent.sleep(0.5)  # let the server see the close frames before the sockets go
        for client in clients:
            client.sock.close()


def _send(sock, opcode, payload):
    # Client frames are masked; a zero mask leaves the payload as it is.
    assert len(payload) < 126
    sock.sendall(bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload)


def _say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the WebSocket URL, ending where the user id goes")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=100, help="handshakes in flight")
    parser.add_argument("--connect-timeout", type=float, default=600.0, help="seconds for all handshakes")
    parser.add_argument("--wait-for-go", action="store_true", help="say ready, then connect on a `go` line")
    args = parser.parse_args()

    fleet = Fleet(args.url, args.prefix)
    commands = FileObjectPosix(sys.stdin.fileno(), "rb")
    if args.wait_for_go:
        _say({"event": "ready"})
        commands.readline()
    started = time.monotonic()
    fleet.connect_all(args.count, args.concurrency, started + args.connect_timeout)
    _say({"event": "connected", "seconds": round(time.monotonic() - started, 2), **fleet.status()})
    try:
        for line in commands:
            command, _, arg = line.decode().strip().partition(" ")
            if command == "status":
                _say(fleet.status())
            elif command == "dump":
                with open(arg, "w") as out:
                    json.dump(fleet.received, out)
                _say({"dumped": len(fleet.received)})
            elif command == "quit":
                break
            else:
                _say({"error": f"unknown command {command!r}"})
    finally:
        fleet.quit()
        _say({"event": "quit"})


if __name__ == "__main__":
    main()
