"""GET /healthz (the process serves) and GET /readyz (what it depends on answers)."""
import grpc
from flask import Blueprint, current_app, jsonify
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ridesync.gateway.errors import error_response
from ridesync.rabbit import broker_answers

bp = Blueprint("health", __name__)
PROBE_TIMEOUT = 2.0


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    settings = current_app.config["RIDESYNC"]
    upstream = current_app.extensions["ridesync.upstream"]
    checks = {
        "rabbitmq": broker_answers(settings.amqp_url, PROBE_TIMEOUT),
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
            health_pb2.HealthCheckRequest(service=""), timeout=PROBE_TIMEOUT
        )
    except grpc.RpcError:
        return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING
