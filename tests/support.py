"""Test helpers: real processes on loopback, an OSRM stand-in that is a real
HTTP server, a tap on the RabbitMQ exchange, and waiting with deadlines. The
benchmarks use them too: importing this module changes nothing (the tests'
vhost and environment are made by conftest.py's session fixture)."""
import dataclasses
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pika

from ridesync import contract, rabbit, tokens
from ridesync.ride.model import Coordinate
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests import vhost

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# This run's: its vhost is made, and both are put in the environment of
# every process a test starts, by the session fixture private_vhost
# (conftest.py). Gateways check tokens (AUTH_MODE=token, the default) signed
# with AUTH_SECRET; tests that need open mode say AUTH_MODE=open.
AMQP_URL = vhost.private_url(os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/"))
AUTH_SECRET = "ridesync-tests-" + uuid.uuid4().hex


def token(user_id, role="rider", **claims):
    """A token for user_id as role, signed with the tests' AUTH_SECRET."""
    return tokens.mint(AUTH_SECRET, user_id, role, **claims)


def bearer(user_id, role="rider"):
    """The Authorization header of user_id as role."""
    return {"Authorization": f"Bearer {token(user_id, role)}"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout=10.0, message="condition", interval=0.02):
    """condition()'s first truthy value, polling until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def grpc_serving(address):
    """Whether the gRPC service at address says it serves."""
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


class Process:
    """A process of ours in a session of its own, started with its own
    environment; what it writes goes to directory/name.log (but for its
    stdout when that is a pipe: the JSON lines a benchmark's process answers with)."""

    def __init__(self, name, args, env, directory, stdin=None, stdout=None):
        self.name = name
        self.log_path = os.path.join(directory, f"{name}.log")
        self._log = open(self.log_path, "wb")
        # The processes of one test share a SQLite file of their own, as make run's do.
        env = {"DATABASE_URL": f"sqlite:///{directory}/ridesync.db", **env}
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env={**os.environ, **env}, stdin=stdin, stdout=stdout or self._log, stderr=self._log,
            start_new_session=True,
        )
        self._terminated = False

    def output(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def terminate(self):
        """SIGTERM, once, while it runs: the start of stop(), for stop_all()."""
        if self.proc.poll() is None and not self._terminated:
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout=15):
        """SIGTERM, and SIGKILL to its whole session after timeout; what it left of its session is killed too."""
        self.terminate()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self._log.close()

    def assert_running(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")


def stop_all(processes, timeout=15):
    """Each process stopped as by Process.stop, all told at once: a test's
    teardown waits for the slowest drain, not for every drain in turn."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.stop(timeout)


# Where a test's service listens: a port it is given as it binds. A port
# free_port() found free may be another's by then, and gRPC servers share a
# port without a word (SO_REUSEPORT): a ride's DriverService once could
# answer calls for its TripService (two free_port() in a row give one port).
ANY_PORT = "127.0.0.1:0"


def start_service(module, address, env, tmp_path, name=None):
    """`python -m module` serving gRPC at address, once it answers; `.address`
    is where. With port 0 the service takes a port no one holds, and says
    which in its "listening on" line: no other process can take it first."""
    process = Process(name or module.rsplit(".", 1)[-1], [sys.executable, "-m", module], env, tmp_path)

    def ready():
        process.assert_running()
        process.address = listening_on(process, address)
        return process.address is not None and grpc_serving(process.address)

    wait_until(ready, timeout=20, message=f"{module} to serve at {address}")
    return process


def listening_on(process, address):
    """address, or when its port is 0, the one the service's log says it listens on (None before it says)."""
    if not address.endswith(":0"):
        return address
    said = re.search(r"listening on (\S+:\d+)", process.output())
    return said and said.group(1)


def start_gateway(env, tmp_path, workers=1, name="gateway"):
    """Real gunicorn with gevent workers; returns (process, base_url)."""
    port = free_port()
    process = Process(
        name, [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
        {"GATEWAY_DRAIN": "10", **env, "PORT": str(port), "WEB_CONCURRENCY": str(workers)}, tmp_path,
    )
    base = f"http://127.0.0.1:{port}"

    def ready():
        process.assert_running()
        booted = process.output().count("Booting worker")
        if booted < workers:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    wait_until(ready, timeout=20, message="gunicorn to listen")
    return process, base


def gunicorn_worker_pids(process):
    return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", process.output())]


def tcp_sockets(local_port=None, remote_port=None):
    """The TCP sockets on this machine with these ports, as their fds link to them ("socket:[inode]")."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
                if local_port in (None, local) and remote_port in (None, remote):
                    found.add(f"socket:[{fields[9]}]")
    return found


def sockets_of(pid):
    """What the fds of process pid link to (its sockets among them); empty once it is gone."""
    fds, links = f"/proc/{pid}/fd", set()
    try:
        names = os.listdir(fds)
    except FileNotFoundError:
        return links
    for fd in names:
        try:
            links.add(os.readlink(os.path.join(fds, fd)))
        except FileNotFoundError:  # closed since it was listed (the listing's own, in this process)
            continue
    return links


class AmqpTap:
    """A private queue bound to the `trip` exchange: what was published."""

    def __init__(self, routing_keys=("#",)):
        self._connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        self._channel = self._connection.channel()
        rabbit.declare_topology(self._channel)
        self.queue = self._channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        for key in routing_keys:
            self._channel.queue_bind(self.queue, contract.TRIP_EXCHANGE, routing_key=key)

    def next(self, timeout=10.0):
        """(routing_key, headers, envelope) of the next message."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, props, body = self._channel.basic_get(self.queue, auto_ack=True)
            if method is not None:
                return method.routing_key, props.headers or {}, json.loads(body)
            self._connection.sleep(0.02)
        raise AssertionError(f"no message on the exchange within {timeout}s")

    def empty(self):
        method, _, _ = self._channel.basic_get(self.queue, auto_ack=False)
        if method is not None:
            self._channel.basic_nack(method.delivery_tag, requeue=True)
        return method is None

    def close(self):
        if self._connection.is_open:
            self._connection.close()


def serve_http(handler_class):
    """A real HTTP server on loopback, serving from a thread of its own: (server, base URL)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def answer_http(handler, status, body, content_type="application/json"):
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def osrm_route_payload(path_lonlat, distance=4200.0, duration=600.0):
    return {
        "code": "Ok",
        "routes": [{"distance": distance, "duration": duration,
                    "geometry": {"type": "LineString", "coordinates": path_lonlat}}],
    }


class FakeOsrm:
    """A real HTTP server on loopback standing in for OSRM. `mode` says how
    it answers: "ok", "503", "garbage", "no_route", "hang" (until the client
    goes away or `release()`), "slow" (answer after `delay` seconds), or
    "gather" (hold each request until `gather_size` are in flight at once,
    then answer all)."""

    def __init__(self):
        self.mode = "ok"
        self.gather_size = 1
        self.delay = 0.0
        self.requests = []
        self.answered_paths = []  # the [lon, lat] geometries it answered with, in order
        self.abandoned = []  # monotonic times at which a hanging request's client went away
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Condition()
        self._released = threading.Event()
        self._server, self.url = serve_http(self._handler_class())

    def release(self):
        self._released.set()

    def close(self):
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with fake._lock:
                    fake.requests.append(self.path)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    fake._lock.notify_all()
                try:
                    fake._answer(self)
                except OSError:
                    pass
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

        return Handler

    def _answer(self, handler):
        mode = self.mode
        if mode == "hang":
            self._hang(handler)
            return
        if mode == "slow":
            self._released.wait(self.delay)
            mode = "ok"
        if mode == "gather":
            with self._lock:
                self._lock.wait_for(lambda: self.in_flight >= self.gather_size or self.max_in_flight >= self.gather_size, 10)
            mode = "ok"
        if mode == "503":
            self._send(handler, 503, b'{"message": "overloaded"}')
        elif mode == "garbage":
            self._send(handler, 200, b"<html>surprise</html>")
        elif mode == "no_route":
            self._send(handler, 400, b'{"code": "NoRoute", "message": "Impossible route between points"}')
        else:
            coords = handler.path.split("/route/v1/driving/")[1].split("?")[0]
            (lon1, lat1), (lon2, lat2) = [map(float, p.split(",")) for p in coords.split(";")]
            path = [[lon1, lat1], [(lon1 + lon2) / 2, (lat1 + lat2) / 2 + 0.001], [lon2, lat2]]
            self.answered_paths.append(path)
            self._send(handler, 200, json.dumps(osrm_route_payload(path)).encode())

    def _hang(self, handler):
        sock = handler.connection
        while not self._released.is_set():
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable and not sock.recv(1, socket.MSG_PEEK):
                self.abandoned.append(time.monotonic())
                return

    _send = staticmethod(answer_http)


# --- helpers shared by the trip-service and gateway tests ----------------------

# Where the tests' and the benchmarks' rides start and end: as the trip
# service takes them, and as a phone sends them.
PICKUP, DESTINATION = Coordinate(37.77, -122.41), Coordinate(37.79, -122.39)
PICKUP_JSON, DESTINATION_JSON = dataclasses.asdict(PICKUP), dataclasses.asdict(DESTINATION)


def made_by(make, close):
    """The body of a factory fixture (`yield from made_by(...)`): yields a
    function that calls make and keeps what it made; closes each afterwards."""
    made = []

    def tracked(*args, **kwargs):
        made.append(make(*args, **kwargs))
        return made[-1]

    yield tracked
    for thing in made:
        close(thing)


def new_rider():
    return f"rider-{uuid.uuid4().hex[:12]}"


def start_trip_service(osrm, tmp_path, name="trip", **env):
    """A real TripService on loopback asking the OSRM stand-in, with small
    timeouts unless env says otherwise; `.address` is where it listens."""
    return start_service(
        "ridesync.trip", ANY_PORT,
        {"TRIP_SERVICE_ADDR": ANY_PORT, "OSRM_URL": osrm.url, "OSRM_TIMEOUT": "2",
         "OSRM_BREAKER_RESET": "1", **env},
        tmp_path, name=name,
    )


def next_message_for(tap, owner_id, timeout=10.0):
    """(routing_key, headers, envelope) of the next message about owner_id,
    skipping what other tests running beside us publish."""
    deadline = time.monotonic() + timeout
    while True:
        key, headers, message = tap.next(max(0.1, deadline - time.monotonic()))
        if message.get("ownerId") == owner_id:
            return key, headers, message


def assert_trip_created_published(tap, trip):
    """trip.event.created is on the exchange: owned by the trip's rider, with
    the Trip as data, and owner/type headers."""
    key, headers, message = next_message_for(tap, trip["userID"])
    assert key == contract.TRIP_CREATED
    assert (headers["owner"], headers["type"]) == (trip["userID"], contract.TRIP_CREATED)
    assert message["data"]["id"] == trip["id"]
    assert message["data"]["status"] == "pending"
    assert message["data"]["selectedFare"] == trip["selectedFare"]
    assert message["data"]["route"]["distance"] == trip["route"]["distance"]


def assert_route_follows_osrm(route, osrm):
    """The route is the stand-in's geometry, turned from [lon, lat] into
    latitude/longitude objects, with its distance and duration."""
    (answered,) = osrm.answered_paths[-1:]
    points = route["geometry"][0]["coordinates"]
    assert [[p["longitude"], p["latitude"]] for p in points] == answered
    assert route["distance"] == 4200.0 and route["duration"] == 600.0
    assert not route.get("estimated", False)


def closed_port_address():
    """host:port where nothing listens."""
    return f"127.0.0.1:{free_port()}"


class HangingTripService:
    """A gRPC TripService on loopback that takes every call and never answers
    (until closed): an upstream that hangs."""

    def __init__(self, max_workers=8):
        from ridesync import grpc_server
        from ridesync.pb import trip_pb2_grpc

        self.release = threading.Event()
        self.calls = []
        self.metadata = []  # each call's, as a dict
        hanging = self

        class Servicer(trip_pb2_grpc.TripServiceServicer):
            def PreviewTrip(self, request, context):
                return hanging._hang(request, context)

            def CreateTrip(self, request, context):
                return hanging._hang(request, context)

            def CurrentTrip(self, request, context):
                return hanging._hang(request, context)

        self._server = grpc_server.start(
            "127.0.0.1:0", lambda s: trip_pb2_grpc.add_TripServiceServicer_to_server(Servicer(), s),
            ["trip.TripService"], max_workers=max_workers,
        )
        self.address = self._server.address

    def _hang(self, request, context):
        self.calls.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        while context.is_active() and not self.release.wait(0.05):
            pass
        context.abort(grpc.StatusCode.UNAVAILABLE, "released")

    def close(self):
        self.release.set()
        self._server.stop(0).wait()



def forward_connections(listener, target, pipe):
    """Until listener closes: each connection it accepts joined to a new one
    to target (host, port), with pipe(source, sink) in a thread each way."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        server = socket.create_connection(target, timeout=5)
        server.settimeout(None)
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=pipe, args=(source, sink), daemon=True).start()


class SilentProxy:
    """A TCP forwarder on loopback to `target` (host, port) that can stop
    forwarding without closing anything, as a proxy or a phone's network
    that silently dies: what either side writes then stays in the kernel's
    buffers, and neither side is told. `.url` leads through it."""

    def __init__(self, target):
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closed = False
        self._sockets = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=forward_connections, args=(self._listener, target, self._pipe), daemon=True).start()

    def stall(self):
        self._forwarding.clear()

    def resume(self):
        """Forwards again, what was held first."""
        self._forwarding.set()

    def close(self):
        self._closed = True
        self._forwarding.set()
        self._listener.close()
        for sock in self._sockets:
            sock.close()

    def _pipe(self, source, sink):
        self._sockets.append(source)
        while not self._closed:
            try:
                data = source.recv(65536)
                self._forwarding.wait()
                if self._closed:
                    return
                if not data:  # the source closed: so does the forwarder, toward the sink
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return
