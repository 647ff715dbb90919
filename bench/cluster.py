"""A RabbitMQ cluster of 3 nodes on loopback, from the installed
rabbitmq-server, for the benchmarks that need more than one broker (not run
by `make test`). Each node has its own name, AMQP and distribution ports,
database and logs under a temporary directory, and the cluster one Erlang
cookie of its own; the machine's own broker (5672) is left alone.

    python -m bench.cluster             # starts it, prints AMQP_URL, stops it cleanly on Ctrl-C
    python -m bench.cluster --nodes 5
"""
import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bench.support import Process, free_port, wait_until

# Not /usr/sbin's wrappers, which run as the rabbitmq user, with the machine's cookie.
SERVER, CTL = "/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmqctl"
START_TIMEOUT = 120.0


class Node:
    def __init__(self, name, root, cookie_home):
        self.name = f"{name}@localhost"
        self.port = free_port()
        self.dir = os.path.join(root, name)
        self.proc = None
        os.makedirs(self.dir)
        config = os.path.join(self.dir, "rabbitmq.conf")
        with open(config, "w") as f:
            f.write(f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n")
        plugins = os.path.join(self.dir, "enabled_plugins")
        with open(plugins, "w") as f:
            f.write("[].\n")  # not the machine's: a management plugin would want its port 15672
        open(os.path.join(self.dir, "rabbitmq-env.conf"), "w").close()  # not /etc/rabbitmq's, which names its node
        self.env = {
            **os.environ, "HOME": cookie_home,
            "RABBITMQ_NODENAME": self.name, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": config, "RABBITMQ_ENABLED_PLUGINS_FILE": plugins,
            "RABBITMQ_CONF_ENV_FILE": os.path.join(self.dir, "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(self.dir, "advanced.config"),
            "RABBITMQ_MNESIA_BASE": os.path.join(self.dir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.dir, "log"),
            "RABBITMQ_PID_FILE": os.path.join(self.dir, "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    @property
    def url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def pid(self):
        """The node's Erlang VM."""
        with open(self.env["RABBITMQ_PID_FILE"]) as f:
            return int(f.read().strip())

    def start(self):
        self.process = Process("server", [SERVER], self.env, self.dir)
        self.proc = self.process.proc

    def ctl(self, *args, timeout=60):
        """rabbitmqctl on this node; its standard output."""
        done = subprocess.run([CTL, "-q", "-n", self.name, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.name}: {done.stderr.strip() or done.stdout}")
        return done.stdout

    def await_startup(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.dir}/server.log")
        self.ctl("wait", self.env["RABBITMQ_PID_FILE"], "--timeout", str(int(START_TIMEOUT)), timeout=START_TIMEOUT + 10)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """The node dies at once (SIGKILL), as a machine would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self):
        """A clean stop (rabbitmqctl stop), SIGTERM and SIGKILL if that fails."""
        if self.running():
            try:
                self.ctl("stop", timeout=60)
                self.proc.wait(60)
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                print(f"{self.name}: {error}; stopping it by signal", file=sys.stderr)
        if self.proc is not None:
            self.process.stop(timeout=30)


class Cluster:
    """nodes RabbitMQ nodes joined into one cluster; stopped on the way out.
    .url names every node (AMQP_URL as ridesync reads it)."""

    def __init__(self, nodes=3, root=None):
        self.root = root or tempfile.mkdtemp(prefix="ridesync-cluster-")
        cookie_home = os.path.join(self.root, "home")
        os.makedirs(cookie_home)
        cookie = os.path.join(cookie_home, ".erlang.cookie")
        with open(cookie, "w") as f:
            f.write(secrets.token_hex(20))
        os.chmod(cookie, 0o400)
        prefix = f"ridesync-{os.getpid()}-"
        self.nodes = [Node(f"{prefix}{n + 1}", self.root, cookie_home) for n in range(nodes)]

    @property
    def url(self):
        return ",".join(node.url for node in self.nodes)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_):
        self.stop()
        return False

    def start(self):
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.await_startup()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
        wait_until(lambda: self.running_nodes() == len(self.nodes), START_TIMEOUT, "every node in the cluster",
                   interval=1)

    def running_nodes(self, via=None):
        """How many nodes the cluster says are running (asked of via, or the first node running)."""
        node = via or next(n for n in self.nodes if n.running())
        status = node.ctl("cluster_status", "--formatter", "json", timeout=60)
        return len(json.loads(status)["running_nodes"])

    def stop(self):
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    with Cluster(args.nodes) as cluster:
        print(f"{args.nodes} nodes running in {time.monotonic() - started:.0f} s, data under {cluster.root}")
        print(f"AMQP_URL={cluster.url}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        print("stopping every node")


if __name__ == "__main__":
    main()
