"""The gunicorn master's part of the gateway's metrics: a fresh directory
where its workers write their values, made when the master reads its config
and removed when it stops. Nothing in it outlives the master, so a restart
needs nothing.

prometheus_client picks its multiprocess mode when first imported, and the
master imports it with the worker class (ridesync.gateway): start() must run
before that, at the top of gunicorn.conf.py. Keep prometheus_client out of
this module's imports."""
import os
import shutil
import tempfile

DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
_made = []  # the directory this master made; gunicorn reads its config again on HUP


def start():
    if not _made:
        _made.append(tempfile.mkdtemp(prefix="ridesync-metrics-"))
        os.environ[DIRECTORY] = _made[0]


def worker_gone(pid):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def stop():
    for directory in _made:
        shutil.rmtree(directory, ignore_errors=True)
