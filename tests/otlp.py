"""A real OTLP/HTTP receiver for the tests of span export (tests/test_tracing.py, tests/test_cluster.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["OtlpCollector"]


class OtlpCollector:
    """An OTLP/HTTP trace receiver on a real socket (a free port on 127.0.0.1): what the
    nodes export, decoded from protobuf ``ExportTraceServiceRequest``s."""

    def __init__(self) -> None:
        import http.server
        import threading

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list[tuple[str, dict[str, str]]] = []
        #: (name, trace id, span id, parent span id), hex.
        self.ids: list[tuple[str, str, str, str]] = []
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            attrs = {a.key: a.value.string_value for a in span.attributes}
                            collector.spans.append((span.name, attrs))
                            collector.ids.append(
                                (span.name, span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex())
                            )
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def environ(self) -> dict[str, str]:
        """What a ``runactors`` needs to trace and export here (batches every 100 ms)."""
        return {
            "RIVET_TRACING": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }

    def wait_for(self, check: Callable[[], Any], timeout: float = 15.0) -> Any:
        """Poll ``check`` (over what arrived) until it is truthy; its value, or fail."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value or time.monotonic() > deadline:
                assert value, f"not exported within {timeout}s: {self.ids}"
                return value
            time.sleep(0.1)
