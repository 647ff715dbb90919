"""gunicorn.conf.py plus a log of the worker's garbage-collector pauses over
5 ms (generation, milliseconds, objects collected), appended to $GCWATCH_LOG:
`python -m bench.fanout --conf bench/gunicorn_gcwatch.py`. With GCWATCH_FREEZE=1
the worker also calls gc.freeze() once the app is loaded, which takes every
object alive then (imported modules, the app) out of later collections."""
import os

from bench.gunicorn_extend import gateway_config


def _watch_gc(_worker):
    import gc
    import time

    out = open(os.environ.get("GCWATCH_LOG", "/dev/stderr"), "a", buffering=1)
    started = {}

    def watch(phase, info):
        if phase == "start":
            started["t"] = time.perf_counter()
        elif "t" in started:
            ms = (time.perf_counter() - started.pop("t")) * 1000
            if ms > 5:
                out.write(f"{time.time():.3f} gc gen{info['generation']} {ms:.1f} ms collected {info['collected']}\n")
            if ms > 100 and os.environ.get("GCWATCH_CENSUS") == "1":  # what the long pause went through
                import collections
                census = collections.Counter(type(o).__name__ for o in gc.get_objects())
                out.write(f"  {sum(census.values())} objects tracked; most: {census.most_common(12)}\n")

    gc.callbacks.append(watch)
    if os.environ.get("GCWATCH_FREEZE") == "1":
        gc.collect()
        gc.freeze()
        out.write(f"{time.time():.3f} froze {gc.get_freeze_count()} objects\n")


gateway_config(globals(), _watch_gc)
