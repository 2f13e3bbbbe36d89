#!/usr/bin/env python3
"""A minimal OTLP/HTTP traces receiver for benchmarks: accepts
POST /v1/traces (protobuf), counts requests, bytes and spans (by service),
answers 200, and prints the totals every 10 s and on SIGTERM/SIGINT.

    pip install opentelemetry-proto        # once (brings protobuf)
    python3 scripts/otlp-sink.py [PORT]    # default 4318, 127.0.0.1 only

Used to measure what trace export costs an edge (BENCHMARKS.md, "Tracing
overhead"); not a collector.
"""
import collections
import http.server
import signal
import sys
import threading
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
lock = threading.Lock()
totals = collections.Counter()
started = time.monotonic()


def report():
    with lock:
        t = dict(totals)
    secs = time.monotonic() - started
    spans = {k[6:]: v for k, v in t.items() if k.startswith("spans:")}
    print(
        f"otlp-sink: {secs:.0f}s, {t.get('requests', 0)} requests, "
        f"{t.get('bytes', 0)} bytes, spans by service {spans}",
        flush=True,
    )


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path != "/v1/traces":
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        with lock:
            totals["requests"] += 1
            totals["bytes"] += len(body)
            for rs in req.resource_spans:
                service = next(
                    (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"),
                    "?",
                )
                totals["spans:" + service] += sum(len(ss.spans) for ss in rs.scope_spans)
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def stop(*_):
    report()
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)


def tick():
    while True:
        time.sleep(10)
        report()


threading.Thread(target=tick, daemon=True).start()
print(f"otlp-sink: listening on http://127.0.0.1:{PORT}/v1/traces", flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
