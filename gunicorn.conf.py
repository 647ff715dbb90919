"""gunicorn settings for the API gateway. No preload_app: every gRPC channel
and AMQP connection is made inside a worker, after the fork."""
import gc

import gevent

from ridesync import multiproc
from ridesync.settings import process_settings

# gevent records which greenlet spawned which: ~6 KiB a socket, and most of
# what a full garbage collection walks in a busy worker (bench/RESULTS.md).
gevent.config.track_greenlet_tree = False

gateway_settings = process_settings()  # a bad setting: gunicorn exits 1 saying which
multiproc.start()  # first: the worker class brings prometheus_client into the master

bind = f"0.0.0.0:{gateway_settings.port}"
workers = gateway_settings.web_concurrency
worker_class = "ridesync.gateway.gunicorn_worker.GatewayWorker"
worker_connections = gateway_settings.worker_connections
graceful_timeout = gateway_settings.gateway_drain
timeout = gateway_settings.worker_timeout
accesslog = "-"
control_socket_disable = True  # nothing on disk; several gateways may share a machine
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'  # no query string: a socket's ?token= is a secret


def post_fork(server, worker):
    worker.master_signal_queue = server.SIG_QUEUE  # see GatewayWorker.init_signals


def post_worker_init(worker):
    # After gevent's monkey patching (done by the worker) and before any
    # gRPC object exists (they are made lazily, on first use).
    from grpc.experimental import gevent as grpc_gevent

    from ridesync import logs, telemetry

    grpc_gevent.init_gevent()
    gevent.get_hub().threadpool.maxsize = gateway_settings.upstream_calls_in_flight
    logs.configure("gateway")
    telemetry.start_gateway(worker.wsgi)
    gc.freeze()  # what the worker loaded stays: collections need not walk it again


def child_exit(server, worker):
    multiproc.worker_gone(worker.pid)


def on_exit(server):
    multiproc.stop()


def when_ready(server):
    from ridesync.gateway.identity import OPEN, MisconfiguredAuth, checked_auth_mode

    try:
        if checked_auth_mode(gateway_settings) == OPEN:
            server.log.warning("AUTH_MODE=open: any caller may act as any userID; set AUTH_MODE=token in production")
    except MisconfiguredAuth as exc:
        raise RuntimeError(f"the gateway cannot start: {exc}") from None  # gunicorn prints it and exits 1
    if "*" in gateway_settings.cors_origins:
        server.log.warning("CORS allows every origin (CORS_ORIGINS=*); set CORS_ORIGINS to a list in production")
