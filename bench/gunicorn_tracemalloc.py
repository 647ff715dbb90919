"""gunicorn.conf.py plus tracemalloc in the worker, for bench.memprofile:
the worker snapshots its allocations whenever a file `take-<name>` appears
in $MEMPROFILE_DIR, writing `<name>.snap` (tracemalloc.Snapshot.dump)."""
import os
import runpy

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
globals().update({k: v for k, v in runpy.run_path(os.path.join(_ROOT, "gunicorn.conf.py")).items()
                  if not k.startswith("__")})
_post_worker_init = globals().get("post_worker_init")


def post_worker_init(worker):  # noqa: F811
    if _post_worker_init is not None:
        _post_worker_init(worker)
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
