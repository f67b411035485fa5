#!/usr/bin/env bash
# The one test command (named in README.md; .ci/run calls it). On a fresh machine it:
#   0. installs HAProxy and Chromium (apt-get, when root) if missing: the cluster tests use HAProxy,
#      the dashboard tests drive Chromium (through Playwright for Python, from the pinned venv);
#   1. builds the workspace (cargo build --workspace --all-targets) and runs `cargo test --workspace`;
#   2. creates .venv (dapr-ext-workflow 1.18.3 + durabletask-dapr 0.17.4) and .venv119 (dapr 1.19.0)
#      from the pinned tests/python/requirements*.txt (re-installed only when a file changes);
#   3. installs tests/js dependencies and runs `node --test tests/js/` if tests/js/package.json exists;
#   4. runs the Python suites (tests/python, examples/task-processing, tests/python/v119) against the
#      freshly built `weft` binary, tests/python once more with `weft dev` on PostgreSQL, and the
#      cluster suite (tests/python/cluster: placement + sidecars + HAProxy as processes);
#   5. tests the Helm chart (tests/chart): a helm binary from scripts/get-helm.sh (cached in .cache/),
#      .venv-chart (kubernetes-validate) from tests/chart/requirements.txt, haproxy from apt if missing.
# Idempotent; re-runs reuse the venvs / node_modules. Every suite runs even if an earlier one fails;
# the script exits non-zero if any failed.
#
# Knobs: PYTHON=python3.11  SKIP_CARGO=1 (reuse the existing build)  PYTEST_ARGS="-k chain -x"
#        WEFT_SKIP_PYTHON=1 / WEFT_SKIP_JS=1 (explicit opt-outs, refused under CI=true)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

is_ci() { case "${CI:-}" in 1|true|TRUE|True|yes) return 0;; *) return 1;; esac; }
log() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\n\033[1;31mERROR: %s\033[0m\n' "$*" >&2; exit 1; }

FAILED=()
run_suite() {  # run_suite NAME CMD... ; pytest exit code 5 (no tests collected) counts as failure
  local name="$1"; shift
  log "$name"
  local rc=0
  "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then
    printf 'ERROR: %s collected no tests (pytest exit 5)\n' "$name" >&2
    FAILED+=("$name (no tests)")
  elif [ "$rc" -ne 0 ]; then
    FAILED+=("$name (exit $rc)")
  fi
}

# ------------------------------------------------------------------------------- HAProxy
# The cluster tests (crates/weft/tests/cluster_launcher.rs, tests/python/cluster) put HAProxy from
# the Debian package in front of the sidecars. Installed here when missing (CI runs as root).
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    log "installing haproxy (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy; } \
      || die "apt-get install haproxy failed"
  elif is_ci; then
    die "haproxy is required by the cluster tests and cannot be installed without root: apt-get install haproxy"
  else
    printf '\n\033[1;33mWARNING: haproxy not installed (not root) — the cluster tests will SKIP. Install it: apt-get install haproxy\033[0m\n' >&2
  fi
fi

# ------------------------------------------------------------------------------- Chromium
# The dashboard tests (tests/python/test_dashboard.py, tests/python/cluster/test_dashboard_cluster.py)
# drive Debian's chromium through Playwright for Python (never `playwright install`: no download).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    log "installing chromium (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      || die "apt-get install chromium failed"
  elif is_ci; then
    die "chromium is required by the dashboard tests and cannot be installed without root: apt-get install chromium"
  else
    printf '\n\033[1;33mWARNING: chromium not installed (not root) — the dashboard tests will SKIP. Install it: apt-get install chromium\033[0m\n' >&2
  fi
fi

# ------------------------------------------------------------------------------- Rust
if [ "${SKIP_CARGO:-}" != "1" ]; then
  command -v cargo >/dev/null || die "cargo not found (install Rust: https://rustup.rs)"
  log "cargo build --workspace --all-targets"
  cargo build --workspace --all-targets
  run_suite "cargo test --workspace" cargo test --workspace --no-fail-fast
fi
export WEFT_BIN="${WEFT_BIN:-$ROOT/target/debug/weft}"
[ -x "$WEFT_BIN" ] || die "weft binary not found at $WEFT_BIN (cargo build -p weft)"

# ------------------------------------------------------------------------------- Python envs
sha() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

ensure_venv() {  # ensure_venv DIR REQUIREMENTS
  local dir="$1" req="$2" want have=""
  want="$(sha "$req")"
  [ -f "$dir/.weft-req-hash" ] && have="$(cat "$dir/.weft-req-hash")"
  if [ -x "$dir/bin/python" ] && [ "$want" = "$have" ]; then
    return 0
  fi
  log "setting up $dir from $req"
  rm -rf "$dir"
  "$PY" -m venv "$dir" || die "could not create a virtualenv with $PY (on Debian/Ubuntu: apt-get install python3-venv)"
  "$dir/bin/python" -m pip install --disable-pip-version-check -q -r "$req" \
    || die "pip install -r $req failed"
  echo "$want" > "$dir/.weft-req-hash"
}

RUN_PY=1
PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1 || ! "$PY" -m pip --version >/dev/null 2>&1; then
  if is_ci || [ "${WEFT_SKIP_PYTHON:-}" != "1" ]; then
    die "Python 3 with pip is required for the SDK compatibility suites ($PY not usable). Install python3, python3-pip and python3-venv (or set PYTHON=...)."
  fi
  printf '\n\033[1;33mWARNING: WEFT_SKIP_PYTHON=1 — the Python SDK suites are NOT being run.\033[0m\n' >&2
  RUN_PY=0
elif [ "${WEFT_SKIP_PYTHON:-}" = "1" ]; then
  is_ci && die "WEFT_SKIP_PYTHON=1 is not allowed under CI=true"
  printf '\n\033[1;33mWARNING: WEFT_SKIP_PYTHON=1 — the Python SDK suites are NOT being run.\033[0m\n' >&2
  RUN_PY=0
fi

if [ "$RUN_PY" = "1" ]; then
  ensure_venv "$ROOT/.venv" "$ROOT/tests/python/requirements.txt"
  ensure_venv "$ROOT/.venv119" "$ROOT/tests/python/requirements-119.txt"
fi

# ------------------------------------------------------------------------------- JS suite
if [ -f "$ROOT/tests/js/package.json" ]; then
  if [ "${WEFT_SKIP_JS:-}" = "1" ] && ! is_ci; then
    printf '\n\033[1;33mWARNING: WEFT_SKIP_JS=1 — the JS SDK suite is NOT being run.\033[0m\n' >&2
  else
    command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are required for tests/js"
    js_want="$(sha "$ROOT/tests/js/package.json" $( [ -f "$ROOT/tests/js/package-lock.json" ] && echo "$ROOT/tests/js/package-lock.json"))"
    js_have="$(cat "$ROOT/tests/js/node_modules/.weft-dep-hash" 2>/dev/null || true)"
    if [ ! -d "$ROOT/tests/js/node_modules" ] || [ "$js_want" != "$js_have" ]; then
      log "installing tests/js dependencies"
      if [ -f "$ROOT/tests/js/package-lock.json" ]; then
        (cd "$ROOT/tests/js" && npm ci --no-audit --no-fund) || die "npm ci in tests/js failed"
      else
        (cd "$ROOT/tests/js" && npm install --no-audit --no-fund) || die "npm install in tests/js failed"
      fi
      echo "$js_want" > "$ROOT/tests/js/node_modules/.weft-dep-hash"
    fi
    run_suite "node --test tests/js/" node --test "$ROOT/tests/js/"
  fi
fi

# ------------------------------------------------------------------------------- Python suites
if [ "$RUN_PY" = "1" ]; then
  # shellcheck disable=SC2086
  run_suite "pytest (dapr-ext-workflow 1.18.3, durabletask-dapr 0.17.4, example)" \
    "$ROOT/.venv/bin/python" -m pytest -c tests/python/pytest.ini --rootdir tests/python \
      tests/python examples/task-processing ${PYTEST_ARGS:-}
  # The same SDK suite with every `weft dev` on PostgreSQL (a throwaway server from the local
  # binaries; see tests/python/pg.py). test_postgres.py starts its own server, so it runs once above;
  # the dashboard's browser tests run once too (the pages read the same API on either store).
  # shellcheck disable=SC2086
  run_suite "pytest on PostgreSQL (dapr-ext-workflow 1.18.3, durabletask-dapr 0.17.4)" \
    env WEFT_TEST_BACKEND=postgres "$ROOT/.venv/bin/python" -m pytest -c tests/python/pytest.ini \
      --rootdir tests/python tests/python --ignore=tests/python/v119 \
      --ignore=tests/python/test_postgres.py --ignore=tests/python/test_dashboard.py ${PYTEST_ARGS:-}
  # The cluster acceptance suite: 3 placement nodes + sidecars on PostgreSQL + HAProxy as processes,
  # started by crates/weft-testkit's weft-cluster; its own conftest (like v119).
  # Every test of it runs by default, the fault tests included (SIGKILL of a sidecar in direct and
  # shared mode, scale 1-3-1, SIGKILL of the placement leader): about 4 minutes.
  CLUSTER_TESTS=(tests/python/cluster)
  # shellcheck disable=SC2086
  run_suite "pytest cluster (placement + sidecars + HAProxy, dapr-ext-workflow 1.18.3)" \
    env WEFT_CLUSTER_BIN="${WEFT_CLUSTER_BIN:-$ROOT/target/debug/weft-cluster}" \
      "$ROOT/.venv/bin/python" -m pytest -c tests/python/pytest.ini --rootdir tests/python \
      --confcutdir tests/python/cluster "${CLUSTER_TESTS[@]}" ${PYTEST_ARGS:-}
  # shellcheck disable=SC2086
  run_suite "pytest (dapr 1.19.0)" \
    "$ROOT/.venv119/bin/python" -m pytest -c tests/python/pytest.ini --rootdir tests/python \
      --confcutdir tests/python/v119 tests/python/v119 ${PYTEST_ARGS:-}
fi

# ------------------------------------------------------------------------------- Helm chart
ensure_haproxy() {  # idempotent (the cluster tests' step installs it the same way; either may run first)
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] && return 0
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    log "installing haproxy (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy; } \
      || die "apt-get install haproxy failed"
  else
    die "haproxy is required by tests/chart/test_rendered.py (HAProxy stands in for the sidecar Service): apt-get install haproxy"
  fi
}

if [ "$RUN_PY" = "1" ]; then
  ensure_venv "$ROOT/.venv-chart" "$ROOT/tests/chart/requirements.txt"
  HELM="$("$ROOT/scripts/get-helm.sh")" || die "could not get a helm binary (scripts/get-helm.sh)"
  export HELM
  ensure_haproxy
  run_suite "chart: helm lint, render, Kubernetes schemas, values schema" \
    "$ROOT/.venv-chart/bin/python" -m pytest -c tests/chart/pytest.ini --rootdir tests/chart \
      tests/chart/test_chart.py tests/chart/test_multi_app.py
  # The rendered placement StatefulSet and sidecar Deployment(s) (one app; two apps with the
  # multi-app worker) run as local processes; the SDK
  # comes from .venv, PyYAML (to read the rendered manifests) from .venv-chart.
  run_suite "chart: rendered manifests as processes (dapr-ext-workflow 1.18.3)" \
    env WEFT_CHART_PYTHON="$ROOT/.venv-chart/bin/python" "$ROOT/.venv/bin/python" -m pytest \
      -c tests/chart/pytest.ini --rootdir tests/chart tests/chart/test_rendered.py \
      tests/chart/test_rendered_apps.py
fi

if [ "${#FAILED[@]}" -gt 0 ]; then
  printf '\n\033[1;31mFAILED:\033[0m\n' >&2
  printf '  - %s\n' "${FAILED[@]}" >&2
  exit 1
fi
log "all test suites passed"
