"""Each test run gets a RabbitMQ virtual host of its own, so that runs side
by side (and what an earlier run left on the broker) never meet: its URL is
known at import (private_url, no side effect), the vhost is made by create()
(the session fixture in conftest.py) and removed by remove()."""
import os
import shutil
import subprocess
from urllib.parse import quote, unquote, urlsplit, urlunsplit

PREFIX = "ridesync-test-"


def _ctl(*args):
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60).stdout


def private_url(base_url):
    """base_url on a vhost of this process's own; base_url itself when this
    machine's broker cannot be managed from here (no rabbitmqctl)."""
    if shutil.which("rabbitmqctl") is None:
        return base_url
    return urlunsplit(urlsplit(base_url)._replace(path="/" + quote(f"{PREFIX}{os.getpid()}", safe="")))


def create(url):
    """The vhost of private_url(), made (a base URL is left as it is); the vhosts of dead runs removed."""
    parts = urlsplit(url)
    vhost = unquote(parts.path.lstrip("/"))
    if vhost.startswith(PREFIX):
        _forget_dead_runs()
        _ctl("add_vhost", vhost)
        _ctl("set_permissions", "-p", vhost, parts.username or "guest", ".*", ".*", ".*")


def remove(url):
    vhost = unquote(urlsplit(url).path.lstrip("/"))
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
