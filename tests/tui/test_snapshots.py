"""SVG snapshots of every screen (pytest-textual-snapshot), stable from run to run.

Stable because: the fleet is the seeded sim fleet of conftest.py; the mirror's sync times
(`synced_at`, `last_success`, `sync_runs`) are rewritten to a fixed instant; the app's clock is
frozen 13 s after it (so "13s ago" and the AGE column never move); the prompt's cursor does not
blink; polling is off; the terminal is 130x32; every screenshot waits for the workers.

Regenerate after a deliberate change of the screens with
`pytest tests/tui/test_snapshots.py --snapshot-update`, and look at the SVGs before committing.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.sim import DEFAULT_NOW
from xfleet.tui.app import XfleetApp
from xfleet.tui.views import DetailView

from .conftest import settle

SIZE = (130, 32)
SYNCED_AT = DEFAULT_NOW + 3600.0  # the sim fleet's "now" (2026-05-01 00:00 UTC) + 1 h
NOW = SYNCED_AT + 13  # the frozen clock: the mirror is 13 s old


@pytest.fixture(scope="module")
def frozen_fleet(fleet_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TUI test fleet with every real-time stamp of the sync replaced by SYNCED_AT."""
    d = tmp_path_factory.mktemp("tui-snap")
    for f in ("mirror.db", "fleet.yaml"):
        shutil.copy(fleet_master / f, d / f)
    conn = mirror.connect(d / "mirror.db")
    with mirror.transaction(conn, "frozen stamps"):
        conn.execute("UPDATE nodes SET last_success = ?, last_attempt = ?",
                     (SYNCED_AT, SYNCED_AT))
        conn.execute("UPDATE datasets SET synced_at = ?", (SYNCED_AT,))
        conn.execute("UPDATE pools SET synced_at = ?", (SYNCED_AT,))
        conn.execute("UPDATE sync_runs SET started_at = ?, finished_at = ?",
                     (SYNCED_AT - 1, SYNCED_AT))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return d


def make(fleet: Path, **kw: Any) -> XfleetApp:
    return XfleetApp(fleet / "mirror.db", inventory=inventory.load(fleet / "fleet.yaml"),
                     poll_seconds=0, clock=lambda: NOW, cursor_blink=False, **kw)


def keys(*press: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    """A run_before for snap_compare: settle, press the keys (one at a time), settle."""

    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        if press:
            await pilot.press(*press)
            await settle(pilot)

    return run


Snap = Callable[..., bool]


def test_fleet(snap_compare: Snap, frozen_fleet: Path) -> None:
    assert snap_compare(make(frozen_fleet), terminal_size=SIZE, run_before=keys())


def test_volumes(snap_compare: Snap, frozen_fleet: Path) -> None:
    assert snap_compare(make(frozen_fleet, start="vols"), terminal_size=SIZE,
                        run_before=keys())


def test_volumes_filtered_and_sorted(snap_compare: Snap, frozen_fleet: Path) -> None:
    assert snap_compare(make(frozen_fleet, start="vols"), terminal_size=SIZE,
                        run_before=keys("slash", *"used>10G", "space", *"type=volume", "enter",
                                        "U"))


def test_detail_with_tree(snap_compare: Snap, frozen_fleet: Path) -> None:
    # a volume on n1 with snapshots, one of which has a clone (the first such, by name)
    conn = mirror.connect(frozen_fleet / "mirror.db", readonly=True)
    origin = conn.execute(
        "SELECT min(origin) FROM datasets WHERE node = 'n1' AND origin IS NOT NULL"
    ).fetchone()[0]
    conn.close()
    assert origin and "@" in origin
    volume = origin.split("@")[0]

    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        pilot.app.push_screen(DetailView("n1", volume))
        await settle(pilot)

    assert snap_compare(make(frozen_fleet, start="vols"), terminal_size=SIZE, run_before=run)


def test_operations_empty(snap_compare: Snap, frozen_fleet: Path) -> None:
    assert snap_compare(make(frozen_fleet, start="ops"), terminal_size=SIZE,
                        run_before=keys())


def test_compression(snap_compare: Snap, frozen_fleet: Path) -> None:
    assert snap_compare(make(frozen_fleet, start="comp"), terminal_size=SIZE,
                        run_before=keys())


def test_help(snap_compare: Snap, frozen_fleet: Path) -> None:
    assert snap_compare(make(frozen_fleet), terminal_size=SIZE,
                        run_before=keys("question_mark"))


def test_command_prompt(snap_compare: Snap, frozen_fleet: Path) -> None:
    assert snap_compare(make(frozen_fleet), terminal_size=SIZE,
                        run_before=keys("colon", *"vol"))


def test_read_only_refusal(snap_compare: Snap, frozen_fleet: Path) -> None:
    assert snap_compare(make(frozen_fleet, start="vols"), terminal_size=SIZE,
                        run_before=keys("m"))
