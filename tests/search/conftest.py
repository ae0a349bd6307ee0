"""A real PostgreSQL server for the tests that share a study between drivers: Debian's ``postgresql`` binaries,
a fresh cluster in a temporary folder, listening on 127.0.0.1 at a free port, password authentication (so the
tests can check the password never leaks). Skipped where the binaries or psycopg are missing; CI has both."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

PASSWORD = "Pw-9f3b71c2e8a4-never-on-disk"


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    bindir: Path
    data: Path
    port: int
    user: str | None  # the system user the server runs as (None: this one)

    password: str = PASSWORD

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.data.parent}"
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.data.parent / "log"),
               "-w", *args]
        subprocess.run(_as(self.user, cmd), check=True, capture_output=True, timeout=60)


def _as(user: str | None, cmd: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


@pytest.fixture(scope="module")
def postgres():
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (Debian package postgresql)")
    pytest.importorskip("psycopg")  # what SQLAlchemy 2.1 uses for postgresql://
    user = "postgres" if os.geteuid() == 0 else None  # initdb refuses to run as root
    base = Path(tempfile.mkdtemp(prefix="autoprune-pg-"))
    base.chmod(0o755)
    (base / "pw").write_text(PASSWORD + "\n")
    if user:
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
        os.chown(base / "pw", entry.pw_uid, entry.pw_gid)
    data = base / "data"
    subprocess.run(_as(user, [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                              "--auth-host=scram-sha-256", f"--pwfile={base / 'pw'}"]),
                   check=True, capture_output=True, timeout=120)
    (base / "pw").unlink()
    server = PgServer(bindir, data, _free_port(), user)
    server.ctl("start")
    try:
        yield server
    finally:
        try:
            server.ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(base, ignore_errors=True)
