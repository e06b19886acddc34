#!/usr/bin/env bash
# Runs Remora's whole test suite: unit tests, the config examples, the CLI tests and the
# end-to-end tests that start the real proxy on 127.0.0.1:0 and send real traffic.
#
# It installs what the tests need when it is missing, so it works on a fresh machine;
# .ci/run calls this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

# Root tools (iptables, ip, dnsmasq) live in sbin, which a CI shell may not have on PATH.
export PATH="$PATH:/usr/sbin:/sbin"

need_apt=()
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The DNS discovery tests run a real DNS server; dnsmasq lives in /usr/sbin.
PATH="$PATH:/usr/sbin:/sbin" command -v dnsmasq >/dev/null 2>&1 || need_apt+=(dnsmasq-base)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
# The capture tests install iptables rules in network namespaces of their own (as root).
PATH="$PATH:/usr/sbin:/sbin" command -v iptables-restore >/dev/null 2>&1 || need_apt+=(iptables)
PATH="$PATH:/usr/sbin:/sbin" command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${need_apt[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "test.sh: please install: ${need_apt[*]}" >&2
    exit 1
  fi
fi

# Real gRPC and WebSocket peers for the end-to-end tests, in a venv at the repository root.
# Recreated from tests/python/requirements.txt whenever that file changes.
venv="$PWD/.venv"
reqs=tests/python/requirements.txt
if ! cmp -s "$reqs" "$venv/requirements.installed" 2>/dev/null; then
  echo "test.sh: setting up $venv from $reqs" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs"
  cp "$reqs" "$venv/requirements.installed"
fi
export REMORA_TEST_PYTHON="$venv/bin/python"

# The Kubernetes manifests (k8s/): every kustomization renders, and every object is valid for
# Kubernetes 1.33 (strict schemas). kubectl comes with this project's machine image, from its
# vendor's apt repository; Debian's own kubectl (kubernetes-client, 1.20) is too old for these
# kustomizations, so without that repository there is nothing to install it from.
if ! command -v kubectl >/dev/null 2>&1 && ! command -v kustomize >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing kubectl" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null || true
  fi
  command -v kubectl >/dev/null 2>&1 || {
    echo "test.sh: please install kubectl (1.27 or later) or kustomize (v5) to check k8s/" >&2
    exit 1
  }
fi
cargo build --quiet -p remora-control-plane --bin remora
KUBERNETES_VALIDATE="$venv/bin/kubernetes-validate" scripts/validate-k8s.sh

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
  # nextest does not run doctests.
  cargo test --workspace --doc --quiet
else
  cargo test --workspace --no-fail-fast "$@"
fi
