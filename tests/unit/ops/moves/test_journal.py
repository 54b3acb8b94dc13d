"""A move as the mirror records it: create, list, one active move per volume, its ETA."""

from __future__ import annotations

import pytest

from unit.ops.moves.conftest import Fleet
from xfleet import mirror
from xfleet.ops import moves


def test_journal_create_list_and_single_active_move(fleet: Fleet) -> None:
    inv, _, _ = fleet
    conn = mirror.connect(inv.mirror)
    p = moves.plan_move(inv, conn, "tank/app/db", "n2")
    m = moves.create(inv, conn, p, {"verify": "full"})
    assert m.state == "planned" and m.verify == "full" and m.options["max_rounds"] == 5
    assert [x.id for x in moves.listing(conn, active_only=True)] == [m.id]
    assert "planned" in moves.log(conn, m.id)[0]["message"]
    with pytest.raises(moves.MoveError) as exc:
        moves.plan_move(inv, conn, "tank/app/db", "n2")
    assert f"already has move {m.id}" in exc.value.message


def test_eta_from_rate_and_estimate_never_past_the_end() -> None:
    m = moves.Move(1, "tank/v", "a", "b", "tank/v", "base", bytes_total=1000, bytes_done=400,
                   rate=100.0)
    assert m.eta == 6.0 and m.progress == 0.4
    m.bytes_done = 1500  # an estimate that was low: never above 100 %, never negative
    assert m.progress == 1.0 and m.eta == 0.0
    m.state = "verify"
    assert m.eta is None
    assert "eta" in m.to_dict()
