#!/usr/bin/env bash
# DBOS Transact ten-step chain benchmark: venv + throwaway PostgreSQL (fsync on) + chain.py.
# Usage: crates/weft-bench/peers/dbos/run.sh [chain.py args...]
# Env: SCRATCH (default ${TMPDIR:-/tmp}/dbos-bench), PYTHON (default python3),
#      DBOS_VERSION (default 3.4.0), STORES ("postgres sqlite" by default).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SCRATCH="${SCRATCH:-${TMPDIR:-/tmp}/dbos-bench}"
PYTHON="${PYTHON:-python3}"
DBOS_VERSION="${DBOS_VERSION:-3.4.0}"
STORES="${STORES:-postgres sqlite}"
mkdir -p "$SCRATCH"

VENV="$SCRATCH/venv"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import dbos, importlib.metadata as m, sys; sys.exit(m.version('dbos') != '$DBOS_VERSION')" 2>/dev/null; then
  "$VENV/bin/pip" install -q "dbos==$DBOS_VERSION"
fi

# PostgreSQL binaries: on PATH, else the newest /usr/lib/postgresql/*/bin.
if ! command -v initdb >/dev/null; then
  PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -n "$PGBIN" ] || { echo "initdb/pg_ctl not found" >&2; exit 1; }
  export PATH="$PGBIN:$PATH"
fi
AS=()
if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); fi

PGDIR="$(mktemp -d "$SCRATCH/pg.XXXXXX")"
[ ${#AS[@]} -eq 0 ] || chown postgres: "$PGDIR"
PGDATA="$PGDIR/data"
cleanup() {
  "${AS[@]}" pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PGDIR"
}
trap cleanup EXIT INT TERM

"${AS[@]}" initdb -D "$PGDATA" -A trust -U postgres -E UTF8 --locale=C --no-instructions >/dev/null
PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# Same durable settings as Weft's benchmark server (crates/weft-bench/src/pg.rs).
OPTS="-p $PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PGDIR \
 -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c wal_sync_method=fdatasync \
 -c shared_buffers=256MB -c max_connections=100"
"${AS[@]}" pg_ctl -D "$PGDATA" -l "$PGDIR/server.log" -w -t 60 -o "$OPTS" start >/dev/null
echo "throwaway PostgreSQL on 127.0.0.1:$PORT (fsync=on, synchronous_commit=on)"

for store in $STORES; do
  case "$store" in
    postgres) URL="postgresql://postgres@127.0.0.1:$PORT/dbos_bench" ;;
    sqlite)   rm -f "$SCRATCH/dbos_bench.sqlite"*; URL="sqlite:///$SCRATCH/dbos_bench.sqlite" ;;
    *) echo "unknown store $store" >&2; exit 2 ;;
  esac
  "$VENV/bin/python" "$HERE/chain.py" --system-database-url "$URL" "$@"
done
