"""Replica status from the mirror (xfleet/ops/replicate/status.py): the summary per policy and
destination counts never-sent, failed and over-RPO replicas and the largest lag; promoted
replicas are primaries and left out; the most behind come first, never-sent first of all."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from unit.ops.replicate.test_journal import _add
from xfleet import mirror
from xfleet.ops.replicate.status import behind, summary


def test_summary_and_the_most_behind(tmp_path: Path) -> None:
    conn = mirror.connect(tmp_path / "mirror.db")
    now = time.time()
    ok = _add(conn, "tank/ok", as_of=now - 60, rpo=3600)
    late = _add(conn, "tank/late", as_of=now - 7200, rpo=3600)
    never = _add(conn, "tank/never", state="new")
    failed = _add(conn, "tank/failed", as_of=now - 120, state="failed")
    _add(conn, "tank/dr", "n3", as_of=now - 10, rpo=86400, policy="db")
    promoted = _add(conn, "tank/was", as_of=now - 99999, state="promoted")
    rows = summary(conn, now)
    assert [(r["policy"], r["target_node"], r["replicas"], r["never"], r["failed"],
             r["over_rpo"], r["rpo"]) for r in rows] == [
        ("db", "n2", 4, 1, 1, 2, 3600), ("db", "n3", 1, 0, 0, 0, 86400)]
    assert rows[0]["max_lag"] == pytest.approx(7200, abs=5)
    order = [r.id for r in behind(conn, now, limit=3)]
    assert order == [never, late, failed]
    everything = [r.id for r in behind(conn, now, limit=None, include_promoted=True)]
    assert everything[:2] == [never, promoted] and ok in everything
