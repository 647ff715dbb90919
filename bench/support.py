"""What both benchmarks share: a private RabbitMQ vhost (tests/vhost.py),
real gunicorn and client processes with raised descriptor limits, reading a
process's memory, counting what the broker holds, and a cleanup stack that
runs on success, failure, Ctrl-C and SIGTERM alike."""
import json
import math
import os
import platform
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from urllib.parse import urlsplit

from ridesync import rabbit
from tests import vhost
from tests.support import Process, free_port, grpc_serving, wait_until  # noqa: F401 (bench modules import them here)

BASE_AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
NOFILE = 65536


class Bench:
    """A context for one benchmark run: a temporary directory, a private
    vhost, and everything started inside it stopped on the way out."""

    def __init__(self, name, amqp_url=None):
        """amqp_url: a broker of the benchmark's own (bench/cluster.py); by
        default a vhost of its own on this machine's broker."""
        self.name = name
        self.amqp_url = amqp_url
        self._cleanups = []
        self.tmp = tempfile.mkdtemp(prefix=f"ridesync-{name}-")

    def __enter__(self):
        raise_nofile()
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        if self.amqp_url is None:
            self.amqp_url = vhost.private_url(BASE_AMQP_URL)
            if self.amqp_url == BASE_AMQP_URL:
                raise SystemExit("rabbitmqctl is needed: the benchmark runs on a vhost of its own")
            vhost.create(self.amqp_url)
            self.defer(lambda: vhost.remove(self.amqp_url))
        self.vhost = urlsplit(rabbit.node_urls(self.amqp_url)[0]).path.lstrip("/")
        connection = rabbit.connect(self.amqp_url, f"bench-{self.name}")
        try:
            rabbit.declare_topology(connection.channel())
        finally:
            connection.close()
        return self

    def defer(self, cleanup):
        self._cleanups.append(cleanup)

    def __exit__(self, kind, *_):
        if kind is None:  # the logs of a failed run stay for a look
            self._cleanups.insert(0, lambda: shutil.rmtree(self.tmp, ignore_errors=True))
        else:
            print(f"{self.name}: logs in {self.tmp}", file=sys.stderr)
        while self._cleanups:
            cleanup = self._cleanups.pop()
            try:
                cleanup()
            except BaseException as error:  # one failing cleanup must not skip the others
                print(f"cleanup failed: {error!r}", file=sys.stderr)
        return False

    def gunicorn(self, app, workers=1, name="gateway", conf="gunicorn.conf.py", **env):
        """gunicorn -c conf app on loopback; a Gunicorn once it listens. The
        clients say who they are with ?userID= (AUTH_MODE=open)."""
        port = free_port()
        process = self.process(name, [sys.executable, "-m", "gunicorn", "-c", conf, "--bind", f"127.0.0.1:{port}", app],
                               **{"WEB_CONCURRENCY": str(workers), "PORT": str(port), "LOG_LEVEL": "WARNING",
                                  "AUTH_MODE": "open", **env})
        server = Gunicorn(process, port)
        server.wait_ready(workers)
        return server

    def clients(self, url, prefix, count, concurrency=100, name="clients", wait_for_go=False):
        """A bench.clients process connecting count WebSockets, at once or, if
        wait_for_go, once started and told to go (Clients.go); wait_connected
        waits for its first report."""
        clients = Clients(url, prefix, count, concurrency, self.tmp, name, wait_for_go)
        self.defer(clients.stop)
        return clients

    def python(self, module, *args, name):
        """`python -m module args`, its stdout a pipe (read_json_line): its Popen."""
        return self.process(name, [sys.executable, "-m", module, *args], stdout=subprocess.PIPE).proc

    def process(self, name, args, stdin=None, stdout=None, **env):
        """A Process on this run's vhost, stopped on the way out."""
        process = Process(name, args, {"AMQP_URL": self.amqp_url, **env}, self.tmp, stdin=stdin, stdout=stdout)
        self.defer(lambda: process.stop(timeout=30))
        return process

    def service(self, module, name, **env):
        """`python -m module` (a gRPC service) on a free loopback port, once
        its health check answers SERVING: (its Popen, its address). env names
        the address (e.g. TRIP_SERVICE_ADDR="{address}") and anything else."""
        address = f"127.0.0.1:{free_port()}"
        process = self.process(name, [sys.executable, "-m", module],
                               **{"LOG_LEVEL": "WARNING", **{k: v.format(address=address) for k, v in env.items()}})
        wait_until(lambda: _serving(process, address), 30, f"{name} to serve at {address}")
        return process.proc, address

    def spy(self, pid, out, seconds, rate=200, gil=False):
        """py-spy record of a process for seconds, as collapsed stacks (pip install py-spy);
        gil: only the thread holding the GIL, i.e. where Python spends its CPU."""
        spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
        return self.process(f"py-spy-{pid}-{os.path.basename(out)}",
                            [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
                             "--format", "raw", "--nonblocking", "--output", out, *(["--gil"] if gil else [])],
                            stdout=subprocess.DEVNULL).proc


def _serving(process, address):
    """Whether the service answers its health check; RuntimeError if it exited."""
    if process.proc.poll() is not None:
        raise RuntimeError(f"{process.name} exited with {process.proc.returncode}:\n{process.output()[-3000:]}")
    return grpc_serving(address)


class Gunicorn:
    def __init__(self, process, port):
        self.process, self.proc, self.port = process, process.proc, port
        self.base = f"http://127.0.0.1:{port}"
        self.ws_base = f"ws://127.0.0.1:{port}"

    def output(self):
        return self.process.output()

    def wait_ready(self, workers, timeout=30):
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            if len(self.workers()) < workers:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_until(ready, timeout, "gunicorn to listen")

    def workers(self):
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            return []

    def get_json(self, path, timeout=60):
        with urllib.request.urlopen(self.base + path, timeout=timeout) as answer:
            return json.load(answer)

    def stop(self, timeout=30):
        self.process.stop(timeout)


class Clients:
    def __init__(self, url, prefix, count, concurrency, directory, name, wait_for_go=False):
        self.process = Process(
            name, [sys.executable, "-m", "bench.clients", "--url", url, "--prefix", prefix, "--count", str(count),
                   "--concurrency", str(concurrency)] + (["--wait-for-go"] if wait_for_go else []),
            {}, directory, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        self.proc = self.process.proc
        self.count = count

    def wait_ready(self, timeout):
        """Waits until a process started with wait_for_go is started (imports, resolving)."""
        if self._read(timeout).get("event") != "ready":
            raise RuntimeError(f"clients {self.process.name}: not ready")

    def go(self):
        """Tells a ready process to connect."""
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def wait_connected(self, timeout):
        report = self._read(timeout)
        if report.get("event") != "connected":
            raise RuntimeError(f"clients: unexpected {report}")
        return report

    def command(self, command, timeout=60):
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def _read(self, timeout):
        return read_json_line(self.proc, timeout)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.command("quit", timeout=30)
            except (OSError, RuntimeError, TimeoutError, ValueError):
                pass
        self.process.stop(timeout=30)


def read_json_line(proc, timeout):
    """The next JSON line a process of ours prints on its stdout (a pipe)."""
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{proc.args} said nothing within {timeout}s")
        readable, _, _ = select.select([proc.stdout], [], [], remaining)
        if readable:
            byte = os.read(proc.stdout.fileno(), 1)
            if not byte:
                raise RuntimeError(f"{proc.args} exited with {proc.poll()}")
            line += byte
    return json.loads(line)


def raise_nofile(want=NOFILE):
    """More descriptors for this process and every process it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _exit_on_sigterm(_signum, _frame):
    raise SystemExit(143)


def percentile(samples, p):
    """The p-th percentile (0 < p <= 100) of samples by nearest rank: the
    smallest sample that at least p % of them do not exceed (the 50th of 4
    samples is the 2nd, the 99th of 100 the 99th); nan when there are none."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]


def rss_kib(pid):
    """VmRSS of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def broker_counts(vhost_name, queues_of=""):
    """Connections, channels and consumers the broker holds on this vhost,
    and its queues whose name holds queues_of."""
    def rows(*args):
        out = subprocess.run(["rabbitmqctl", "-q", "--no-table-headers", *args], check=True,
                             capture_output=True, text=True, timeout=300).stdout
        return [line.split("\t") for line in out.splitlines() if line.strip()]

    return {
        "connections": sum(1 for row in rows("list_connections", "vhost") if row[0] == vhost_name),
        "channels": sum(1 for row in rows("list_channels", "vhost") if row[0] == vhost_name),
        "queues": sum(1 for row in rows("list_queues", "-p", vhost_name, "name") if queues_of in row[0]),
        "consumers": len(rows("list_consumers", "-p", vhost_name, "queue_name")),
        "queue_memory_kib": sum(int(row[0]) for row in rows("list_queues", "-p", vhost_name, "memory")) / 1024,
        # Not the default exchange's implicit binding of every queue (its source is "").
        "bindings": sum(1 for row in rows("list_bindings", "-p", vhost_name, "source_name") if row[0]),
    }


def broker_memory_kib():
    """The broker's memory by category (`rabbitmq-diagnostics memory_breakdown`),
    in KiB, with "allocated": what its Erlang VM holds in use, every category
    but the allocators' reserve (reserved_unallocated, allocated_unused)."""
    out = subprocess.run(["rabbitmq-diagnostics", "-q", "memory_breakdown", "--formatter", "json"], check=True,
                         capture_output=True, text=True, timeout=300).stdout
    kib = {category: value["bytes"] / 1024 for category, value in json.loads(out).items()}
    kib["allocated"] = sum(v for k, v in kib.items() if k not in ("reserved_unallocated", "allocated_unused"))
    return kib


BINDING_TABLES = ("mnesia", "other_ets")  # memory_breakdown's categories holding bindings (in Mnesia's tables)


def broker_tables_kib():
    """What the broker's tables hold, bindings, queues and exchanges among them, in KiB."""
    memory = broker_memory_kib()
    return sum(memory[kind] for kind in BINDING_TABLES)


def machine():
    with open("/proc/meminfo") as f:
        mem_gib = int(f.readline().split()[1]) / 2**20
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    broker = subprocess.run(["rabbitmqctl", "-q", "version"], capture_output=True, text=True, timeout=60).stdout.strip()
    return (f"{os.cpu_count()} cores ({model}), {mem_gib:.0f} GiB, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, RabbitMQ {broker}")


def cpu_seconds(pid):
    """User and system CPU time a process has used so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pid():
    """The RabbitMQ node's Erlang VM: the oldest beam.smp on this machine
    (rabbitmqctl runs short-lived ones of its own)."""
    nodes = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() != "beam.smp":
                        continue
                with open(f"/proc/{entry}/stat") as f:
                    nodes.append((int(f.read().rsplit(")", 1)[1].split()[19]), int(entry)))
            except OSError:
                continue
    if not nodes:
        raise RuntimeError("no beam.smp process: the benchmark needs the broker on this machine")
    return min(nodes)[1]


class CpuMeter:
    """CPU seconds that processes use over a phase. The broker serves other
    sessions too: its rate while our side is idle, measured just before, is
    taken off."""

    IDLE_SAMPLE = 3.0

    def __init__(self, pids):
        self.pids = list(pids)

    def __enter__(self):
        self._broker = broker_pid()
        self._idle_rate = self._broker_rate_at_rest()
        self._started = time.monotonic()
        self._before = {pid: cpu_seconds(pid) for pid in self.pids + [self._broker]}
        return self

    def __exit__(self, *_):
        self.seconds = time.monotonic() - self._started
        after = {pid: cpu_seconds(pid) for pid in self._before}
        self.used = {pid: after[pid] - self._before[pid] for pid in after}
        self.broker = self.used.pop(self._broker)
        self.broker_net = max(0.0, self.broker - self._idle_rate * self.seconds)
        return False

    def per_event_ms(self, events, ours=None):
        """{"broker", "broker_net", "ours", "each"}: milliseconds of CPU per
        event; ours: the CPU seconds our side used, when it counted them
        itself; each: every process measured, by pid; seconds: the phase's."""
        ours = sum(self.used.values()) if ours is None else ours
        return {"broker": 1000 * self.broker / events, "broker_net": 1000 * self.broker_net / events,
                "ours": 1000 * ours / events, "idle_broker_cores": self._idle_rate,
                "each": {pid: 1000 * used / events for pid, used in self.used.items()}, "seconds": self.seconds}

    def _broker_rate_at_rest(self):
        before = cpu_seconds(self._broker)
        time.sleep(self.IDLE_SAMPLE)
        return (cpu_seconds(self._broker) - before) / self.IDLE_SAMPLE


def load():
    """How busy the machine is with everything, ours and other sessions':
    load averages and the share of all cores busy over one second."""
    def busy_total():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]
        return sum(values) - idle, sum(values)

    busy0, total0 = busy_total()
    time.sleep(1)
    busy1, total1 = busy_total()
    with open("/proc/loadavg") as f:
        averages = " ".join(f.read().split()[:3])
    return f"load average {averages}, {100 * (busy1 - busy0) / max(1, total1 - total0):.0f}% of all cores busy"
