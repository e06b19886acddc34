"""A WebSocket server for Remora's end-to-end tests (the `websockets` package).

It binds 127.0.0.1:0, prints {"port": N} as its first line, then one JSON line per event, and
stops when stdin closes. On each connection it:
  - echoes every text and binary message;
  - answers the text `headers?` with the handshake request's headers as JSON;
  - on the text `close:CODE:REASON`, closes the connection itself with that code and reason.
When a connection ends it reports {"event": "closed", "code": ..., "reason": ...}: the close
frame the client sent, if the client closed first.
"""

import asyncio
import json
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


def emit(**event):
    print(json.dumps(event), flush=True)


async def handler(ws):
    emit(event="open", path=ws.request.path)
    try:
        async for message in ws:
            if isinstance(message, str) and message == "headers?":
                await ws.send(json.dumps({k.lower(): v for k, v in ws.request.headers.raw_items()}))
            elif isinstance(message, str) and message.startswith("close:"):
                _, code, reason = message.split(":", 2)
                await ws.close(int(code), reason)
            else:
                await ws.send(message)
    except ConnectionClosed:
        pass
    received = ws.protocol.close_rcvd
    emit(
        event="closed",
        code=received.code if received else None,
        reason=received.reason if received else None,
    )


async def main():
    # No compression: the bytes on the wire are the messages, easy to reason about in metrics.
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        emit(port=server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
