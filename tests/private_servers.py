"""A PostgreSQL cluster and a Redis server of a test's own, on free ports in
a temporary directory, that the test may restart: never the machine's
shared servers, which other runs use."""
import glob
import os
import shutil
import subprocess
import tempfile

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support import free_port, wait_until

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1] if glob.glob("/usr/lib/postgresql/*/bin") else None


class PrivatePostgres:
    """initdb + pg_ctl, as the postgres user when we are root (PostgreSQL refuses to run as root)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ridesync-pg-")
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._pg("initdb", "-D", self._data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        self.start()

    @property
    def _data(self):
        return os.path.join(self.dir, "data")

    def _pg(self, tool, *args):
        command = [os.path.join(PG_BIN, tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)

    def start(self):
        self._pg("pg_ctl", "-D", self._data, "-l", os.path.join(self.dir, "log"), "-w", "-t", "30",
                 "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def restart(self):
        """A fast shutdown (every backend told to end, as a deploy or a crash
        recovery does) and a start; returns once it takes connections."""
        self.stop()
        self.start()

    def stop(self):
        self._pg("pg_ctl", "-D", self._data, "-m", "fast", "-w", "-t", "30", "stop")

    def backend_pids(self):
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            return {row[0] for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")}

    def close(self):
        try:
            self._pg("pg_ctl", "-D", self._data, "-m", "immediate", "-w", "-t", "30", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """redis-server saving its data in its directory, so that a restart keeps it, as a deployed one would."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ridesync-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process = None
        self.start()

    def start(self):
        self._log = open(os.path.join(self.dir, "log"), "ab")
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
             "--appendonly", "no"], stdout=self._log, stderr=subprocess.STDOUT)
        wait_until(self._answers, timeout=15, message=f"redis-server on {self.port}")

    def _answers(self):
        try:
            return redis.Redis(port=self.port, socket_timeout=1).ping()
        except redis.exceptions.ConnectionError:
            return False

    def restart(self):
        """SHUTDOWN SAVE (what a restart with persistence keeps) and a start on the same port and directory."""
        self.stop()
        self.start()

    def stop(self):
        try:
            redis.Redis(port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)).shutdown(save=True)
        except redis.exceptions.ConnectionError:
            pass  # the server closes the connection as it exits
        self._process.wait(15)
        self._log.close()

    def close(self):
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(15)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres():
    if PG_BIN is None:
        pytest.skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin)")
    server = PrivatePostgres()
    yield server
    server.close()


@pytest.fixture
def private_redis():
    server = PrivateRedis()
    yield server
    server.close()
