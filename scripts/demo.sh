#!/usr/bin/env bash
# Runs Remora on the shipped example config (config/examples/quickstart.yaml) in front of a demo
# upstream, sends one request through it, and keeps both running until Ctrl-C.
#
#   proxy    127.0.0.1:8080  ->  demo upstream 127.0.0.1:8081
#   admin    127.0.0.1:9901  (/ready /metrics /config /clusters)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "building (the first build takes a few minutes)..." >&2
cargo build --quiet -p remora-proxy -p remora-tests --bin remora-proxy --bin demo-upstream

target/debug/demo-upstream 127.0.0.1:8081 &
upstream=$!
target/debug/remora-proxy --config config/examples/quickstart.yaml &
proxy=$!
trap 'kill $upstream $proxy 2>/dev/null; wait 2>/dev/null' EXIT INT TERM

# Wait for the proxy to say it is ready, instead of guessing with sleep.
for _ in $(seq 1 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/9901 && printf 'GET /ready HTTP/1.0\r\n\r\n' >&3 && grep -q "200" <&3) 2>/dev/null; then
    break
  fi
  sleep 0.1
done

echo
echo "+ curl -si http://127.0.0.1:8080/hello"
if command -v curl >/dev/null 2>&1; then
  curl -si http://127.0.0.1:8080/hello
else
  # No curl: speak HTTP/1.1 over bash's /dev/tcp instead.
  exec 3<>/dev/tcp/127.0.0.1/8080
  printf 'GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n' >&3
  cat <&3
fi
echo
echo "Remora is serving on 127.0.0.1:8080 (admin on 127.0.0.1:9901). Try:"
echo "  curl -i http://127.0.0.1:8080/anything"
echo "  curl http://127.0.0.1:9901/metrics"
echo "Ctrl-C stops it."
wait $proxy
