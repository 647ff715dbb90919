"""The Procfile run by honcho, as `make run` does and as a user's own
`honcho start` does, stopped with Ctrl-C: every process it started is gone."""
import os
import signal
import sys
import urllib.request

import pytest

from tests.support import ROOT, Process, free_port, grpc_serving, wait_until

VENV_BIN = os.path.dirname(sys.executable)
GONE_WITHIN = 15  # seconds: the 10 s grace, and room to spare
SERVICES = ("trip", "driver", "payment")


@pytest.fixture
def run_procfile(tmp_path):
    """run_procfile(args): the command started in a session of its own, on
    free ports, once every Procfile process answers. Killed afterwards if
    the test left anything running."""
    started = []

    def start(args):
        port = free_port()
        trip, driver = (f"127.0.0.1:{free_port()}" for _ in range(2))
        env = {"PORT": str(port), "WEB_CONCURRENCY": "2", "TRIP_SERVICE_ADDR": trip, "DRIVER_SERVICE_ADDR": driver,
               "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
        process = Process(args[0], args, env, tmp_path)
        started.append(process)
        wait_until(lambda: process.assert_running() or _everything_answers(process, port, trip, driver),
                   timeout=60, message="every Procfile process to answer")
        return process

    yield start
    for process in started:
        process.stop()


def _everything_answers(process, port, trip, driver):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            web = answer.status == 200
    except OSError:
        return False
    return web and grpc_serving(trip) and grpc_serving(driver) and "from payment_trip_response" in process.output()


@pytest.mark.parametrize("command", [
    ["make", "--no-print-directory", "run"],
    [os.path.join(VENV_BIN, "honcho"), "start", "-f", os.path.join(ROOT, "Procfile")],
], ids=["make run", "honcho start"])
def test_ctrl_c_stops_every_procfile_process_and_leaves_none_behind(run_procfile, command):
    runner = run_procfile(command)
    wait_until(lambda: runner.output().count("Booting worker") == 2, message="WEB_CONCURRENCY=2 gunicorn workers")
    tree = _descendants(runner.proc.pid)
    commands = " | ".join(line for _, _, line in tree)
    for module in ("gunicorn", *(f"ridesync.{name}" for name in SERVICES)):
        assert module in commands

    os.killpg(runner.proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground process group

    _wait_gone(runner, tree)
    for stopped in ("TripService stopped", "DriverService stopped", "payment service stopped"):
        assert stopped in runner.output()


def _wait_gone(runner, tree):
    try:
        wait_until(lambda: runner.proc.poll() is not None and not _alive(tree), timeout=GONE_WITHIN,
                   message=f"{runner.name} and all it started to be gone")
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}; still running: {_alive(tree)}") from None


# --- processes, from /proc ------------------------------------------------------

def _stat(pid):
    """(parent pid, state, start time) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def _command(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _descendants(root):
    """[(pid, start time, command)] of every process below root now."""
    stats = {int(p): _stat(p) for p in os.listdir("/proc") if p.isdigit()}
    children = {}
    for pid, stat in stats.items():
        if stat:
            children.setdefault(stat[0], []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append((child, stats[child][2], _command(child)))
            todo.append(child)
    return found


def _alive(tree):
    """Those of tree still running (the same process: same pid and start time, not a zombie)."""
    left = []
    for pid, started, command in tree:
        stat = _stat(pid)
        if stat and stat[2] == started and stat[1] != "Z":
            left.append(f"{pid} {command}")
    return left
