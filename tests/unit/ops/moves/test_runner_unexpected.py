"""A move that meets an exception xfleet did not expect (not an XfleetError: e.g. the EOFError
paramiko raised when a target rebooted mid-copy) is journaled `failed` with the error's type
and text, stays resumable from the state it failed in, and its state is returned: the caller
(`xfleet move --json`) always has a move to print."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import write_sim_inventory

from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.ops import moves
from xfleet.ops.moves import runner as move_runner
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport


@pytest.fixture
def fleet(tmp_path: Path) -> inventory.Inventory:
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"volumes": 10, "seed": 4},
                                                             "n2": {"volumes": 5, "seed": 5}})
    inv = inventory.load(inv_path)
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    t.run(["zfs", "create", "-p", "tank/app"])
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/app/db"])
    assert sync(inv).ok
    return inv


def test_an_unexpected_exception_fails_the_move_resumably(
        fleet: inventory.Inventory, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    inv = fleet
    conn = mirror.connect(inv.mirror)
    m = moves.create(inv, conn, moves.plan_move(inv, conn, "tank/app/db", "n2"))

    def reset(*args: Any, **kwargs: Any) -> Any:
        raise EOFError("socket write failed")  # what paramiko raised on a reset connection

    monkeypatch.setattr(move_runner, "relay", reset)
    with caplog.at_level(logging.ERROR, logger="xfleet.ops.moves"), \
            Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        got = moves.Runner(inv, inv.mirror, conns).run(m.id)
    assert got.state == "failed", got
    assert got.error is not None and "EOFError: socket write failed" in got.error, got.error
    assert got.options["failed_state"] == "base", got.options  # resume continues there
    log = [e["message"] for e in moves.log(conn, m.id)]
    assert any("failed: internal error: EOFError: socket write failed" in x for x in log), log
    assert "EOFError" in caplog.text  # the traceback, for diagnosis
    row = conn.execute("SELECT pid, control FROM moves WHERE id = ?", (m.id,)).fetchone()
    assert tuple(row) == (None, None)  # released: another process may resume it
    # resumable: a new run goes back to base, and on to the end
    monkeypatch.undo()
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        again = moves.Runner(inv, inv.mirror, conns).run(m.id)
    log = [e["message"] for e in moves.log(conn, m.id)]
    assert any("resuming in base" in x for x in log), log
    assert again.state == "done" and again.verified, again


def test_keyboard_interrupt_is_not_swallowed(
        fleet: inventory.Inventory, monkeypatch: pytest.MonkeyPatch) -> None:
    inv = fleet
    conn = mirror.connect(inv.mirror)
    m = moves.create(inv, conn, moves.plan_move(inv, conn, "tank/app/db", "n2"))

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(move_runner, "relay", interrupted)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns, \
            pytest.raises(KeyboardInterrupt):
        moves.Runner(inv, inv.mirror, conns).run(m.id)
    assert moves.get(conn, m.id).state != "failed"
