"""A WebSocket client for Remora's end-to-end tests (the `websockets` package): runs one
scenario against URL and prints what it saw as one JSON line.

usage: ws_client.py URL SCENARIO

  client-close  echo a text and a binary message, ask for the handshake headers the server
                received, then close with 1000 "bye from client"
  server-close  ask the server (see ws_server.py) to close with 4001 "bye from server"

Output: {"echo_text", "echo_binary_ok", "server_saw_headers", "response_status",
         "response_headers", "close_code", "close_reason"}
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def run(url, scenario):
    out = {}
    # proxy=None: never through a proxy from the environment; the proxy under test is the URL.
    async with connect(url, proxy=None, compression=None, open_timeout=10) as ws:
        out["response_status"] = ws.response.status_code
        out["response_headers"] = {k.lower(): v for k, v in ws.response.headers.raw_items()}
        if scenario == "client-close":
            await ws.send("hello through remora")
            out["echo_text"] = await ws.recv()
            payload = bytes(range(256)) * 64
            await ws.send(payload)
            out["echo_binary_ok"] = (await ws.recv()) == payload
            await ws.send("headers?")
            out["server_saw_headers"] = json.loads(await ws.recv())
            await ws.close(1000, "bye from client")
            received = ws.protocol.close_rcvd
        elif scenario == "server-close":
            await ws.send("close:4001:bye from server")
            try:
                await ws.recv()
            except ConnectionClosed as e:
                received = e.rcvd
            else:
                raise SystemExit("the server sent a message instead of closing")
        else:
            raise SystemExit(f"unknown scenario {scenario!r}")
        # The close frame the other side sent (for client-close: the server's echo of ours).
        out["close_code"] = received.code if received else None
        out["close_reason"] = received.reason if received else None
    return out


def main():
    url, scenario = sys.argv[1], sys.argv[2]
    print(json.dumps(asyncio.run(asyncio.wait_for(run(url, scenario), 30))))


if __name__ == "__main__":
    main()
