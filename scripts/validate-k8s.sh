#!/usr/bin/env bash
# Renders every kustomization under k8s/ (`kubectl kustomize DIR`) and checks each rendered
# object against the Kubernetes API schemas with `kubernetes-validate --strict` (an unknown
# field or a wrong type is an error, as the API server's strict field validation would make
# it). Exits non-zero, saying which directory and object, on the first kind of failure found
# in each directory; every directory is checked. The third-party manifests under
# k8s/testdata/real-world (no kustomization there) are checked file by file, as published and
# after `remora inject`.
#
# Needs kubectl (or a standalone kustomize) and kubernetes-validate; scripts/test.sh installs
# the latter into .venv from tests/python/requirements.txt. Offline: nothing here talks to a
# cluster or a registry.
#
# Usage: scripts/validate-k8s.sh [DIR...]   (default: every kustomization under k8s/)
set -euo pipefail
cd "$(dirname "$0")/.."

# Where cargo put the remora binary.
target="${CARGO_TARGET_DIR:-target}"

# The Kubernetes release the manifests must be valid for: the oldest one we support.
K8S_VERSION=1.33.0

die() { echo "validate-k8s: $*" >&2; exit 1; }

if command -v kubectl >/dev/null 2>&1; then
  render() { kubectl kustomize "$1"; }
elif command -v kustomize >/dev/null 2>&1; then
  render() { kustomize build "$1"; }
else
  die "needs kubectl or kustomize on PATH (scripts/test.sh says how to get it)"
fi

validator="${KUBERNETES_VALIDATE:-}"
if [ -z "$validator" ]; then
  if [ -x .venv/bin/kubernetes-validate ]; then
    validator=.venv/bin/kubernetes-validate
  elif command -v kubernetes-validate >/dev/null 2>&1; then
    validator=kubernetes-validate
  else
    die "needs kubernetes-validate: run scripts/test.sh once (it makes .venv), or
  pip install -r tests/python/requirements.txt"
  fi
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Render a copy, never k8s/ itself: the production overlay generates its Secrets from files
# that are not committed (a CA key, tokens), and a throwaway set is made in the copy.
cp -r k8s "$work/k8s"
prod="$work/k8s/overlays/production"
if [ -d "$prod" ]; then
  if [ ! -f "$prod/ca/ca.crt" ]; then
    remora=""
    for b in "${REMORA_BIN:-}" "$target/debug/remora" "$target/release/remora"; do
      if [ -n "$b" ] && [ -x "$b" ]; then remora="$b"; break; fi
    done
    if [ -n "$remora" ]; then
      # The documented way (k8s/README.md), so the command is checked too.
      "$remora" ca init --trust-domain cluster.local --out "$prod/ca" >/dev/null
    else
      # No remora binary built yet: the content does not matter to the render or to the
      # schema check (a Secret's data is opaque), only that the files exist.
      mkdir -p "$prod/ca"
      echo "validate-k8s placeholder, not a certificate" >"$prod/ca/ca.crt"
      echo "validate-k8s placeholder, not a key" >"$prod/ca/ca.key"
    fi
  fi
  [ -f "$prod/bootstrap-tokens" ] || echo "validate-k8s-throwaway-token shop/*" >"$prod/bootstrap-tokens"
fi

if [ $# -gt 0 ]; then
  dirs=()
  for d in "$@"; do
    d="${d%/}"
    case "$d" in
      k8s/*|k8s) dirs+=("$work/$d") ;;
      *) die "$d: give directories under k8s/" ;;
    esac
  done
else
  # Every directory with a kustomization file, components excepted: a component only renders
  # as part of a kustomization that includes it (and is checked there).
  mapfile -t dirs < <(find "$work/k8s" \( -name kustomization.yaml -o -name kustomization.yml \
    -o -name Kustomization \) -printf '%h\n' | sort)
fi

failed=0
checked=0
for dir in "${dirs[@]}"; do
  name="${dir#"$work/"}"
  kfile=""
  for f in kustomization.yaml kustomization.yml Kustomization; do
    [ -f "$dir/$f" ] && { kfile="$dir/$f"; break; }
  done
  [ -n "$kfile" ] || { echo "FAIL $name: no kustomization file" >&2; failed=1; continue; }
  if grep -qE '^kind:[[:space:]]*Component[[:space:]]*$' "$kfile"; then
    continue
  fi
  out="$work/rendered-$checked.yaml"
  if ! render "$dir" >"$out" 2>"$out.err"; then
    echo "FAIL $name: kustomize could not render it:" >&2
    sed "s|$work/||g; s/^/  /" "$out.err" >&2
    failed=1
    continue
  fi
  if ! grep -q '^kind:' "$out"; then
    echo "FAIL $name: rendered no object" >&2
    failed=1
    continue
  fi
  objects=$(grep -c '^kind:' "$out")
  if ! "$validator" --strict --quiet --kubernetes-version "$K8S_VERSION" "$out" >"$out.val" 2>&1; then
    echo "FAIL $name: not valid for Kubernetes $K8S_VERSION:" >&2
    # The rendered file's temporary name means nothing to the reader: name the directory.
    sed "s|$out|$name|g; s|$work/||g; s/^/  /" "$out.val" >&2
    failed=1
    continue
  fi
  echo "ok   $name ($objects objects, Kubernetes $K8S_VERSION, strict)"
  checked=$((checked + 1))
done

# The mesh config files under k8s/ are what the control plane will load: check them with the
# same code. And the example app as the injector leaves it must still be valid Kubernetes.
remora="${REMORA_BIN:-}"
[ -n "$remora" ] || { [ -x "$target/debug/remora" ] && remora="$target/debug/remora"; } || true
[ -n "$remora" ] && [ -x "$remora" ] || die "no remora binary (build it: cargo build -p remora-control-plane)"
if [ -n "$remora" ] && [ -x "$remora" ]; then
  # Injected sidecars reach the control plane over TLS and trust the mesh root: a root of
  # our own, as `remora ca init` makes it (docs/identity.md), for `remora inject` to embed.
  "$remora" ca init --trust-domain cluster.local --out "$work/inject-ca" >/dev/null
  inject() { "$remora" inject --sidecar-control-plane-ca "$work/inject-ca/ca.crt" "$@"; }
  injected="$work/injected.yaml"
  if render "$work/k8s/examples/shop" | inject - >"$injected" 2>"$injected.err" \
    && "$validator" --strict --quiet --kubernetes-version "$K8S_VERSION" "$injected" >"$injected.val" 2>&1; then
    echo "ok   k8s/examples/shop injected ($(grep -c 'name: remora-proxy' "$injected") sidecars, Kubernetes $K8S_VERSION, strict)"
  else
    echo "FAIL k8s/examples/shop after remora inject:" >&2
    sed "s|$work/||g; s/^/  /" "$injected.err" "$injected.val" >&2 2>/dev/null
    failed=1
  fi
  # Manifests nobody here wrote (k8s/testdata/real-world, its README.md says where from): each
  # is valid as published, and must be as valid once injected, object for object.
  # kubernetes-validate has no schema for a custom resource: it only warns ("Couldn't find
  # schema") and passes it. Such objects are counted apart, as not schema-checked; that
  # injection leaves them as they are is checked by control-plane/src/inject/real_world.rs.
  checked_objects() { sed -n 's/^INFO .* passed for resource \(.*\) against version .*/\1/p' "$1"; }
  schemaless_kinds() { sed -n "s/^WARN .*Couldn't find schema for kind \([^ ]*\) .*/\1/p" "$1"; }
  base="$work/real-world"
  while read -r f; do
    if ! "$validator" --strict --kubernetes-version "$K8S_VERSION" "$f" >"$base.val" 2>&1 \
      || grep -qv -e '^INFO ' -e "^WARN .*Couldn't find schema" "$base.val"; then
      echo "FAIL $f: not valid for Kubernetes $K8S_VERSION as published:" >&2
      grep -v '^INFO ' "$base.val" | sed 's/^/  /' >&2
      failed=1
      continue
    fi
    if ! inject "$f" >"$base.yaml" 2>"$base.err"; then
      echo "FAIL $f: remora inject:" >&2
      sed 's/^/  /' "$base.err" >&2
      failed=1
      continue
    fi
    if ! "$validator" --strict --kubernetes-version "$K8S_VERSION" "$base.yaml" >"$base.injected.val" 2>&1 \
      || grep -qv -e '^INFO ' -e "^WARN .*Couldn't find schema" "$base.injected.val"; then
      echo "FAIL $f: not valid for Kubernetes $K8S_VERSION after remora inject:" >&2
      grep -v '^INFO ' "$base.injected.val" | sed "s|$base.yaml|$f (injected)|g; s/^/  /" >&2
      failed=1
      continue
    fi
    # The same objects checked, and the same ones not, before and after.
    if [ "$(checked_objects "$base.val")" != "$(checked_objects "$base.injected.val")" ] \
      || [ "$(schemaless_kinds "$base.val")" != "$(schemaless_kinds "$base.injected.val")" ]; then
      echo "FAIL $f: remora inject changed which objects there are:" >&2
      diff <(checked_objects "$base.val"; schemaless_kinds "$base.val") \
        <(checked_objects "$base.injected.val"; schemaless_kinds "$base.injected.val") \
        | sed 's/^/  /' >&2
      failed=1
      continue
    fi
    valid=$(checked_objects "$base.val" | wc -l)
    custom=$(schemaless_kinds "$base.val" | wc -l)
    if [ "$valid" = 0 ] && [ "$custom" = 0 ]; then
      echo "FAIL $f: holds no object" >&2
      failed=1
      continue
    fi
    sidecars=$(grep -c ': Injected$' "$base.err" || true)
    unchecked=""
    [ "$custom" = 0 ] \
      || unchecked="; $custom custom resources not schema-checked ($(schemaless_kinds "$base.val" | sort -u | paste -sd, -))"
    echo "ok   $f ($valid objects valid before and after remora inject, $sidecars sidecars injected, Kubernetes $K8S_VERSION, strict$unchecked)"
  done < <(find k8s/testdata/real-world -name '*.yaml' | sort)
  while read -r mesh; do
    if "$remora" validate --mesh "$mesh" >"$work/mesh.out" 2>&1; then
      echo "ok   $mesh (remora validate --mesh)"
    else
      echo "FAIL $mesh: remora validate --mesh:" >&2
      sed 's/^/  /' "$work/mesh.out" >&2
      failed=1
    fi
  done < <(find k8s -type d -name mesh | sort)
fi

[ "$failed" = 0 ] || die "k8s/ manifests have problems (above)"
[ "$checked" -gt 0 ] || die "no kustomization found to check"
echo "validate-k8s: $checked kustomizations valid"
