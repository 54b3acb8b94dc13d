"""Shared fixtures: small simulated fleets and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pgserver import PgServer
from sshd import SSHD

from xfleet.core.errors import InventoryError
from xfleet.fleet import inventory

ROOT = Path(__file__).resolve().parent.parent  # the repository
FIXTURES = ROOT / "tests" / "fixtures"
T = TypeVar("T")

# How long a test waits for something it expects to happen soon (a process to end, a line to
# arrive, a thread to finish). Generous on purpose: it only bounds a hang; a passing test goes
# on as soon as the awaited state is seen, so a loaded machine makes it slower, never red.
PATIENCE = 60.0


def wait_for(cond: Callable[[], T], what: str, timeout: float = PATIENCE,
             interval: float = 0.02) -> T:
    """Poll `cond` until it returns something true, and return that. Fails, naming `what`, if
    it has not within `timeout` seconds. Tests wait on observable state with this, never with
    a bare sleep."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return value


def finishes(fn: Callable[[], T], what: str, timeout: float = PATIENCE) -> T:
    """fn() run in a daemon thread; its result (or its exception) once it returned. Fails,
    naming `what`, if it has not returned within `timeout` seconds: for calls that must not
    wait for something that never comes (a test asserting that does not hang instead)."""
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(fn())
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    th = threading.Thread(target=run, name=f"finishes: {what}", daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise AssertionError(f"{what}: still not done after {timeout:g} s")
    if errors:
        raise errors[0]
    return results[0]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
    e = {**os.environ, "COLUMNS": "200", **(env or {})}
    e.pop("XFLEET_INVENTORY", None)
    e.pop("XFLEET_MIRROR", None)
    p = subprocess.run([sys.executable, "-m", "xfleet", *args], capture_output=True, text=True,
                       cwd=cwd or ROOT, env=e, timeout=300)
    return Result(p.returncode, p.stdout, p.stderr)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHD]:
    """A real OpenSSH server on loopback (tests/sshd.py), shared by the session's SSH tests."""
    server = SSHD(tmp_path_factory.mktemp("sshd")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """A real PostgreSQL server (tests/pgserver.py), one per test process, stopped by PID."""
    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()


# The mirror's engines: a test that takes `mirror_at` runs on each (its own empty mirror).
ENGINES = ("sqlite", "postgresql")


@pytest.fixture(params=ENGINES)
def mirror_at(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where this test's mirror is: an SQLite file in tmp_path, or a new PostgreSQL database
    (a URL, for --mirror, XFLEET_MIRROR or mirror.connect)."""
    if request.param == "sqlite":
        return str(tmp_path / "mirror.db")
    server: PgServer = request.getfixturevalue("pg")
    return server.database()


@pytest.fixture
def cli() -> Callable[..., Result]:
    return run_cli


def write_sim_inventory(path: Path, nodes: dict[str, dict[str, Any]], extra: str = "") -> Path:
    """An inventory of sim nodes: {name: {"seed": 1, "volumes": 100, ...}}."""
    lines = ["all:", "  vars:", "    mirror: mirror.db", "    state_dir: state", "    kind: sim",
             extra.rstrip() if extra else "", "  hosts:"]
    for name, sim in nodes.items():
        kv = ", ".join(f"{k}: {v}" for k, v in sim.items())
        lines += [f"    {name}:", f"      sim: {{{kv}}}", "      labels: {zone: " +
                  ("a" if name.endswith(("1", "2")) else "b") + "}"]
    path.write_text("\n".join(line for line in lines if line) + "\n")
    return path


@pytest.fixture
def sim_fleet(tmp_path: Path) -> Path:
    """Two small sim nodes; returns the inventory path (mirror is tmp_path/mirror.db)."""
    return write_sim_inventory(
        tmp_path / "fleet.yaml",
        {"n1": {"seed": 1, "volumes": 300}, "n2": {"seed": 2, "volumes": 200}},
    )


# ---------------------------------------------------------------------------------------------
# inventory files and their errors (tests/test_inventory*.py)


def write(tmp_path: Path, text: str, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    """The 1-based line of the nth line of `path` containing `needle`."""
    hits = [i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} not in {path}"
    return hits[nth - 1]


def load_error(path: Path) -> InventoryError:
    with pytest.raises(InventoryError) as exc:
        inventory.load(path)
    return exc.value


def assert_error(err: InventoryError, path: Path, line: int, *words: str) -> None:
    """The error names `path:line` and says every one of `words`."""
    assert err.where == f"{path}:{line}", str(err)
    text = str(err)
    for w in words:
        assert w in text, f"{w!r} not in {text!r}"

