"""For the benchmarks' gunicorn config files: the gateway's own
gunicorn.conf.py, with something more run in each worker after its hook."""
import os
import runpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gateway_config(namespace, after_worker_init):
    """Fills a config file's namespace with gunicorn.conf.py's settings; its
    post_worker_init then also calls after_worker_init(worker)."""
    base = runpy.run_path(os.path.join(ROOT, "gunicorn.conf.py"))
    namespace.update({k: v for k, v in base.items() if not k.startswith("__")})
    hook = base.get("post_worker_init")

    def post_worker_init(worker):
        if hook is not None:
            hook(worker)
        after_worker_init(worker)

    namespace["post_worker_init"] = post_worker_init
