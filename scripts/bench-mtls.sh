#!/usr/bin/env bash
# The cost of mTLS between sidecars, measured: the same two-sidecar path (client -> web's
# outbound -> api's inbound -> an nginx backend) in plaintext and with mTLS, alternated for
# ROUNDS rounds, with wrk on kept-alive HTTP/1.1 connections; and full mTLS handshakes per
# second against api's inbound (openssl s_time with a workload certificate from the control
# plane). Prints medians and the ratio. Needs release builds of remora and remora-proxy,
# nginx, wrk, openssl, curl and python3.
#
#   cargo build --release -p remora-proxy -p remora-control-plane
#   scripts/bench-mtls.sh                       # ROUNDS=3 DURATION=10
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
BIN="${BIN:-target/release}"
BASE="${BASE_PORT:-18200}"
backend=$((BASE)); cp_listen=$((BASE + 1)); cp_admin=$((BASE + 2))
api_in=$((BASE + 3)); web_out=$((BASE + 4)); web_in=$((BASE + 5))
api_admin=$((BASE + 6)); web_admin=$((BASE + 7))

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The backend: nginx, one worker, a fixed 64-byte body (as ../shared/bench/compare.sh).
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$backend;
    location / { return 200 "0123456789012345678901234567890123456789012345678901234567890123"; }
  }
}
EOF
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)

mkdir -p "$work/mesh"
cat >"$work/mesh/mesh.yaml" <<EOF
services:
  - name: web
    app: 127.0.0.1:1
    inbound: 127.0.0.1:$web_in
    outbound: 127.0.0.1:$web_out
    calls: [api]
  - name: api
    app: 127.0.0.1:$backend
    inbound: 127.0.0.1:$api_in
    cluster:
      endpoints: [{ address: "127.0.0.1:$api_in" }]
EOF
printf 'tok-web default/web\ntok-api default/api\ntok-bench default/bench\n' >"$work/tokens"
echo tok-web >"$work/web.token"
echo tok-api >"$work/api.token"

wait_ready() {
  for _ in $(seq 1 200); do
    curl -fs "http://$1/ready" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "bench-mtls: $1 never became ready" >&2
  exit 1
}

# Starts the control plane and both sidecars, in plaintext or with mTLS.
start_mesh() {
  local mode=$1 cp_args=() sc_args=()
  if [ "$mode" = mtls ]; then
    cp_args=(--bootstrap-tokens "$work/tokens" --dev-ca-dir "$work/ca")
  else
    cp_args=(--no-ca)
  fi
  "$BIN/remora" control-plane --config-dir "$work/mesh" --listen "127.0.0.1:$cp_listen" \
    --admin "127.0.0.1:$cp_admin" --log-level warn "${cp_args[@]}" &
  mesh_pids=($!)
  wait_ready "127.0.0.1:$cp_admin"
  for svc in web api; do
    sc_args=()
    [ "$mode" = mtls ] && sc_args=(--identity-token-file "$work/$svc.token")
    local admin=$web_admin
    [ "$svc" = api ] && admin=$api_admin
    "$BIN/remora-proxy" --control-plane "http://127.0.0.1:$cp_listen" --node "$svc-1" \
      --service "$svc" --admin "127.0.0.1:$admin" --access-log off --log-level warn \
      "${sc_args[@]}" &
    mesh_pids+=($!)
  done
  wait_ready "127.0.0.1:$web_admin"
  wait_ready "127.0.0.1:$api_admin"
  # The path works end to end before it is measured.
  curl -fs -H 'Host: api' "http://127.0.0.1:$web_out/" >/dev/null
}

stop_mesh() {
  # Sidecars first: a control plane gone first only makes them log that it is.
  local i
  for ((i = ${#mesh_pids[@]} - 1; i >= 0; i--)); do
    kill "${mesh_pids[$i]}" 2>/dev/null || true
    wait "${mesh_pids[$i]}" 2>/dev/null || true
  done
}

rps() {
  wrk -t1 -c64 -d"${DURATION}s" -H 'Host: api' "http://127.0.0.1:$web_out/" |
    awk '/Requests\/sec/ {print $2}'
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

plain=() mtls=() handshakes13=() handshakes12=()
for round in $(seq 1 "$ROUNDS"); do
  for mode in plain mtls; do
    start_mesh "$mode"
    r=$(rps)
    echo "round $round $mode: $r req/s" >&2
    if [ "$mode" = plain ]; then plain+=("$r"); else mtls+=("$r"); fi
    if [ "$mode" = mtls ]; then
      # A workload certificate for the bench client, from the control plane (key made here).
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$work/bench.key" -subj /CN=bench -out "$work/bench.csr" 2>/dev/null
      python3 - "$work" "$cp_listen" <<'PY'
import json, sys, urllib.request
work, port = sys.argv[1], sys.argv[2]
body = json.dumps({"token": "tok-bench", "namespace": "default", "service_account": "bench",
                   "csr": open(f"{work}/bench.csr").read()}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/certificate", data=body,
                             headers={"content-type": "application/json"})
answer = json.load(urllib.request.urlopen(req))
open(f"{work}/bench.crt", "w").write(answer["certificate_chain"])
open(f"{work}/bundle.pem", "w").write(answer["trust_bundle"])
PY
      for v in 1_3 1_2; do
        n=$(openssl s_time -connect "127.0.0.1:$api_in" -new -time "$DURATION" \
          -cert "$work/bench.crt" -key "$work/bench.key" "-tls${v%_*}_${v#*_}" 2>/dev/null |
          awk '/connections in [0-9.]+ real seconds/ {print $1 / $4}' | head -1)
        echo "round $round: TLS ${v/_/.} full handshakes: $n /s" >&2
        if [ "$v" = 1_3 ]; then handshakes13+=("$n"); else handshakes12+=("$n"); fi
      done
    fi
    stop_mesh
  done
done

p=$(printf '%s\n' "${plain[@]}" | median)
m=$(printf '%s\n' "${mtls[@]}" | median)
h13=$(printf '%s\n' "${handshakes13[@]}" | median)
h12=$(printf '%s\n' "${handshakes12[@]}" | median)
echo "kept-alive HTTP/1.1 through two sidecars (wrk -t1 -c64, ${DURATION}s x $ROUNDS, medians):"
echo "  plaintext $p req/s   [${plain[*]}]"
echo "  mTLS      $m req/s   [${mtls[*]}]"
awk -v p="$p" -v m="$m" 'BEGIN {printf "  mTLS/plaintext = %.2f (cost %.0f%%)\n", m / p, (1 - m / p) * 100}'
echo "full mTLS handshakes per second at api's inbound (openssl s_time -new, one client):"
echo "  TLS 1.3: $h13 /s   [${handshakes13[*]}]"
echo "  TLS 1.2: $h12 /s   [${handshakes12[*]}]"
