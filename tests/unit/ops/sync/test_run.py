"""Full sync into the mirror, against simulated nodes (the mirror logic; real ZFS is in lab/).
The tests of what the mirror holds after a sync run on both engines (`mirror_at`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_sim_inventory

from unit.ops.sync.synckit import select
from xfleet import mirror
from xfleet.core.errors import ConnectError
from xfleet.core.zfs import DATASET_COLUMNS, parse_datasets, zfs_list
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.mirror.backend import Connection
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport


def listing(inv: inventory.Inventory, node: str) -> list[tuple[object, ...]]:
    t = SimTransport(inv.hosts[node], state_dir=inv.state_dir)
    recs = parse_datasets(t.lines(zfs_list(inv.hosts[node].pools,
                                           user_properties=inv.user_properties)),
                          user_properties=inv.user_properties)
    return sorted(
        (*(getattr(r, c) for c in DATASET_COLUMNS), r.user_properties.get("xfleet:tenant"))
        for r in recs
    )


def mirrored(db: str | Path, node: str) -> list[tuple[object, ...]]:
    return sorted(select(db, f"SELECT {', '.join(DATASET_COLUMNS)}, tenant FROM datasets "
                         "WHERE node = ?", (node,)))


def test_sync_mirrors_every_column_of_every_dataset(sim_fleet: Path, mirror_at: str) -> None:
    inv = inventory.load(sim_fleet)
    report = sync(inv, mirror_at)
    assert report.ok, report.to_dict()
    for node in ("n1", "n2"):
        expected = listing(inv, node)
        assert len(expected) > 300
        assert mirrored(mirror_at, node) == expected
    nodes = dict(select(mirror_at, "SELECT name, stale FROM nodes"))
    assert nodes == {"n1": 0, "n2": 0}
    assert select(mirror_at, "SELECT count(*) FROM pools") == [(2,)]
    runs = select(mirror_at, "SELECT node, status, commands FROM sync_runs ORDER BY node")
    # zpool list, zpool events, zfs list, zfs get -j (user properties), zpool status -j
    assert runs == [("n1", "ok", 5), ("n2", "ok", 5)]


def test_remote_commands_per_node_do_not_grow_with_datasets(tmp_path: Path) -> None:
    counts = {}
    for volumes in (20, 2000):
        inv = inventory.load(write_sim_inventory(tmp_path / f"f{volumes}.yaml",
                                                 {"n1": {"seed": 3, "volumes": volumes}}))
        report = sync(inv, tmp_path / f"m{volumes}.db")
        assert report.ok
        counts[volumes] = (report.nodes[0].commands, report.nodes[0].datasets)
    assert counts[20][1] * 10 < counts[2000][1]  # 100x the volumes, far more rows ...
    assert counts[20][0] == counts[2000][0] == 5  # ... and the same five commands


def test_resync_applies_creates_and_destroys(sim_fleet: Path, mirror_at: str) -> None:
    inv = inventory.load(sim_fleet)
    assert sync(inv, mirror_at).ok
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    victim = next(n for n, typ in ((str(r[0]), r[1]) for r in mirrored(mirror_at, "n1"))
                  if typ == "volume" and not _has_dependents(mirror_at, n))
    t.run(["zfs", "destroy", "-r", victim])
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/new vol:1.a-b_c"])
    report = sync(inv, mirror_at, nodes=["n1"])
    assert report.ok
    n1 = report.nodes[0]
    assert n1.added == 1 and n1.removed >= 1
    names = {r[0] for r in mirrored(mirror_at, "n1")}
    assert "tank/new vol:1.a-b_c" in names
    assert victim not in names
    assert mirrored(mirror_at, "n1") == listing(inv, "n1")


def _has_dependents(db: str, name: str) -> bool:
    return bool(select(db, "SELECT count(*) FROM datasets WHERE origin >= ? AND origin < ?",
                       (name + "@", name + "A"))[0][0])


class CutShort(SimTransport):
    """A sim node whose connection drops after `after` lines of zfs list output."""

    after = 50

    def _stream(self, argv: list[str], timeout: float, stdin: bytes | None, status: list[int],
                err: list[str]) -> Iterator[str]:
        for i, line in enumerate(super()._stream(argv, timeout, stdin, status, err)):
            if argv[:2] == ["zfs", "list"] and i == self.after:
                raise ConnectError("connection lost mid-command", where=self.node)
            yield line


@pytest.mark.parametrize("first", ["n1", "n2"])
def test_failed_node_keeps_rows_marked_stale(sim_fleet: Path, first: str, mirror_at: str) -> None:
    inv = inventory.load(sim_fleet)
    assert sync(inv, mirror_at).ok
    before = {n: mirrored(mirror_at, n) for n in ("n1", "n2")}
    # destroy something on both nodes; n1's connection then drops mid-listing
    for node in ("n1", "n2"):
        t = SimTransport(inv.hosts[node], state_dir=inv.state_dir)
        t.run(["zfs", "create", "-V", "1G", "tank/added-after"])
    conns = Connections(inv.hosts, trust_store=inv.trust_store, state_dir=inv.state_dir)
    conns.use("n1", CutShort(inv.hosts["n1"], state_dir=inv.state_dir))
    report = sync(inv, mirror_at, connections=conns, parallel=1 if first == "n1" else 2,
                  full=True)
    assert not report.ok
    (failed,) = report.failed
    assert failed.node == "n1" and "connection lost" in (failed.error or "")
    assert mirrored(mirror_at, "n1") == before["n1"]  # untouched: no partial write
    assert "tank/added-after" in {r[0] for r in mirrored(mirror_at, "n2")}
    [(stale, err)] = select(mirror_at, "SELECT stale, last_error FROM nodes WHERE name='n1'")
    assert stale == 1 and "connection lost" in err
    assert select(mirror_at, "SELECT stale FROM nodes WHERE name='n2'") == [(0,)]
    status = select(mirror_at, "SELECT status FROM sync_runs WHERE node='n1' ORDER BY id DESC "
                    "LIMIT 1")
    assert status == [("failed",)]
    # the next good sync clears the stale mark
    assert sync(inv, mirror_at, nodes=["n1"]).ok
    assert select(mirror_at, "SELECT stale FROM nodes WHERE name='n1'") == [(0,)]


def test_unparseable_output_fails_the_node_not_the_mirror(sim_fleet: Path,
                                                         mirror_at: str) -> None:
    inv = inventory.load(sim_fleet)
    assert sync(inv, mirror_at).ok
    before = mirrored(mirror_at, "n2")

    class Garbled(SimTransport):
        def _stream(self, argv: list[str], timeout: float, stdin: bytes | None,
                    status: list[int], err: list[str]) -> Iterator[str]:
            for i, line in enumerate(super()._stream(argv, timeout, stdin, status, err)):
                yield line if i != 10 or argv[1] != "list" else "garbage without tabs"

    conns = Connections(inv.hosts, state_dir=inv.state_dir)
    conns.use("n2", Garbled(inv.hosts["n2"], state_dir=inv.state_dir))
    report = sync(inv, mirror_at, connections=conns, full=True)
    (failed,) = report.failed
    assert "line 11" in (failed.error or "")
    assert mirrored(mirror_at, "n2") == before


def test_parallel_nodes_spool_and_all_land(tmp_path: Path, mirror_at: str) -> None:
    nodes = {f"n{i}": {"seed": i, "volumes": 400} for i in range(1, 5)}
    inv = inventory.load(write_sim_inventory(tmp_path / "f.yaml", nodes))
    phases: dict[str, set[str]] = {}
    report = sync(inv, mirror_at, parallel=4,
                  progress=lambda n, ph, _: phases.setdefault(n, set()).add(ph))
    assert report.ok, report.to_dict()
    for n in nodes:
        assert mirrored(mirror_at, n) == listing(inv, n)
    assert all("done" in p for p in phases.values())


def test_mirror_stays_readable_during_sync(sim_fleet: Path, mirror_at: str) -> None:
    inv = inventory.load(sim_fleet)
    assert sync(inv, mirror_at).ok
    reader = mirror.connect(mirror_at, readonly=True)
    seen = []

    def tick(node: str, phase: str, rows: int) -> None:
        if phase == "writing":
            seen.append(reader.execute("SELECT count(*) FROM datasets").fetchone()[0])

    try:
        assert sync(inv, mirror_at, progress=tick, full=True).ok
    finally:
        reader.close()
    assert seen and all(n > 0 for n in seen)


def test_an_interrupt_while_the_runs_start_leaves_none_running(
        sim_fleet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ctrl-C can land between two statements of the start, after the first node's run is
    # committed and before any node is connected: that run says `interrupted` too
    inv = inventory.load(sim_fleet)
    db = tmp_path / "m.db"
    real = mirror.checkpoint
    calls: list[str] = []

    def checkpoint(conn: Connection, node: str) -> mirror.Checkpoint | None:
        calls.append(node)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(conn, node)

    monkeypatch.setattr(mirror, "checkpoint", checkpoint)
    with pytest.raises(KeyboardInterrupt):
        sync(inv, db)
    runs = select(db, "SELECT node, status, error FROM sync_runs")
    assert runs == [("n1", "interrupted", "interrupted (Ctrl-C or SIGTERM)")], runs
