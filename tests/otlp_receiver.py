#!/usr/bin/env python3
"""A real OTLP receiver for the export tests (tests/tests/otlp.rs).

Built on the official generated OTLP definitions (`opentelemetry-proto` from PyPI) and
`grpcio`, installed by `cargo xtask setup` in target/tools/venv. It serves the logs and
metrics services over gRPC, or POST /v1/logs and /v1/metrics with protobuf bodies (OTLP/HTTP),
on 127.0.0.1, and appends one JSON line per log record and per metric to --out before it
answers (so an acknowledged request is always in the file).

    otlp_receiver.py --protocol grpc|http --out FILE --port-file FILE [--port N]
                     [--reject-each N]

--reject-each N answers every logs request with a partial success saying N records were
rejected (all are still written to --out).

The port it listens on is written to --port-file once it serves. SIGTERM stops it
gracefully: requests in progress are answered first.
"""

import argparse
import json
import os
import signal
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)

LOCK = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attrs(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


class Store:
    def __init__(self, path, protocol, reject_each):
        self.path = path
        self.protocol = protocol
        self.reject_each = reject_each

    def logs_response(self):
        answer = logs_service_pb2.ExportLogsServiceResponse()
        if self.reject_each:
            answer.partial_success.rejected_log_records = self.reject_each
            answer.partial_success.error_message = "rejected by the test receiver"
        return answer

    def write(self, lines):
        with LOCK, open(self.path, "a", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def logs(self, req):
        out = []
        for rl in req.resource_logs:
            resource = attrs(rl.resource.attributes)
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    out.append(
                        {
                            "signal": "log",
                            "protocol": self.protocol,
                            "resource": resource,
                            "scope": sl.scope.name,
                            "time_unix_nano": r.time_unix_nano,
                            "severity_number": r.severity_number,
                            "severity_text": r.severity_text,
                            "attributes": attrs(r.attributes),
                            "body": value(r.body),
                        }
                    )
        self.write(out)

    def metrics(self, req):
        out = []
        for rm in req.resource_metrics:
            resource = attrs(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    data = getattr(m, kind)
                    out.append(
                        {
                            "signal": "metric",
                            "protocol": self.protocol,
                            "resource": resource,
                            "name": m.name,
                            "type": kind,
                            "points": len(data.data_points),
                        }
                    )
        self.write(out)


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, store):
        self.store = store

    def Export(self, request, context):
        self.store.logs(request)
        return self.store.logs_response()


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, store):
        self.store = store

    def Export(self, request, context):
        self.store.metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


def serve_grpc(store, port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(store), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(store), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return bound, lambda: server.stop(grace=5).wait()


def serve_http(store, port):
    routes = {
        "/v1/logs": (
            logs_service_pb2.ExportLogsServiceRequest,
            store.logs,
            store.logs_response,
        ),
        "/v1/metrics": (
            metrics_service_pb2.ExportMetricsServiceRequest,
            store.metrics,
            metrics_service_pb2.ExportMetricsServiceResponse,
        ),
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            route = routes.get(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if route is None or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404 if route is None else 415)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            request, handle, response = route
            handle(request.FromString(body))
            answer = response().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop():
        server.shutdown()
        server.server_close()

    return server.server_address[1], stop


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--protocol", choices=["grpc", "http"], required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--reject-each", type=int, default=0)
    args = p.parse_args()
    store = Store(args.out, args.protocol, args.reject_each)
    serve = serve_grpc if args.protocol == "grpc" else serve_http
    port, stop = serve(store, args.port)
    if port == 0:
        raise SystemExit(f"could not listen on 127.0.0.1:{args.port}")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    tmp = args.port_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(str(port))
    os.replace(tmp, args.port_file)
    done.wait()
    stop()


if __name__ == "__main__":
    main()
