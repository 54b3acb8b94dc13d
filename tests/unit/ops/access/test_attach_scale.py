"""Access control at scale on the simulator (docs/access.md, "Scale"): an attach batch, an
audit, a detach batch and an audit cost the same remote commands (three per batch, one per
audit) on a node of 200 exports with a batch of all 200 volumes as on a node of 100,000
exports with a batch of 10,000: they grow neither with the node nor with the batch."""

from __future__ import annotations

import time
from pathlib import Path

from xfleet import mirror
from xfleet.ops.access import attach
from xfleet.ops.access.attach import Request
from xfleet.ops.access.audit import audit

from .conftest import make_fleet


def rounds(tmp_path: Path, volumes: int, batch: int
           ) -> tuple[list[int], dict[str, int], float]:
    """Attach `batch` volumes of n1 (one batch), audit, detach them (one batch), audit: the
    remote commands of each step, the last audit's counts and the attach batch's seconds."""
    tmp_path.mkdir()
    fleets = make_fleet(tmp_path, {"n1": {"seed": 3, "volumes": volumes}})
    f = next(fleets)
    try:
        conn = mirror.connect(f.where, readonly=True)
        vols = [r["name"] for r in conn.execute(
            "SELECT name FROM datasets WHERE node = 'n1' AND type = 'volume' ORDER BY name")]
        conn.close()
        assert len(vols) == volumes
        reqs = [Request(v, f"db{i % 3 + 1}") for i, v in enumerate(vols[:batch])]
        out: list[int] = []
        n = f.conns.commands("n1")
        start = time.perf_counter()
        attached = attach.change(f.inv, f.where, f.conns, "attach", reqs)
        took = time.perf_counter() - start
        assert attached.ok and attached.counts()["ok"] == batch
        out.append(f.conns.commands("n1") - n)
        n = f.conns.commands("n1")
        first = audit(f.inv, f.where, f.conns)
        assert first.counts() == {**{k: 0 for k in first.counts()}, "open": volumes - batch}
        assert first.nodes[0].restricted == batch
        out.append(f.conns.commands("n1") - n)
        n = f.conns.commands("n1")
        assert attach.change(f.inv, f.where, f.conns, "detach", reqs).ok
        out.append(f.conns.commands("n1") - n)
        n = f.conns.commands("n1")
        last = audit(f.inv, f.where, f.conns)
        out.append(f.conns.commands("n1") - n)
        node = last.nodes[0]  # the batch's exports closed (no host), not open again
        assert (node.exports, node.restricted, node.open) == (volumes, batch, volumes - batch)
        return out, last.counts(), took
    finally:
        fleets.close()


def test_attach_audit_detach_cost_the_same_commands_at_100k_exports(tmp_path: Path) -> None:
    small, small_counts, _ = rounds(tmp_path / "small", 200, 200)
    big, big_counts, took = rounds(tmp_path / "big", 100_000, 10_000)
    assert small == big == [3, 1, 3, 1], (small, big)
    assert small_counts["open"] == 0 and big_counts["open"] == 90_000
    assert {k: v for k, v in big_counts.items() if k != "open"} == \
        {k: 0 for k in big_counts if k != "open"}  # no drift
    print(f"\n  remote commands (attach, audit, detach, audit): {small} at 200 exports with "
          f"a batch of 200, {big} at 100,000 exports with a batch of 10,000 (that attach: "
          f"{took:.1f} s)")
