"""Cancelling an upstream call when the rider's HTTP connection closes, so
that the services behind us stop working for nobody (and OSRM is let go)."""
import logging
import socket
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def cancel_if_rider_leaves(call, environ):
    """Watches the client socket (under gunicorn) while the call runs."""
    sock = environ.get("gunicorn.socket")
    if sock is None or not _cooperative():
        yield
        return
    import gevent

    watcher = gevent.spawn(_cancel_on_hangup, sock, call)
    try:
        yield
    finally:
        watcher.kill(block=False)


def _cooperative():
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("socket")


def _cancel_on_hangup(sock, call):
    from gevent.socket import wait_read

    wait_read(sock.fileno())
    try:
        hung_up = sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        hung_up = True
    if hung_up and call.cancel():
        log.info("client hung up; upstream call cancelled")
