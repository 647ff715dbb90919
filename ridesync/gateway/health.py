"""GET /healthz (the process serves) and GET /readyz (what it depends on answers)."""
import logging
import os
import threading

import gevent
import grpc
import pika
from flask import Blueprint, current_app, jsonify
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ridesync import rabbit
from ridesync.gateway.errors import error_response
from ridesync.settings import process_settings

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    settings = current_app.config["RIDESYNC"]
    upstream = current_app.extensions["ridesync.upstream"]
    checks = {
        "rabbitmq": current_app.extensions["ridesync.broker_probe"].answers(process_settings().readyz_timeout),
        "trip service": _grpc_serving(upstream.channel(settings.trip_service_addr)),
        "driver service": _grpc_serving(upstream.channel(settings.driver_service_addr)),
    }
    down = [name for name, ok in checks.items() if not ok]
    if down:
        response, status = error_response(503, "unavailable", "not ready: " + ", ".join(down) + " not answering")
        return response, status
    return jsonify(status="ready", checks={name: "ok" for name in checks})


def _grpc_serving(channel):
    try:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=process_settings().readyz_timeout
        )
    except grpc.RpcError:
        return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def _close(connection, timeout):
    with gevent.Timeout(timeout, False):  # a broker that does not answer the close either: given up
        try:
            if connection.is_open:
                connection.close()
        except (pika.exceptions.AMQPError, OSError) as exc:
            log.debug("readyz: closing an abandoned broker connection failed: %r", exc)


class BrokerProbe:
    """Asks the broker over one connection per worker, kept between calls
    and made again only once lost: a probe every few seconds from each load
    balancer costs the broker a channel, not a connection."""

    def __init__(self, url):
        self._url = url
        self._lock = threading.Lock()  # gevent's, in a worker: one probe at a time on the connection
        self._connection = None
        self._pid = None

    def answers(self, timeout):
        with self._lock:
            try:
                with gevent.Timeout(timeout):
                    self._connected().channel().close()
                return True
            except (gevent.Timeout, pika.exceptions.AMQPError, OSError):
                self._abandon(timeout)
                return False

    def close(self):
        """The connection kept closed: an app made and done with in one process (tests) leaves none open."""
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None and self._pid == os.getpid():
                _close(connection, process_settings().readyz_timeout)

    def _abandon(self, timeout):
        """The connection, in an unknown state, is never used again: closed
        in a greenlet of its own (the probe does not wait), which gives up
        after timeout seconds. One made before a fork is the parent's: left alone."""
        connection, self._connection = self._connection, None
        if connection is not None and self._pid == os.getpid():
            gevent.spawn(_close, connection, timeout)

    def _connected(self):
        if self._connection is None or not self._connection.is_open or self._pid != os.getpid():
            self._connection, self._pid = rabbit.connect(self._url, f"gateway-{os.getpid()}-readyz"), os.getpid()
        return self._connection
