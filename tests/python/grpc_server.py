"""A gRPC server for Remora's end-to-end tests.

Serves `remora.test.Echo` with grpcio's generic handlers over raw bytes (no protobuf code
generation), and the standard health service. It binds 127.0.0.1:0, prints {"port": N} as its
first line, then one JSON line per event the tests wait for, and stops when stdin closes.

The client steers each call with request metadata:
  x-sleep-ms      wait this long before sending the response head
  x-interval-ms   wait this long between streamed messages
  x-count         how many messages ServerStream sends (default 3)
  x-fail-code     end the call with this status (a grpc.StatusCode name, e.g. NOT_FOUND)
  x-fail-details  ... and these details
Every call answers with initial metadata `x-initial: hello` and trailing metadata
`x-trailer: from-server`, `x-time-remaining-ms` (what the server saw of the call's deadline)
and `x-seen-metadata` (the request metadata keys it received, comma-separated).

The health service starts with "" and remora.test.Echo SERVING. Each line on stdin is a JSON
command; {"health": {"service": NAME, "status": "NOT_SERVING"}} sets a service's status (a
grpc.health.v1 ServingStatus name) and is acknowledged with the event
{"event": "health", "service": NAME, "status": ...}.
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "remora.test.Echo"


def emit(**event):
    print(json.dumps(event), flush=True)


def metadata(context):
    return {k: v for k, v in context.invocation_metadata()}


def begin(context):
    """Applies the steering metadata common to every method; returns it."""
    md = metadata(context)
    remaining = context.time_remaining()
    trailing = [
        ("x-trailer", "from-server"),
        ("x-seen-metadata", ",".join(sorted(md))),
    ]
    # Without a deadline grpcio reports a time in the far future.
    if remaining is not None and remaining < 10**6:
        trailing.append(("x-time-remaining-ms", str(int(remaining * 1000))))
    context.set_trailing_metadata(tuple(trailing))
    # Before the response head: a call that sleeps has sent nothing yet.
    sleep_ms = int(md.get("x-sleep-ms", "0"))
    if sleep_ms:
        time.sleep(sleep_ms / 1000)
    if context.is_active():
        context.send_initial_metadata((("x-initial", "hello"),))
    return md


def maybe_fail(md, context):
    code = md.get("x-fail-code")
    if code:
        context.abort(getattr(grpc.StatusCode, code), md.get("x-fail-details", ""))


def unary(request, context):
    try:
        md = begin(context)
        maybe_fail(md, context)
        return request
    finally:
        emit(event="unary", cancelled=not context.is_active())


def server_stream(request, context):
    md = begin(context)
    maybe_fail(md, context)
    interval = int(md.get("x-interval-ms", "0")) / 1000
    count = int(md.get("x-count", "3"))
    sent = 0
    try:
        for i in range(count):
            if i and interval:
                time.sleep(interval)
            if not context.is_active():
                break
            yield request + b"-" + str(i).encode()
            sent += 1
    finally:
        emit(event="server_stream", sent=sent, cancelled=not context.is_active())


def client_stream(request_iterator, context):
    md = begin(context)
    received = list(request_iterator)
    maybe_fail(md, context)
    return b"|".join(received)


def bidi(request_iterator, context):
    md = begin(context)
    maybe_fail(md, context)
    for message in request_iterator:
        yield b"echo:" + message


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    emit(port=port)
    # The test harness holds stdin open for as long as it wants the server.
    threading.Thread(target=commands, args=(server, health_servicer), daemon=True).start()
    server.wait_for_termination()


def commands(server, health_servicer):
    """Applies the commands read from stdin until it closes, then stops the server."""
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        if "health" in command:
            service = command["health"]["service"]
            status = command["health"]["status"]
            health_servicer.set(service, health_pb2.HealthCheckResponse.ServingStatus.Value(status))
            emit(event="health", service=service, status=status)
    server.stop(0)


if __name__ == "__main__":
    main()
