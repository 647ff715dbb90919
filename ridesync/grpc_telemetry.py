"""What every gRPC call carries and records, on both sides: its span
(OpenTelemetry's interceptors, when tracing is on), the request id in its
metadata, and its outcome in metrics."""
import json

import grpc

from ridesync import identity, logs, metrics, telemetry


# Calls go round the replicas a target names (dns:///name:port, ipv4:a:p,b:p);
# one that finds its replica gone (UNAVAILABLE) is tried again on another.
SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{"service": "trip.TripService"}, {"service": "driver.DriverService"}],
        "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
})


def channel(target):
    """An insecure channel to target, balanced round-robin over the
    addresses it resolves to, whose calls are observed."""
    options = [("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1),
               # A replica restarted is dialled again within a second, not after gRPC's default backoff (up to 120 s).
               ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
               ("grpc.max_reconnect_backoff_ms", 1000)]
    observed = grpc.intercept_channel(grpc.insecure_channel(target, options=options), _ClientSide())
    if not telemetry.tracing_on():
        return observed
    from opentelemetry.instrumentation.grpc import client_interceptor
    from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

    return intercept_channel(observed, client_interceptor(filter_=_not_health_checks()))


def server_interceptors():
    observed = [_ServerSide()]
    if not telemetry.tracing_on():
        return observed
    from opentelemetry.instrumentation.grpc import server_interceptor

    return [server_interceptor(filter_=_not_health_checks()), *observed]


def _not_health_checks():
    from opentelemetry.instrumentation.grpc import filters

    return filters.negate(filters.health_check())


class _ClientSide(grpc.UnaryUnaryClientInterceptor):
    def intercept_unary_unary(self, continuation, details, request):
        request_id = logs.ride_field("request_id")
        extra = [(logs.REQUEST_ID_HEADER, request_id)] if request_id else []
        extra += identity.outgoing_headers().items()
        if extra:
            details = details._replace(metadata=[*(details.metadata or ()), *extra])
        call = continuation(details, request)
        call.add_done_callback(lambda done: metrics.grpc_call("client", details.method, done.code()))
        return call


class _ServerSide(grpc.ServerInterceptor):
    """Each call's log lines carry its request id (the caller's, or a new
    one) and its user (the one the gateway authenticated, else the
    request's); its outcome is counted."""

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        metadata = dict(details.invocation_metadata)
        request_id = logs.request_id_from(metadata.get(logs.REQUEST_ID_HEADER))
        caller, _role = identity.from_headers(metadata)
        answer = handler.unary_unary

        def observed(request, context):
            with logs.bound(request_id=request_id, user=caller or _user_of(request)):
                try:
                    response = answer(request, context)
                except Exception:
                    metrics.grpc_call("server", details.method, context.code() or grpc.StatusCode.UNKNOWN)
                    raise
            metrics.grpc_call("server", details.method, context.code() or grpc.StatusCode.OK)
            return response

        return grpc.unary_unary_rpc_method_handler(
            observed, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )


def _user_of(request):
    return getattr(request, "userID", None) or getattr(request, "driverID", None)
