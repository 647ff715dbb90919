"""Asking a gRPC service whether it serves, with no side effect on import
(unlike tests.support, which moves the importing process to a vhost of its
own): for the benchmarks as well as the tests."""
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def grpc_serving(address):
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING
