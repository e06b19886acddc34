"""A gRPC client for Remora's end-to-end tests: runs one call against ADDR and prints what the
client saw as one JSON line.

usage: grpc_client.py ADDR SPEC

SPEC is JSON:
  {"kind": "unary" | "server_stream" | "client_stream" | "bidi" | "health",
   "path": "/remora.test.Echo/Unary",     (not for health)
   "requests": ["text", ...],             (one for unary and server_stream)
   "metadata": {"key": "value"},
   "timeout": 2.5}                        (seconds; the client sends it as grpc-timeout)

Output: {"code": "OK", "details": ..., "responses": [...], "initial": {...}, "trailing": {...}}
with messages and metadata values as text.
"""

import json
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def md_dict(md):
    return {k: text(v) for k, v in (md or ())}


def call(channel, spec):
    kind = spec["kind"]
    timeout = spec.get("timeout")
    metadata = tuple(spec.get("metadata", {}).items())
    requests = [r.encode() for r in spec.get("requests", [""])]
    responses = []
    if kind == "health":
        stub = health_pb2_grpc.HealthStub(channel)
        reply, c = stub.Check.with_call(
            health_pb2.HealthCheckRequest(service=spec.get("service", "")),
            timeout=timeout,
            metadata=metadata,
        )
        return [health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)], c
    path = spec["path"]
    if kind == "unary":
        reply, c = channel.unary_unary(path).with_call(
            requests[0], timeout=timeout, metadata=metadata
        )
        return [text(reply)], c
    if kind == "client_stream":
        reply, c = channel.stream_unary(path).with_call(
            iter(requests), timeout=timeout, metadata=metadata
        )
        return [text(reply)], c
    if kind == "server_stream":
        c = channel.unary_stream(path)(requests[0], timeout=timeout, metadata=metadata)
    elif kind == "bidi":
        c = channel.stream_stream(path)(iter(requests), timeout=timeout, metadata=metadata)
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    try:
        for reply in c:
            responses.append(text(reply))
    except grpc.RpcError:
        pass
    return responses, c


def main():
    addr, spec = sys.argv[1], json.loads(sys.argv[2])
    # Never through a proxy from the environment: the proxy under test is the address given.
    options = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]
    with grpc.insecure_channel(addr, options=options) as channel:
        try:
            responses, c = call(channel, spec)
        except grpc.RpcError as e:
            responses, c = [], e
        print(
            json.dumps(
                {
                    "code": c.code().name,
                    "details": c.details(),
                    "responses": responses,
                    "initial": md_dict(c.initial_metadata()),
                    "trailing": md_dict(c.trailing_metadata()),
                }
            )
        )


if __name__ == "__main__":
    main()
