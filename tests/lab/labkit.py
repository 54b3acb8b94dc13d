"""Helpers for the lab tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xfleet import zfs
from xfleet.lab import ssh as labssh
from xfleet.lab import target_pkg, up
from xfleet.lab.vm import LabState

ROOT = Path(__file__).resolve().parents[2]
TENANT = "xfleet:tenant"
SSH_PORT = int(os.environ.get("XFLEET_LAB_TEST_SSH_PORT", "2211"))
LINK_PORT = int(os.environ.get("XFLEET_LAB_TEST_LINK_PORT", "12311"))
NODES = 2  # storage nodes of the session lab
CLIENT = "client1"  # the NVMe/TCP initiator VM, booted on first use (Lab.ensure_client)


def log(msg: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class CLIResult:
    code: int
    out: str
    err: str
    seconds: float

    def json(self) -> Any:
        try:
            return json.loads(self.out)
        except json.JSONDecodeError as exc:
            raise AssertionError(
                f"not JSON (exit {self.code}): {self.out[:500]!r}\nstderr: {self.err[-2000:]}"
            ) from exc


@dataclass
class Lab:
    """The running test lab and helpers to drive it as a user would."""

    state: LabState
    inventory: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.state.state_dir

    def run(self, node: str, argv: Sequence[str], *, check: bool = True,
            input: str | bytes | None = None, timeout: float = 600) -> labssh.Result:
        return labssh.run(self.state.endpoint(node), argv, check=check, input=input,
                          timeout=timeout)

    def xfleet(self, *args: str, inventory: Path | None = None, mirror: Path,
               timeout: float = 600) -> CLIResult:
        """`python -m xfleet --inventory INV --mirror DB ARGS...` in a subprocess."""
        argv = [sys.executable, "-m", "xfleet", "--inventory", str(inventory or self.inventory),
                "--mirror", str(mirror), *args]
        env = {**os.environ, "COLUMNS": "200"}
        env.pop("XFLEET_INVENTORY", None)
        env.pop("XFLEET_MIRROR", None)
        t = time.monotonic()
        p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env,
                           timeout=timeout, check=False)
        return CLIResult(p.returncode, p.stdout, p.stderr, time.monotonic() - t)

    def popen_xfleet(self, *args: str, mirror: Path,
                     inventory: Path | None = None) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "xfleet", "--inventory", str(inventory or self.inventory),
                "--mirror", str(mirror), *args]
        env = {**os.environ, "COLUMNS": "200"}
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT, env=env)

    @contextmanager
    def running_xfleet(self, *args: str, mirror: Path,
                       inventory: Path | None = None) -> Iterator[subprocess.Popen[str]]:
        """`popen_xfleet` for a `with` block: the process is killed on the way out if it is
        still running (an assertion that fails mid-test leaves no xfleet behind)."""
        proc = self.popen_xfleet(*args, mirror=mirror, inventory=inventory)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()  # reaps it and closes the pipes (harmless if done already)

    def write_random(self, node: str, volume: str, mb: int, *, seek_mb: int = 0) -> None:
        """Write `mb` MiB of random data into zvol `volume` at `seek_mb` (direct I/O)."""
        self.run(node, ["sh", "-c", 'dd if=/dev/urandom of="/dev/zvol/$1" bs=1M count="$2" '
                        'seek="$3" oflag=direct conv=notrunc status=none', "sh", volume,
                        str(mb), str(seek_mb)])

    def zfs_list(self, node: str) -> list[tuple[Any, ...]]:
        """What the node itself reports: `zfs list -Hp -t all -o COLUMNS,xfleet:tenant`,
        typed by xfleet's own parser, as sorted (COLUMNS..., tenant) tuples."""
        out = self.run(node, zfs.zfs_list(user_properties=[TENANT])).stdout
        rows = [zfs.parse_dataset_line(line, zfs.DATASET_COLUMNS, [TENANT])
                for line in out.splitlines() if line.strip()]
        return sorted(rows, key=lambda r: str(r[0]))

    def ensure_up(self) -> None:
        """Restart nodes that were killed (by a fault test); no-op when all are running. A
        running client stays (and is kept in the inventory): `up` never drops one."""
        t = time.monotonic()
        self.state = up(NODES, self.inventory, state_dir=self.state_dir, ssh_port=SSH_PORT,
                        link_port=LINK_PORT, progress=log)
        self.timings.setdefault("ensure_up", 0.0)
        self.timings["ensure_up"] += time.monotonic() - t

    def ensure_client(self) -> str:
        """Boot the client VM `client1` (an NVMe/TCP initiator, no pool) if it is not running,
        without touching the storage nodes (lab1 keeps a spare private link for it); it is
        written into the inventory under `all: initiators:`. Returns its name."""
        t = time.monotonic()
        self.state = up(NODES, self.inventory, state_dir=self.state_dir, ssh_port=SSH_PORT,
                        link_port=LINK_PORT, clients=1, progress=log)
        self.timings.setdefault("client_up", 0.0)
        self.timings["client_up"] += time.monotonic() - t
        return CLIENT

    def install_target(self, node: str, packages: dict[str, target_pkg.Package],
                       version: str = "1.0") -> None:
        """Copy the lab target packages to `node`, install `version` and wait until it is
        ready (xfleet.lab.target_pkg.install)."""
        target_pkg.install(self.state, node, packages, version)

    def remove_target(self, node: str) -> None:
        """Stop and purge the lab target on `node` (best effort, for clean-up)."""
        target_pkg.uninstall(self.state, node)


def mirror_rows(db: Path, node: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            f"SELECT {', '.join(zfs.DATASET_COLUMNS)}, tenant FROM datasets WHERE node = ?",
            (node,),
        ).fetchall()
    finally:
        conn.close()
    return sorted(rows, key=lambda r: str(r[0]))
