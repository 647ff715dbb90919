"""The drain benchmark's baseline: gunicorn.conf.py with gunicorn's stock
gevent worker instead of GatewayWorker (`python -m bench.drain`)."""
from bench.gunicorn_extend import gateway_config

gateway_config(globals(), lambda _worker: None)
worker_class = "gevent"
