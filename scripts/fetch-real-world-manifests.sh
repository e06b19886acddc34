#!/usr/bin/env bash
# Fetches the third-party Kubernetes manifests vendored under k8s/testdata/real-world again,
# from the exact package versions they came from, and checks them: each archive's sha256 must
# be the one recorded below (and in k8s/testdata/real-world/README.md), and each file is taken
# out of it byte for byte, with the package's license files.
#
# Without an option it rewrites the vendored copies (after a version bump here and in the
# README); with --check it changes nothing and fails if a committed copy differs from the
# package's, or if a file is there that no package gave.
#
# Needs python3 with pip, and the package index (pip's usual configuration). Not run by CI:
# the tests read the committed copies; this is how they were made, and how to check them.
#
# Usage: scripts/fetch-real-world-manifests.sh [--check]
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=k8s/testdata/real-world

die() { echo "fetch-real-world-manifests: $*" >&2; exit 1; }

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) die "usage: $0 [--check]" ;;
esac

# The archives, one per package: name, version, wheel or sdist, sha256 of the archive.
ARCHIVES=(
  "apache-airflow-providers-cncf-kubernetes 10.25.0 wheel 6644520fcfec8b16c271602bfe0492848857261a48885e83ae4477e1da662d74"
  "kopf 1.45.2 sdist 5baa180cfdebe1c5095d2a0a96d7d91825b6920541a0825c55719c36abb0054f"
  "kr8s 0.20.15 sdist 484d5206bbebd48f8cc00dd3ed749d4419294d2f08cd50c6232114cf62ed6d3a"
  "dask-kubernetes 2026.3.0 wheel 5cf138e03cb1851063b82b74e9fd4679251238e3867fcae1e3682aada6410728"
)

# The files taken: package, path inside the archive (below the sdist's top directory), and
# the name it gets in $DEST/<package>/.
FILES=(
  "apache-airflow-providers-cncf-kubernetes apache_airflow_providers_cncf_kubernetes-10.25.0.dist-info/licenses/LICENSE LICENSE"
  "apache-airflow-providers-cncf-kubernetes apache_airflow_providers_cncf_kubernetes-10.25.0.dist-info/licenses/NOTICE NOTICE"
  "apache-airflow-providers-cncf-kubernetes airflow/providers/cncf/kubernetes/pod_template_file_examples/dags_in_image_template.yaml dags_in_image_template.yaml"
  "apache-airflow-providers-cncf-kubernetes airflow/providers/cncf/kubernetes/pod_template_file_examples/dags_in_volume_template.yaml dags_in_volume_template.yaml"
  "apache-airflow-providers-cncf-kubernetes airflow/providers/cncf/kubernetes/pod_template_file_examples/git_sync_template.yaml git_sync_template.yaml"
  "apache-airflow-providers-cncf-kubernetes airflow/providers/cncf/kubernetes/kubernetes_executor_templates/basic_template.yaml basic_template.yaml"
  "kopf LICENSE LICENSE"
  "kopf docs/deployment-depl.yaml deployment-depl.yaml"
  "kopf docs/deployment-rbac.yaml deployment-rbac.yaml"
  "kr8s LICENSE LICENSE"
  "kr8s kr8s/tests/resources/simple/nginx_pod_service.yaml nginx_pod_service.yaml"
  "dask-kubernetes dask_kubernetes-2026.3.0.dist-info/licenses/LICENSE LICENSE"
  "dask-kubernetes dask_kubernetes/operator/controller/tests/resources/simplecluster.yaml simplecluster.yaml"
  "dask-kubernetes dask_kubernetes/operator/controller/tests/resources/simplejob.yaml simplejob.yaml"
)

python=""
for p in .venv/bin/python python3; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -m pip --version >/dev/null 2>&1; then
    python="$p"
    break
  fi
done
[ -n "$python" ] || die "needs python3 with pip"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The README is where a reader finds the provenance: it must say what is checked here.
for a in "${ARCHIVES[@]}"; do
  read -r name version _ sha <<<"$a"
  grep -q "$sha" "$DEST/README.md" || die "$DEST/README.md does not record $name $version's sha256 $sha"
done

# One file out of a wheel (a zip) or an sdist (a tar.gz with one top directory), to stdout.
extract() {
  "$python" - "$1" "$2" <<'EOF'
import sys, tarfile, zipfile
archive, member = sys.argv[1], sys.argv[2]
if archive.endswith(".whl"):
    with zipfile.ZipFile(archive) as z:
        data = z.read(member)
else:
    with tarfile.open(archive) as t:
        found = [m for m in t.getmembers()
                 if m.isfile() and m.name.split("/", 1)[-1] == member and "/" in m.name]
        if len(found) != 1:
            sys.exit(f"{archive}: {len(found)} files named {member}")
        data = t.extractfile(found[0]).read()
sys.stdout.buffer.write(data)
EOF
}

fresh="$work/real-world"
for a in "${ARCHIVES[@]}"; do
  read -r name version format sha <<<"$a"
  case "$format" in
    wheel) only=(--only-binary :all:) ;;
    sdist) only=(--no-binary :all:) ;;
    *) die "$name: format $format is neither wheel nor sdist" ;;
  esac
  dl="$work/download/$name"
  mkdir -p "$dl"
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps "${only[@]}" \
    -d "$dl" "$name==$version" >"$work/pip.out" 2>&1 \
    || { sed 's/^/  /' "$work/pip.out" >&2; die "pip could not download $name $version"; }
  archives=("$dl"/*)
  [ "${#archives[@]}" = 1 ] || die "$name $version: pip gave ${#archives[@]} files, expected one"
  archive="${archives[0]}"
  got="$(sha256sum "$archive" | cut -d' ' -f1)"
  [ "$got" = "$sha" ] || die "$(basename "$archive"): sha256 is $got, recorded $sha"
  echo "ok   PyPI package $name $version ($(basename "$archive"), sha256 $sha)"
  for f in "${FILES[@]}"; do
    read -r pkg member target <<<"$f"
    [ "$pkg" = "$name" ] || continue
    mkdir -p "$fresh/$pkg"
    extract "$archive" "$member" >"$fresh/$pkg/$target" || die "$name $version has no $member"
  done
done

if [ "$check" = 1 ]; then
  if diff -r -x README.md "$fresh" "$DEST" >"$work/diff" 2>&1; then
    echo "fetch-real-world-manifests: $DEST is what the packages hold ($(find "$fresh" -type f | wc -l) files)"
  else
    sed "s|$fresh|(from the packages)|g; s/^/  /" "$work/diff" >&2
    die "$DEST differs from the packages (above); run $0 without --check to refresh it"
  fi
else
  for f in "${FILES[@]}"; do
    read -r pkg _ target <<<"$f"
    mkdir -p "$DEST/$pkg"
    cp "$fresh/$pkg/$target" "$DEST/$pkg/$target"
  done
  # A file no package gave (an old version's, say) is not removed, only named.
  while read -r stray; do
    rel="${stray#"$DEST/"}"
    [ "$rel" = README.md ] || [ -f "$fresh/$rel" ] || echo "fetch-real-world-manifests: $stray is from no package listed here" >&2
  done < <(find "$DEST" -type f | sort)
  echo "fetch-real-world-manifests: wrote ${#FILES[@]} files under $DEST"
fi
