"""Incremental sync on simulated nodes (whose change feed is proven identical in shape to real
OpenZFS by tests/unit/sim/commands/test_events.py): correctness after random operations and
through gaps, at 100k-dataset scale, and the cost: commands and bytes follow the number of
changes, not the number of datasets. The same properties on real ZFS: tests/lab/.
The correctness tests run on both engines (`mirror_at`); the cost tests at scale on SQLite
only (the commands and bytes do not depend on the engine; the rows they write are checked on
both by the smaller tests)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from unit.ops.sync.synckit import (
    assert_equals_full_sync,
    cost_after_changes,
    full_mirror,
    node,
    rows,
    select,
    sim_ops,
)
from xfleet import mirror
from xfleet.mirror import query
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_sync_equals_a_full_sync_after_random_operations(
        tmp_path: Path, seed: int, mirror_at: str) -> None:
    inv, t = node(tmp_path)
    db = mirror_at
    assert sync(inv, db).nodes[0].mode == "full"
    ops = sim_ops(t, seed)
    for _ in range(3):
        ops.run(15)
        r = sync(inv, db).nodes[0]
        assert r.ok and r.mode == "incremental" and r.gap is None, r
        assert r.events > 0
        assert_equals_full_sync(inv, db, tmp_path)
    # base datasets changed too: rename/destroy/set on generated volumes
    victims = [n for (n,) in select(
        db, "SELECT name FROM datasets WHERE type = 'volume' AND origin IS NULL AND name NOT "
        "LIKE 'tank/w%' AND name NOT IN (SELECT substr(origin, 1, instr(origin, '@') - 1) FROM "
        "datasets WHERE origin IS NOT NULL) ORDER BY name LIMIT 3")]
    t.run(["zfs", "destroy", "-r", victims[0]])
    t.run(["zfs", "rename", victims[1], victims[1] + "-moved"])
    t.run(["zfs", "set", "compression=zstd-7", victims[2]])
    t.run(["zfs", "set", "compression=gzip-2", "tank"])  # inherited by much of the pool
    r = sync(inv, db).nodes[0]
    assert r.ok and r.mode == "incremental"
    assert_equals_full_sync(inv, db, tmp_path)


def test_nothing_changed_costs_three_small_commands(tmp_path: Path, mirror_at: str) -> None:
    inv, t = node(tmp_path)
    db = mirror_at
    assert sync(inv, db).ok
    r = sync(inv, db).nodes[0]
    # zpool list, zpool events, zpool status -j (the pools' health)
    assert (r.mode, r.events, r.fetched, r.commands) == ("incremental", 0, 0, 3)


def test_cost_grows_with_changes_not_with_datasets(tmp_path: Path) -> None:
    small_full, small = cost_after_changes(tmp_path, 300, 20)
    big_full, big = cost_after_changes(tmp_path, 30_000, 20, check=False)
    assert big_full.datasets > 50 * small_full.datasets  # a far bigger node ...
    assert big.commands == small.commands  # ... the same commands for the same changes
    assert big.received < 1.5 * small.received  # ... and about the same bytes
    assert big.received * 200 < big_full.received
    _, more = cost_after_changes(tmp_path / "more", 300, 200)
    assert more.received > 5 * small.received  # bytes follow the number of changes
    assert more.commands <= small.commands + 1  # 500 names per command


def test_space_refresh_is_bounded_by_the_budget_and_converges(
        tmp_path: Path, mirror_at: str) -> None:
    inv, t = node(tmp_path, volumes=400)
    db = mirror_at
    total = sync(inv, db).nodes[0].datasets
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/new"])  # the pool's figures move
    r = sync(inv, db, refresh_budget=100).nodes[0]  # the refresh is on a schedule: not yet
    assert r.refreshed == 0 and r.fetched == 2  # the new volume and its parent only
    st = query.status(mirror.connect(db, readonly=True), ["n1"], time.time())[0]
    assert st["space_due"] >= total - 2  # ... but the mirror knows what is due
    r = sync(inv, db, refresh=True, refresh_budget=100).nodes[0]
    assert r.refreshed == 100
    conn = mirror.connect(db, readonly=True)
    due = conn.execute("SELECT space_dirty_since FROM pools WHERE node = 'n1'").fetchone()[0]
    assert due is not None
    runs = 1
    while conn.execute("SELECT space_dirty_since FROM pools WHERE node='n1'").fetchone()[0]:
        r = sync(inv, db, refresh=True, refresh_budget=100).nodes[0]
        assert r.refreshed <= 100
        runs += 1
        assert runs < 20
    assert runs >= total // 100  # every row was refreshed, 100 at a time
    # nothing moved since: nothing to refresh
    assert sync(inv, db, refresh=True, refresh_budget=100).nodes[0].refreshed == 0


def test_overflow_and_clear_are_caught_up_from_history(tmp_path: Path, mirror_at: str) -> None:
    inv, t = node(tmp_path, zevent_len_max=40)
    db = mirror_at
    assert sync(inv, db).ok
    sim_ops(t, 11).run(30)  # far more than 40 events
    r = sync(inv, db).nodes[0]
    assert r.gap and "lost" in r.gap and r.reconciled == [], r
    assert_equals_full_sync(inv, db, tmp_path)
    sim_ops(t, 12).run(5)
    t.run(["zpool", "events", "-c"])
    r = sync(inv, db).nodes[0]
    assert r.gap and r.reconciled == []
    assert_equals_full_sync(inv, db, tmp_path)
    assert mirror.connect(db, readonly=True).execute(
        "SELECT gaps FROM nodes WHERE name='n1'").fetchone()[0] == 2


def test_reboot_is_detected_and_caught_up(tmp_path: Path, mirror_at: str) -> None:
    inv, t = node(tmp_path)
    db = mirror_at
    assert sync(inv, db).ok
    ops = sim_ops(t, 21)
    ops.run(10)
    t.reboot()
    ops.run(3)  # after the reboot the ids start again from 1: they must not be mistaken
    r = sync(inv, db).nodes[0]
    assert r.gap and "restarted" in r.gap, r
    assert_equals_full_sync(inv, db, tmp_path)


def test_truncated_history_falls_back_to_a_reconcile(tmp_path: Path, mirror_at: str) -> None:
    inv, t = node(tmp_path, zevent_len_max=20, history_len_max=30)
    db = mirror_at
    assert sync(inv, db).ok
    sim_ops(t, 31).run(40)
    r = sync(inv, db, refresh=True, refresh_budget=20).nodes[0]
    assert r.gap and r.reconciled == ["tank"], r
    conn = mirror.connect(db, readonly=True)
    # structure is exact at once; the whole pool is due for a property/space refresh
    assert conn.execute("SELECT space_dirty_since FROM pools").fetchone()[0] is not None
    names = [r[0] for r in rows(db, "n1")]
    assert names == [r[0] for r in rows(full_mirror(inv, tmp_path), "n1")]
    while conn.execute("SELECT space_dirty_since FROM pools").fetchone()[0]:
        assert sync(inv, db, refresh=True, refresh_budget=20).ok
    assert_equals_full_sync(inv, db, tmp_path)


def test_reconcile_at_scale_lists_only_fast_columns(tmp_path: Path) -> None:
    # (SQLite only, for the suite's time: the reconcile's SQL runs on PostgreSQL in
    # test_truncated_history_falls_back_to_a_reconcile)
    inv, t = node(tmp_path, volumes=20_000)
    db = tmp_path / "m.db"
    full = sync(inv, db).nodes[0]
    conn = mirror.connect(db)  # the mirror lost some rows ...
    try:
        with mirror.transaction(conn, "a damaged mirror"):
            lost = [r[0] for r in conn.execute(
                "SELECT name FROM datasets WHERE type = 'snapshot' ORDER BY name LIMIT 7")]
            conn.execute(f"DELETE FROM datasets WHERE name IN ({', '.join('?' for _ in lost)})",
                         lost)
            conn.execute("UPDATE datasets SET guid = '1' WHERE name = (SELECT max(name) FROM "
                         "datasets WHERE type = 'volume')")  # ... and has a wrong guid
    finally:
        conn.close()
    r = sync(inv, db, reconcile=True, refresh_budget=0).nodes[0]
    assert r.reconciled == ["tank"] and r.gap is None
    # zpool list, zpool events, zpool status -j, the fast listing, one fetch of the 8 names
    # (and ancestors): their listing and their user properties
    assert r.commands == 6 and 8 <= r.fetched < 40
    assert r.received < full.received / 2  # four short columns instead of twenty
    assert set(lost) <= {row[0] for row in rows(db, "n1")}
    assert_equals_full_sync(inv, db, tmp_path)


def test_sim_at_scale_100k_datasets(tmp_path: Path) -> None:
    inv, t = node(tmp_path, volumes=33_000)
    db = tmp_path / "m.db"
    full = sync(inv, db).nodes[0]
    assert full.datasets >= 100_000
    ops = sim_ops(t, 41)
    ops.run(40)
    for name in ("tank/t0003", "tank/t0100"):
        if t.run(["zfs", "list", name], check=False).ok:
            t.run(["zfs", "set", "xfleet:tenant=moved", name])
    r = sync(inv, db).nodes[0]
    assert r.mode == "incremental" and r.gap is None
    assert r.commands < 10
    assert_equals_full_sync(inv, db, tmp_path)


def test_a_pool_that_disappears_keeps_its_rows_until_a_full_sync(
        tmp_path: Path, mirror_at: str) -> None:
    """A node that boots before its pool is imported must not empty the mirror."""
    from collections.abc import Iterator

    from xfleet.fleet.connections import Connections

    inv, t = node(tmp_path)
    db = mirror_at
    before = len(rows(db, "n1")) if sync(inv, db).ok else 0

    class NoPool(SimTransport):
        def _stream(self, argv: list[str], timeout: float, stdin: bytes | None,
                    status: list[int], err: list[str]) -> Iterator[str]:
            for line in super()._stream(argv, timeout, stdin, status, err):
                if argv[:2] != ["zpool", "list"]:
                    yield line

    conns = Connections(inv.hosts, state_dir=inv.state_dir)
    conns.use("n1", NoPool(inv.hosts["n1"], state_dir=inv.state_dir))
    r = sync(inv, db, connections=conns).nodes[0]
    assert not r.ok and "no longer imported" in (r.error or "") and "--full" in (r.hint or "")
    assert len(rows(db, "n1")) == before
    assert mirror.connect(db, readonly=True).execute(
        "SELECT stale FROM nodes").fetchone()[0] == 1
    assert sync(inv, db).ok  # imported again: back to normal


def test_a_failed_incremental_sync_keeps_rows_and_checkpoint_then_catches_up(
        tmp_path: Path, mirror_at: str) -> None:
    from collections.abc import Iterator

    from xfleet.core.errors import ConnectError
    from xfleet.fleet.connections import Connections

    inv, t = node(tmp_path)
    db = mirror_at
    assert sync(inv, db).ok
    before = rows(db, "n1")
    checkpoint = mirror.checkpoint(mirror.connect(db), "n1")
    assert checkpoint is not None
    eid = checkpoint.eid
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/lost-in-transit"])

    class Drops(SimTransport):
        def _stream(self, argv: list[str], timeout: float, stdin: bytes | None,
                    status: list[int], err: list[str]) -> Iterator[str]:
            if argv[:2] == ["zfs", "list"]:
                raise ConnectError("connection lost mid-command", where=self.node)
            yield from super()._stream(argv, timeout, stdin, status, err)

    conns = Connections(inv.hosts, state_dir=inv.state_dir)
    conns.use("n1", Drops(inv.hosts["n1"], state_dir=inv.state_dir))
    r = sync(inv, db, connections=conns).nodes[0]
    assert not r.ok and "connection lost" in (r.error or "")
    assert rows(db, "n1") == before
    cp = mirror.checkpoint(mirror.connect(db), "n1")
    assert cp is not None and cp.eid == eid  # the checkpoint did not move
    r = sync(inv, db).nodes[0]
    assert r.ok and r.added == 1
    assert_equals_full_sync(inv, db, tmp_path)
