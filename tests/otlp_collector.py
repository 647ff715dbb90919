"""An OTLP/HTTP trace collector stand-in on loopback: every process of a
test exports its spans here, the way it would to a real collector, and the
test reads them back as Span tuples."""
import threading
from collections import namedtuple
from http.server import BaseHTTPRequestHandler

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse,
)

from tests.support import answer_http, serve_http

Span = namedtuple("Span", "service name trace_id span_id parent_id attributes")


class OtlpCollector:
    def __init__(self):
        self.spans = []
        self._lock = threading.Lock()
        self._server, self.url = serve_http(self._handler_class())

    def env(self):
        """What a process needs to export its spans here, promptly."""
        return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": self.url,
                "OTEL_BSP_SCHEDULE_DELAY": "100"}

    def trace(self, trace_id):
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def close(self):
        self._server.shutdown()
        self._server.server_close()

    def _take(self, body):
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            service = _attributes(resource_spans.resource.attributes)["service.name"]
            for scope_spans in resource_spans.scope_spans:
                with self._lock:
                    self.spans.extend(
                        Span(service, s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                             _attributes(s.attributes))
                        for s in scope_spans.spans
                    )

    def _handler_class(self):
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                collector._take(self.rfile.read(int(self.headers["Content-Length"])))
                answer_http(self, 200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

        return Handler


def _attributes(key_values):
    return {kv.key: kv.value.string_value for kv in key_values if kv.value.HasField("string_value")}
