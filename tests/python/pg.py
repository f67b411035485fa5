"""Throwaway PostgreSQL for the SDK suites, from the local server binaries (no Docker).

`WEFT_TEST_BACKEND=postgres` makes every `weft dev` the harness starts use PostgreSQL
(`--database-url`) instead of SQLite: one server per pytest session, one database per data dir (so a
restart on the same data dir finds its state again). `WEFT_TEST_DATABASE_URL` points at a server of
your own instead (databases are created in it). Under CI=true a missing PostgreSQL is a failure.
"""

from __future__ import annotations

import atexit
import glob
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

_lock = threading.Lock()
_server: Optional["PgServer"] = None


def enabled() -> bool:
    return os.environ.get("WEFT_TEST_BACKEND", "").lower() in ("postgres", "postgresql", "pg")


def _bin_dir() -> Optional[Path]:
    if os.environ.get("WEFT_TEST_PG_BIN_DIR"):
        return Path(os.environ["WEFT_TEST_PG_BIN_DIR"])
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """A private PostgreSQL cluster in a temp dir, run as the `postgres` user when we are root."""

    def __init__(self) -> None:
        bins = _bin_dir()
        if bins is None or not (bins / "initdb").exists():
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; "
                               "install PostgreSQL or set WEFT_TEST_PG_BIN_DIR / WEFT_TEST_DATABASE_URL")
        self.bins = bins
        self.root = Path(tempfile.mkdtemp(prefix="weft-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.sock.mkdir()
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run("initdb", "-A", "trust", "--no-sync", "-U", "postgres", "-D", str(self.data))
        self.start()

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bins / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} "
                f"-c unix_socket_directories={self.sock} -c max_connections=300")
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        """Crash-restart: connections are cut, committed data survives."""
        self.stop("immediate")
        self.start()

    def url(self, db: str = "postgres") -> str:
        return f"postgres://postgres:weft-test-secret@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class ExternalPg:
    """A server of the user's own (`WEFT_TEST_DATABASE_URL`); databases are created in it."""

    def __init__(self, url: str) -> None:
        self.base = url

    def url(self, db: str) -> str:
        p = urlsplit(self.base)
        return urlunsplit((p.scheme, p.netloc, "/" + db, p.query, p.fragment))

    def create_database(self, name: str) -> str:
        createdb = shutil.which("createdb") or str((_bin_dir() or Path("/usr/bin")) / "createdb")
        subprocess.run([createdb, f"--maintenance-db={self.base}", name], check=True,
                       capture_output=True, text=True, timeout=60)
        return self.url(name)

    def close(self) -> None:
        pass


def server():
    """The session's PostgreSQL (started on first use, stopped at exit)."""
    global _server
    with _lock:
        if _server is None:
            if os.environ.get("WEFT_TEST_DATABASE_URL"):
                _server = ExternalPg(os.environ["WEFT_TEST_DATABASE_URL"])
            else:
                _server = PgServer()
            atexit.register(_server.close)
        return _server


def database_for(data_dir: Path) -> str:
    """The database URL belonging to a `weft dev` data dir (created on first use)."""
    data_dir = Path(data_dir)
    marker = data_dir / ".weft-test-database"
    if marker.exists():
        return marker.read_text().strip()
    name = "w_" + hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:20]
    url = server().create_database(name)
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(url)
    return url
