"""Fuzzing one gateway worker (real gunicorn, RabbitMQ and the services)
with hostile frames and HTTP requests: no 5xx, no worker restart, the
worker's memory back within 10% of where it started, and a ride completing
at the end. Seeded, so a failure can be replayed (FUZZ_SEED).

Sizes from the environment: FUZZ_FRAMES and FUZZ_REQUESTS (small by default
for `make test` and CI; the issue's full pass is FUZZ_FRAMES=10000
FUZZ_REQUESTS=5000)."""
import json
import os
import random
import re
import socket

import websocket

from ridesync.gateway import MAX_BODY_BYTES
from tests.ride import assert_a_ride_completes, new_id, ride  # noqa: F401 (ride is a fixture)
from tests.support import gunicorn_worker_pids, token, wait_until

FRAMES = int(os.environ.get("FUZZ_FRAMES", "400"))
REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "300"))
SEED = int(os.environ.get("FUZZ_SEED", "7"))
MEMORY_SLACK = 1.10
MAX_FRAME = 64 * 1024  # the gateway's limit: beyond it, 1009

ODD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e309", "-1e309", "1e-400", "0x10", "01", "1.", "true", "null",
               '"37.7"', "[]", "{}", str(2 ** 80)]
ODD_STRINGS = ["", " ", "a\nb", "a\r\nb", "\\ud800", "\\u0000", "é" * 128, "x" * 129, "*", "#", "../", "%0A",
               "<script>", "' OR 1=1 --"]
FIELDS = ["type", "data", "tripID", "riderID", "driver", "location", "latitude", "longitude", "geohash", "reason",
          "userID", "rideFareID", "pickup", "destination", "packageSlug", "id"]
FRAME_TYPES = ["driver.cmd.location", "driver.cmd.trip_accept", "driver.cmd.trip_decline", "driver.cmd.trip_arrived",
               "driver.cmd.trip_started", "driver.cmd.trip_completed", "driver.cmd.trip_cancel", "error", "", "x" * 300]


class Hostile:
    """Hostile JSON-ish text and bytes, from one seeded generator."""

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def value(self, depth=0):
        pick = self.rng.randrange(9 if depth < 3 else 5)
        if pick == 0:
            return self.rng.choice(ODD_NUMBERS)
        if pick == 1:
            return json.dumps(self.rng.choice(ODD_STRINGS)).replace("\\\\u", "\\u")
        if pick == 2:
            return json.dumps("y" * self.rng.choice([1, 1000, 20_000]))
        if pick == 3:
            return str(self.rng.uniform(-1e6, 1e6))
        if pick == 4:
            return self.rng.choice(["true", "false", "null", "-0", "0"])
        if pick in (5, 6):
            return self.obj(depth + 1)
        if pick == 7:
            return "[" + ",".join(self.value(depth + 1) for _ in range(self.rng.randrange(4))) + "]"
        return json.dumps(self.rng.choice(FRAME_TYPES))

    def obj(self, depth=0, required=()):
        names = list(required) + self.rng.sample(FIELDS, self.rng.randrange(4))
        return "{" + ",".join(f"{json.dumps(n)}:{self.value(depth)}" for n in names) + "}"

    def text(self):
        """A frame's or body's text: mostly almost right, sometimes broken."""
        pick = self.rng.randrange(10)
        if pick == 0:
            deep = self.rng.choice([5_000, 10_000])
            return self.rng.choice(["[" * deep + "]" * deep, '{"a":' * deep + "1" + "}" * deep])
        if pick == 1:
            whole = self.frame_like()
            return whole[: self.rng.randrange(len(whole))]  # truncated
        if pick == 2:
            return self.rng.choice(["", " ", "null", "[]", '"a"', "1e309", "NaN", "{", "}"])
        return self.frame_like()

    def frame_like(self):
        data = self.obj(1, required=self.rng.sample(["tripID", "riderID", "driver", "location", "reason"], 2))
        return "{" + f'"type":{json.dumps(self.rng.choice(FRAME_TYPES))},"data":{data}' + "}"

    def raw_bytes(self, size=None):
        return self.rng.randbytes(size if size is not None else self.rng.randrange(1, 4096))

    def invalid_utf8(self):
        return b'{"type":"driver.cmd.location","data":{"x":"' + self.rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]) + b'"}}'


def test_a_worker_takes_hostile_frames_and_requests_and_still_serves_a_ride(ride):
    url = ride.another_gateway(workers=1)
    gateway = ride.process("gateway-2")
    (worker,) = gunicorn_worker_pids(gateway)
    hostile = Hostile(SEED)
    port = int(url.rsplit(":", 1)[1])
    _warm_up(url, port)
    before = _rss_kib(worker)

    statuses = _fuzz_http(port, hostile, REQUESTS)
    corrupt = _fuzz_frames(url, hostile, FRAMES)

    assert not [s for s in statuses if s >= 500], sorted(set(statuses))
    assert not corrupt, corrupt[:5]
    log = gateway.output()
    assert gunicorn_worker_pids(gateway) == [worker], "a worker was restarted"
    assert "Traceback" not in log and "WORKER TIMEOUT" not in log
    closes = set(re.findall(r"disconnected \(close code (\w+)", log))
    assert closes and closes <= {"1000", "1005", "1007", "1009"}, closes  # never None (no close frame) nor 1011
    settled = wait_until(lambda: _rss_kib(worker) <= before * MEMORY_SLACK and _rss_kib(worker), timeout=30,
                         message=f"the worker's memory to be back within 10% of {before} KiB")
    print(f"fuzz: {REQUESTS} requests, {FRAMES} frames; worker RSS {before} -> {settled} KiB; "
          f"statuses {sorted(set(statuses))}, close codes {sorted(closes)}")
    assert_a_ride_completes(ride, url)


def _warm_up(url, port):
    """One round of everything, so the measure starts from a worker that has loaded what it uses."""
    _fuzz_http(port, Hostile(SEED + 1), 30)
    _fuzz_frames(url, Hostile(SEED + 1), 30)


def _fuzz_http(port, hostile, count):
    rng, statuses = hostile.rng, []
    riders = [new_id("rider") for _ in range(5)]
    for n in range(count):
        method, path = rng.choice([("POST", "/trip/preview"), ("POST", "/trip/start"), ("POST", "/trip/cancel"),
                                   ("GET", "/trip/current?userID=" + rng.choice(riders + ODD_STRINGS)),
                                   ("GET", "/trip/" + rng.choice(["x", "%ff%fe", "a%0Ab", "é" * 200])),
                                   ("GET", "/healthz"), ("GET", "/ws/riders?userID=%0A"), ("PUT", "/trip/preview")])
        headers = [b"Host: gateway"]
        pick = rng.randrange(6)
        if pick < 3:
            headers.append(f"Authorization: Bearer {token(rng.choice(riders), rng.choice(['rider', 'driver']))}".encode())
        elif pick == 3:
            headers.append(b"Authorization: Bearer " + rng.choice([b"x", b"a.b.c", b"\xff\xfe", b"e" * 5000]))
        headers.append(b"X-Request-ID: " + rng.choice([b"ok-1", b"a\rb", b"\xff\xfe", b"x" * 300, b"id\x00"]))
        headers.append(b"Content-Type: " + rng.choice([b"text/plain", b"application/json", b"\xff"]))
        body = _body(hostile)
        if n % 500 == 250:  # now and then 10 MiB: refused before it is read
            body = b"{" + b" " * (10 * 1024 * 1024) + b"}"
        statuses.append(_raw_request(port, method.encode(), path.encode("utf-8", "surrogateescape"), headers, body))
    return [s for s in statuses if s is not None]


def _body(hostile):
    pick = hostile.rng.randrange(8)
    if pick == 0:
        return hostile.raw_bytes()
    if pick == 1:
        return hostile.invalid_utf8()
    if pick == 2:
        return b"[" * 200_000  # more than the body limit, unfinished
    return hostile.text().encode("utf-8", "surrogatepass")[:MAX_BODY_BYTES * 2]


def _raw_request(port, method, path, headers, body):
    """The status of one HTTP/1.1 request written as bytes (so CR, LF and
    non-UTF-8 go out as they are); None when the gateway closed the connection without one."""
    request = b"%s %s HTTP/1.1\r\n%s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
        method, path, b"\r\n".join(headers), len(body))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        try:
            conn.sendall(request + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the body was read: the status is still there to read
        try:
            head = conn.recv(64)
        except ConnectionResetError:
            return None
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else None


def _fuzz_frames(url, hostile, count):
    """Frames on driver and rider sockets, reopened whenever the gateway
    closes one. Returns the frames that came back corrupt (a frame with
    reserved bits set, say: a handler that died mid-write)."""
    corrupt, phone = [], None
    for _ in range(count):
        if phone is None:
            phone = _open(url, hostile.rng)
        frame, opcode = _frame(hostile)
        try:
            phone.send(frame, opcode=opcode)
            closed = _closed(phone)
        except websocket.WebSocketProtocolException as exc:
            corrupt.append(f"{exc} after {frame[:60]!r}")
            closed = True
        except (websocket.WebSocketException, OSError):
            closed = True  # closed by the gateway; its own log says with which code
        if closed:
            phone.close()
            phone = None
    if phone is not None:
        phone.close()
    return corrupt


def _frame(hostile):
    """(payload, opcode) of one hostile frame."""
    kind = hostile.rng.randrange(10)
    if kind == 0:
        return hostile.raw_bytes(), websocket.ABNF.OPCODE_BINARY
    if kind == 1:
        return hostile.invalid_utf8(), websocket.ABNF.OPCODE_TEXT
    if kind == 2 and hostile.rng.random() < 0.1:
        return b"z" * (MAX_FRAME + hostile.rng.randrange(1, 1024 * 1024)), websocket.ABNF.OPCODE_TEXT
    return hostile.text().encode("utf-8", "surrogatepass"), websocket.ABNF.OPCODE_TEXT


def _open(url, rng):
    role = rng.choice(["rider", "driver"])
    user_id = new_id(role)
    path = f"/ws/{role}s?packageSlug=sedan" if role == "driver" else f"/ws/{role}s"
    return websocket.create_connection(url.replace("http", "ws") + path, timeout=10, suppress_origin=True,
                                       header={"Authorization": f"Bearer {token(user_id, role)}"})


def _closed(phone):
    """True once the gateway has closed the socket."""
    phone.settimeout(0.001)
    try:
        while True:
            opcode, _data = phone.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return True
    except websocket.WebSocketTimeoutException:
        return False
    finally:
        phone.settimeout(10)  # or the next frame is sent with a timeout of a millisecond, and cut


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
