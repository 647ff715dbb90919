"""The gunicorn master's part of the gateway's metrics: a fresh directory
where its workers write their values, made when the master starts and
removed when it stops. Nothing in it outlives the master, so a restart needs
nothing. Keep prometheus_client out of this module's imports: it picks its
multiprocess mode when first imported, which must be after start()."""
import os
import shutil
import tempfile

DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"


def start():
    os.environ[DIRECTORY] = tempfile.mkdtemp(prefix="ridesync-metrics-")


def worker_gone(pid):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def stop():
    shutil.rmtree(os.environ.pop(DIRECTORY), ignore_errors=True)
