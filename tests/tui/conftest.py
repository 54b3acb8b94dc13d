"""Fixtures for the TUI tests: a small deterministic sim fleet mirror, and screen text."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ENGINES, write_sim_inventory  # tests/conftest.py (on sys.path)
from pgserver import PgServer
from rich.console import Console
from textual.app import App
from textual.pilot import Pilot

from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.mirror.backend import Connection
from xfleet.ops import sync


@pytest.fixture(scope="session")
def fleet_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tui-fleet")
    inv = write_sim_inventory(d / "fleet.yaml", {"n1": {"seed": 1, "volumes": 120},
                                                 "n2": {"seed": 2, "volumes": 80}},
                              extra="    environment: {name: prod-eu, colour: red}")
    report = sync.sync(inventory.load(inv))
    assert all(n.ok for n in report.nodes)
    conn = mirror.connect(d / "mirror.db")
    conn.execute("UPDATE nodes SET stale = 1, last_error = 'ssh: timed out' WHERE name = 'n2'")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return d


@pytest.fixture(scope="session")
def pg_fleet_master(fleet_master: Path, pg: PgServer) -> str:
    """The same fleet synced into a PostgreSQL database: the template each test copies."""
    url = pg.database("tuifleet")
    report = sync.sync(inventory.load(fleet_master / "fleet.yaml"), url)
    assert all(n.ok for n in report.nodes), report.to_dict()
    conn = mirror.connect(url)
    try:
        with mirror.transaction(conn, "a stale node"):
            conn.execute("UPDATE nodes SET stale = 1, last_error = 'ssh: timed out' "
                         "WHERE name = 'n2'")
    finally:
        conn.close()
    return url.split("?")[0].rsplit("/", 1)[1]  # the database's name


_copies = itertools.count(1)


@pytest.fixture(params=ENGINES)
def fleet_at(request: pytest.FixtureRequest, fleet: Path) -> tuple[Path, str]:
    """The fleet on each engine: (its directory, with fleet.yaml; the mirror: the copy of
    mirror.db there, or a new PostgreSQL database copied from pg_fleet_master)."""
    if request.param == "sqlite":
        return fleet, str(fleet / "mirror.db")
    server: PgServer = request.getfixturevalue("pg")
    template = request.getfixturevalue("pg_fleet_master")
    name = f"tuicopy{os.getpid()}_{next(_copies)}"
    server.psql(f"CREATE DATABASE {name} TEMPLATE {template}")
    return fleet, server.url(name)


@pytest.fixture
def sql_at(fleet_at: tuple[Path, str]) -> Iterator[Connection]:
    """A read-only connection to the mirror of `fleet_at`."""
    conn = mirror.connect(fleet_at[1], readonly=True)
    yield conn
    conn.close()


@pytest.fixture
def fleet(fleet_master: Path, tmp_path: Path) -> Path:
    """A private copy (tests may write to it); returns the directory (mirror.db, fleet.yaml)."""
    for f in ("mirror.db", "fleet.yaml"):
        shutil.copy(fleet_master / f, tmp_path / f)
    (tmp_path / "fleet.yaml").write_text((fleet_master / "fleet.yaml").read_text())
    return tmp_path


def screen_text(app: App[None]) -> str:
    """What a person would see: the current screen as plain text."""
    update = app.screen._compositor.render_update(full=True)
    console = Console(width=app.size.width, file=io.StringIO(), record=True,
                      color_system=None, legacy_windows=False)
    console.print(update)
    return console.export_text()


async def settle(pilot: Pilot[None]) -> None:
    """Let workers (re-reads, counts, stats) finish and the screen redraw."""
    app = pilot.app
    for _ in range(3):
        await pilot.pause()
        await app.workers.wait_for_complete()
        await asyncio.sleep(0.01)
    await pilot.pause()


async def until(pilot: Pilot[None], cond: Callable[[], bool], what: str,
                timeout: float = 60.0) -> None:
    """Settle until `cond()` holds (a loaded machine may need more rounds than `settle`
    gives): the wait is on the app's state, and a timeout says what never happened."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await settle(pilot)


@pytest.fixture
def sql(fleet: Path) -> Iterator[Connection]:
    conn = mirror.connect(fleet / "mirror.db", readonly=True)
    yield conn
    conn.close()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run `async def` tests in this directory on a fresh event loop (no plugin needed)."""
    if asyncio.iscoroutinefunction(pyfuncitem.obj):
        args = {k: pyfuncitem.funcargs[k] for k in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**args))
        return True
    return None
