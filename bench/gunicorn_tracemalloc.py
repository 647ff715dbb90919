"""gunicorn.conf.py plus tracemalloc in the worker, for bench.memprofile:
the worker snapshots its allocations whenever a file `take-<name>` appears
in $MEMPROFILE_DIR, writing `<name>.snap` (tracemalloc.Snapshot.dump)."""
import os

from bench.gunicorn_extend import gateway_config


def _start_tracing(_worker):
    import tracemalloc

    import gevent

    tracemalloc.start(int(os.environ.get("TRACEMALLOC_FRAMES", "10")))
    gevent.spawn(_take_snapshots, os.environ["MEMPROFILE_DIR"])


def _take_snapshots(directory):
    import gc
    import tracemalloc

    import gevent

    while True:
        gevent.sleep(0.2)
        for request in os.listdir(directory):
            if request.startswith("take-"):
                name = request[len("take-"):]
                gc.collect()
                tracemalloc.take_snapshot().dump(os.path.join(directory, name + ".tmp"))
                os.rename(os.path.join(directory, name + ".tmp"), os.path.join(directory, name + ".snap"))
                os.remove(os.path.join(directory, request))


gateway_config(globals(), _start_tracing)
