"""A real PostgreSQL server for the tests (Debian's `postgresql` package): initdb in a temporary
directory, a unix socket there and a random loopback port, stopped by PID at the end; and by
a watcher process when the test process that started it dies without stopping it (SIGKILL, a
timeout, Ctrl-C through xdist): the watcher holds the read end of a pipe whose write end only
the test process has, and its end-of-file stops the server by PID and removes its files.

As root the server runs as the `postgres` user (initdb refuses root). Local connections are
trusted (the tests' own server); loopback TCP asks for a password (scram-sha-256), so a test
can prove that libpq finds it in a PGPASSFILE and that xfleet never shows it.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is missing: `make deps-test` installs Debian's "
                           "postgresql package")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL server; `database()` gives each test its own database."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="xfleet-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.pid: int | None = None
        self._watcher: subprocess.Popen[bytes] | None = None
        self._n = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def log(self) -> Path:
        return self.dir / "server.log"

    def _run(self, *argv: str) -> None:
        res = subprocess.run([*self._as, *argv], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()}"
                               f"\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no server log)"
        return "server log:\n" + "\n".join(text)

    def start(self) -> PgServer:
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                  "--locale", "C", "--no-sync", "-A", "trust")
        hba = self.data / "pg_hba.conf"
        hba.write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        options = (f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200")
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
                  "-w", "-t", "60", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        self._watch()
        return self

    def _watch(self) -> None:
        """Start the watcher: it waits for end-of-file on its stdin (our pipe closes when this
        process exits, however it ends), then stops the server by PID, if it is still this
        server, and removes its directory."""
        code = (
            "import os, shutil, signal, sys, time\n"
            "pid, top = int(sys.argv[1]), sys.argv[2]\n"
            "sys.stdin.buffer.read()\n"
            "def ours():\n"
            "    try:\n"
            "        return top.encode() in open(f'/proc/{pid}/cmdline', 'rb').read()\n"
            "    except OSError:\n"
            "        return False\n"
            "if ours():\n"
            "    os.kill(pid, signal.SIGINT)\n"
            "    end = time.monotonic() + 30\n"
            "    while ours() and time.monotonic() < end:\n"
            "        time.sleep(0.1)\n"
            "    if ours():\n"
            "        os.kill(pid, signal.SIGKILL)\n"
            "shutil.rmtree(top, ignore_errors=True)\n")
        self._watcher = subprocess.Popen(
            [sys.executable, "-c", code, str(self.pid), str(self.dir)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)  # not killed with the test's process group

    def stop(self) -> None:
        """Stop the server by its PID (fast shutdown, then SIGKILL), and remove its files."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _alive(self.pid):
                time.sleep(0.05)
            if _alive(self.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)
        watcher = self._watcher
        if watcher is not None:  # its work is done: let it end
            assert watcher.stdin is not None
            watcher.stdin.close()
            watcher.wait(timeout=60)
            self._watcher = None

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        """A URL over the unix socket (trusted)."""
        return f"postgresql://{user}@/{database}?host={self.dir}&port={self.port}"

    def tcp_url(self, database: str, user: str) -> str:
        """A URL over loopback TCP (a password is needed: from PGPASSFILE)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        res = subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.dir),
             "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql],
            capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"psql -c {sql!r} exited {res.returncode}: {res.stderr.strip()}"
                               f"\n{self.log_tail()}")
        return res.stdout.strip()

    def database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL."""
        return self.url(self.new_database(prefix))

    def new_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its name."""
        name = f"{prefix}{os.getpid()}_{next(self._n)}"
        self.psql(f"CREATE DATABASE {name}")
        return name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True
