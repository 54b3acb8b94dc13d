"""Access control at scale on the simulator (docs/access.md, "Scale"): attaching every
volume of a node, auditing it and detaching every volume cost the same remote commands on a
node of 200 exports and of 100,000 (three per batch, one per audit)."""

from __future__ import annotations

import time
from pathlib import Path

from xfleet.ops.access import attach
from xfleet.ops.access.attach import Request
from xfleet.ops.access.audit import audit

from .conftest import make_fleet


def rounds(tmp_path: Path, volumes: int) -> tuple[list[int], dict[str, int], float]:
    """Attach every volume of n1 (one batch), audit, detach every one, audit: the remote
    commands of each step, the last audit's counts and the attach batch's seconds."""
    tmp_path.mkdir()
    fleets = make_fleet(tmp_path, {"n1": {"seed": 3, "volumes": volumes}})
    f = next(fleets)
    try:
        vols = list(f.exports())
        assert len(vols) == volumes
        reqs = [Request(v, f"db{i % 3 + 1}") for i, v in enumerate(vols)]
        out: list[int] = []
        n = f.conns.commands("n1")
        start = time.perf_counter()
        attached = attach.change(f.inv, f.where, f.conns, "attach", reqs)
        took = time.perf_counter() - start
        assert attached.ok and attached.counts()["ok"] == volumes
        out.append(f.conns.commands("n1") - n)
        n = f.conns.commands("n1")
        first = audit(f.inv, f.where, f.conns)
        assert first.clean, first.counts()
        out.append(f.conns.commands("n1") - n)
        n = f.conns.commands("n1")
        assert attach.change(f.inv, f.where, f.conns, "detach", reqs).ok
        out.append(f.conns.commands("n1") - n)
        n = f.conns.commands("n1")
        last = audit(f.inv, f.where, f.conns)
        out.append(f.conns.commands("n1") - n)
        assert all(not a and not h for _, a, h in f.exports().values())  # closed, not open
        return out, last.counts(), took
    finally:
        fleets.close()


def test_attach_audit_detach_cost_the_same_commands_at_100k_exports(tmp_path: Path) -> None:
    small, small_counts, _ = rounds(tmp_path / "small", 200)
    big, big_counts, took = rounds(tmp_path / "big", 100_000)
    assert small == big == [3, 1, 3, 1], (small, big)
    assert small_counts == big_counts == {k: 0 for k in small_counts}  # closed, no drift
    print(f"\n  remote commands (attach all, audit, detach all, audit): {small} at 200 "
          f"exports, {big} at 100,000 (attaching 100,000 volumes: {took:.1f} s)")
