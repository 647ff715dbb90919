"""Each test run gets a RabbitMQ virtual host of its own, so that runs side
by side (and what an earlier run left on the broker) never meet."""
import os
import subprocess
from urllib.parse import quote, urlsplit, urlunsplit

PREFIX = "ridesync-test-"


def _ctl(*args):
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60).stdout


def private_url(base_url):
    """base_url on a new vhost of this process's own; base_url itself when
    this machine's broker cannot be managed from here (no rabbitmqctl)."""
    parts = urlsplit(base_url)
    vhost = f"{PREFIX}{os.getpid()}"
    try:
        _forget_dead_runs()
        _ctl("add_vhost", vhost)
        _ctl("set_permissions", "-p", vhost, parts.username or "guest", ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError):
        return base_url
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def remove(url):
    vhost = urlsplit(url).path.lstrip("/")
    if vhost.startswith(PREFIX):
        _ctl("delete_vhost", vhost)


def _forget_dead_runs():
    for vhost in _ctl("list_vhosts", "name").split():
        if vhost.startswith(PREFIX) and not _alive(int(vhost[len(PREFIX):])):
            _ctl("delete_vhost", vhost)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
