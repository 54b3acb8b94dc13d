"""Ending a move otherwise (xfleet/ops/moves/retire.py) on simulated nodes: `abort` discards a
partial copy (`receive -A`) and the move's snapshots and leaves the source as it was;
`retire` destroys a finished move's source once its hold is released (the lab does the same
with real data: tests/lab/test_moves_real.py)."""

from __future__ import annotations

import pytest
from conftest import run_cli

from unit.ops.moves.conftest import Fleet, killing_relay, node, planned, run_move
from xfleet.ops.moves import runner as move_runner

VOL = "tank/app/db"


def test_abort_discards_the_partial_copy_and_the_moves_snapshots(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    inv, inv_path, t = fleet
    t.write(VOL, 30 << 20)
    m = planned(inv, attempts=1)
    monkeypatch.setattr(move_runner, "relay", killing_relay(1))
    got = run_move(inv, m)
    assert got.state == "failed" and "after 1 attempts" in (got.error or ""), got
    n2 = node(inv, "n2")
    token = n2.run(["zfs", "get", "-H", "-o", "value", "receive_resume_token", VOL]).stdout
    assert token.startswith("1-")  # the partial receive is there
    res = run_cli("-i", str(inv_path), "moves", "abort", str(m.id), "--yes")
    assert res.code == 0, res.err
    assert not n2.run(["zfs", "list", VOL], check=False).ok
    snaps = t.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot", VOL]).stdout.split()
    assert snaps == [f"{VOL}@a", f"{VOL}@b"]
    history = n2.run(["zpool", "history", "tank"]).stdout
    assert f"zfs receive -A {VOL}" in history


def test_retire_destroys_the_held_source_of_a_finished_move(fleet: Fleet) -> None:
    inv, inv_path, t = fleet
    m = run_move(inv, planned(inv))
    assert m.state == "done" and m.retired_as, m
    assert t.run(["zfs", "destroy", "-r", m.retired_as], check=False).stderr == \
        f"cannot destroy snapshot {m.retired_as}@{m.snap('final')}: dataset is busy\n"
    res = run_cli("-i", str(inv_path), "moves", "retire", str(m.id), "--destroy", "--yes")
    assert res.code == 0, res.err
    assert not t.run(["zfs", "list", m.retired_as], check=False).ok
    assert node(inv, "n2").run(["zfs", "list", VOL], check=False).ok
