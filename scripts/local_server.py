"""Starting a server this machine lacks: what ensure_rabbitmq, ensure_postgres
and ensure_redis share. Each says how to tell that its server answers, which
command starts it, and which Debian package holds it."""
import os
import shutil
import subprocess
import sys
import time

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def install(command, package):
    """Installs Debian's package when command is missing and we are root;
    otherwise exits saying what to do."""
    if shutil.which(command):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(f"{command} is not installed. Install it (Debian: apt-get install {package}) "
                 "or point the URL at a running server.")
    print(f"installing Debian's {package}", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, env=env)


def ensure(name, url, host, answers, command, package, start, timeout=120, where_logs="its log"):
    """Returns at once when answers(); else, when host is this machine,
    installs and starts the server and waits for it to answer."""
    if answers():
        return
    if host not in LOCAL_HOSTS:
        sys.exit(f"{name} does not answer at {url}, and it is not on this machine to start.")
    install(command, package)
    print(f"starting {name}", flush=True)
    start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers():
            print(f"{name} answers", flush=True)
            return
        time.sleep(1)
    sys.exit(f"{name} was started but does not answer at {url} after {timeout} s; see {where_logs}.")
