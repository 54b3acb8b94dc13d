"""Helpers of the incremental sync and watch tests: a simulated node, random operations on it,
and the check that the mirror equals what a full sync would write."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from conftest import write_sim_inventory
from opsgen import Ops

from xfleet import mirror
from xfleet.core.zfs import DATASET_COLUMNS
from xfleet.fleet import inventory
from xfleet.fleet.inventory import Inventory
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport

COLS = ", ".join((*DATASET_COLUMNS, "tenant", "user_properties"))


def select(db: str | Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of `sql` on the mirror at `db` (an SQLite path or a PostgreSQL URL), as tuples."""
    conn = mirror.connect(db, readonly=True)
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def rows(db: str | Path, node: str) -> list[tuple[Any, ...]]:
    # ORDER BY in Python: the engines' collations differ (SQLite: bytes; PostgreSQL's C
    # locale is bytes too, but the check must not depend on the server's locale)
    return sorted(select(db, f"SELECT {COLS} FROM datasets WHERE node = ?", (node,)),
                  key=lambda r: r[0].encode())


def full_mirror(inv: Inventory, tmp_path: Path, node: str = "n1") -> Path:
    fresh = tmp_path / f"fresh-{time.monotonic_ns()}.db"
    assert sync(inv, fresh, [node], full=True).ok
    return fresh


def assert_equals_full_sync(inv: Inventory, db: str | Path, tmp_path: Path,
                            node: str = "n1") -> None:
    """The mirror at `db` (either engine) holds what a full sync into a fresh SQLite file
    writes: every row and the pools' summaries."""
    fresh = full_mirror(inv, tmp_path, node)
    want, got = rows(fresh, node), rows(db, node)
    if want != got:
        w, g = {r[0]: r for r in want}, {r[0]: r for r in got}
        diff = sorted(set(w) ^ set(g))[:10] + [n for n in w if n in g and w[n] != g[n]][:10]
        raise AssertionError(f"mirror != full sync: {len(want)} vs {len(got)} rows; "
                             f"first differences: {diff}")
    summary = "SELECT volumes, snapshots, clones, used FROM pools WHERE node = ? ORDER BY name"
    got_pools, want_pools = select(db, summary, (node,)), select(fresh, summary, (node,))
    assert got_pools == want_pools, f"pool summaries: {got_pools} != full sync's {want_pools}"


def node(tmp_path: Path, name: str = "fleet", **sim: Any) -> tuple[Inventory, SimTransport]:
    (tmp_path / name).mkdir(parents=True, exist_ok=True)
    inv = inventory.load(write_sim_inventory(tmp_path / name / "fleet.yaml",
                                             {"n1": {"seed": 7, "volumes": 60, **sim}}))
    return inv, SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)


def sim_ops(t: SimTransport, seed: int, root: str = "tank/w") -> Ops:
    if not t.run(["zfs", "list", "-H", "-o", "name", root], check=False).ok:
        t.run(["zfs", "create", "-p", f"{root}/fs"])
        t.run(["zfs", "create", "-s", "-V", "1G", f"{root}/fs/v0"])
    return Ops(lambda argv: t.run(argv).stdout, root, seed)


def cost_after_changes(tmp_path: Path, volumes: int, k: int,
                        check: bool = True) -> tuple[Any, Any]:
    inv, t = node(tmp_path, f"v{volumes}", volumes=volumes)
    db = tmp_path / f"v{volumes}.db"
    full = sync(inv, db).nodes[0]
    t.run(["zfs", "create", "-p", "tank/k"])
    for i in range(k):
        name = f"tank/k/v{i}"
        t.run(["zfs", "create", "-s", "-V", "1G", name])
        t.run(["zfs", "snapshot", f"{name}@s"])
    inc = sync(inv, db, refresh_budget=0).nodes[0]
    assert inc.ok and inc.mode == "incremental" and inc.gap is None
    if check:  # (the same changes as on the small node: its check covers them)
        assert_equals_full_sync(inv, db, tmp_path)
    return full, inc
