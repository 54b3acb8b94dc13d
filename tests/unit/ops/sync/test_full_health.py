"""Pool health kept current by sync: one `zpool status -j` per node per sync (full and
incremental), the text form when a node's zpool has no -j or its JSON stops short, a failed
read that does not fail the sync, and followed events (`xfleet watch`) that make the next
read happen at once. The simulator's `zpool status -j` has the shape of real OpenZFS 2.3's
(tests/unit/sim/commands/test_zpool.py); the followed event is a real one
(tests/fixtures/real/zpool_events_ops.txt)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conftest import FIXTURES, write_sim_inventory

from unit.ops.sync.synckit import node, select
from xfleet import mirror
from xfleet.core.events import parse_events, zpool_events
from xfleet.core.zfs import parse_status_json, zpool_status_json
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.ops.sync import apply_events, sync
from xfleet.sim import SimTransport

REAL = FIXTURES / "real"
POOLS = ("SELECT node, name, health, status, scan_function, scan_state, read_errors, "
         "write_errors, checksum_errors, data_errors FROM pools ORDER BY node, name")
VDEVS = ("SELECT position, parent, depth, name, vdev_type, path, state, checksum_errors "
         "FROM vdevs WHERE node = ? ORDER BY position")


def faulty_fleet(tmp_path: Path) -> Inventory:
    return inventory.load(write_sim_inventory(tmp_path / "fleet.yaml", {
        "n1": {"seed": 1, "volumes": 40, "faults": {"tank": "offline"}},
        "n2": {"seed": 2, "volumes": 40, "faults": {"tank": "checksum"}}}))


def test_a_sync_mirrors_each_pools_health_and_vdev_tree(tmp_path: Path, mirror_at: str) -> None:
    inv = faulty_fleet(tmp_path)
    before = time.time()
    report = sync(inv, mirror_at)
    assert report.ok, report.to_dict()
    assert [(n.health, n.health_error) for n in report.nodes] == [(1, None), (1, None)]
    n2 = SimTransport(inv.hosts["n2"], state_dir=inv.state_dir)
    (cksum,) = parse_status_json(n2.run(zpool_status_json(["tank"])).stdout)
    assert select(mirror_at, POOLS) == [
        ("n1", "tank", "DEGRADED", "One or more devices has been taken offline by the "
         "administrator. Sufficient replicas exist for the pool to continue functioning in a "
         "degraded state.", "SCRUB", "FINISHED", 0, 0, 0, 0),
        ("n2", "tank", "ONLINE", cksum.status, "SCRUB", "FINISHED", 0, 0,
         cksum.checksum_errors, 0)]
    assert cksum.checksum_errors > 0
    assert select(mirror_at, VDEVS, ("n1",)) == [
        (0, None, 0, "tank", "root", None, "DEGRADED", 0),
        (1, 0, 1, "mirror-0", "mirror", None, "DEGRADED", 0),
        (2, 1, 2, "nvme0n1", "disk", "/dev/nvme0n1p1", "ONLINE", 0),
        (3, 1, 2, "nvme1n1", "disk", "/dev/nvme1n1p1", "OFFLINE", 0)]
    [(start, end, at)] = select(mirror_at, "SELECT scan_start, scan_end, health_at FROM pools "
                                "WHERE node = 'n2'")
    assert start < end < at and before <= at <= time.time()


def test_every_incremental_sync_reads_health_again(tmp_path: Path, mirror_at: str) -> None:
    inv, _ = node(tmp_path, faults={"tank": "checksum"})
    assert sync(inv, mirror_at).ok
    want = select(mirror_at, POOLS), select(mirror_at, VDEVS, ("n1",))
    conn = mirror.connect(mirror_at)
    try:  # what an older read left: other counters, another tree
        with mirror.transaction(conn, "a test"):
            conn.execute("UPDATE pools SET checksum_errors = 0, status = NULL, health_at = 1")
            conn.execute("DELETE FROM vdevs WHERE position > 1")
    finally:
        conn.close()
    r = sync(inv, mirror_at).nodes[0]
    assert (r.mode, r.health, r.events) == ("incremental", 1, 0)
    assert (select(mirror_at, POOLS), select(mirror_at, VDEVS, ("n1",))) == want
    assert select(mirror_at, "SELECT health_at > 1 FROM pools") in ([(1,)], [(True,)])


class OldZpool(SimTransport):
    """A node whose zpool has no JSON output (OpenZFS before 2.3): `-j` is refused with the
    usage text, as zpool refuses an option it does not know (exit 2)."""

    def _stream(self, argv: list[str], timeout: float, stdin: bytes | None, status: list[int],
                err: list[str]) -> Iterator[str]:
        if argv[:3] == ["zpool", "status", "-j"]:
            status[0], err[0] = 2, "invalid option 'j'\nusage:\n\tstatus [-c [script1,...]]\n"
            return iter(())
        return super()._stream(argv, timeout, stdin, status, err)


class CutJson(SimTransport):
    """A node whose `zpool status -j` stops mid-document and exits 0, as ZFS's JSON printer
    does at a vdev path that is not UTF-8 (tests/fixtures/real/zpool_status_json_cut.txt)."""

    def _stream(self, argv: list[str], timeout: float, stdin: bytes | None, status: list[int],
                err: list[str]) -> Iterator[str]:
        lines = super()._stream(argv, timeout, stdin, status, err)
        if argv[:3] != ["zpool", "status", "-j"]:
            return lines
        text = "\n".join(lines)
        return iter([text[:text.index('"nvme1n1":{"name":"nvme')]])


def _with(inv: Inventory, cls: type[SimTransport]) -> Connections:
    conns = Connections(inv.hosts, state_dir=inv.state_dir)
    conns.use("n1", cls(inv.hosts["n1"], state_dir=inv.state_dir))
    return conns


def test_the_text_form_when_zpool_has_no_json_or_cuts_it_short(tmp_path: Path) -> None:
    inv, _ = node(tmp_path, faults={"tank": "offline"})
    db = tmp_path / "m.db"
    assert sync(inv, db).ok
    want = select(db, POOLS), select(db, "SELECT position, parent, depth, name, state FROM "
                                         "vdevs ORDER BY position")
    json_read = sync(inv, db).nodes[0]
    for cls in (OldZpool, CutJson):
        r = sync(inv, db, connections=_with(inv, cls)).nodes[0]
        assert r.ok and r.health == 1 and r.health_error is None, r
        assert r.commands == json_read.commands + 1  # then zpool status -p
        assert (select(db, POOLS), select(db, "SELECT position, parent, depth, name, state "
                                              "FROM vdevs ORDER BY position")) == want
        # what the text does not say: a leaf's type and path, slow I/Os
        assert select(db, "SELECT vdev_type, path, slow_ios FROM vdevs WHERE position = 3") \
            == [(None, None, None)]


def test_a_failed_health_read_does_not_fail_the_sync(tmp_path: Path) -> None:
    class Broken(SimTransport):
        def _stream(self, argv: list[str], timeout: float, stdin: bytes | None,
                    status: list[int], err: list[str]) -> Iterator[str]:
            if argv[:2] == ["zpool", "status"]:
                status[0], err[0] = 1, "internal error: out of memory\n"
                return iter(())
            return super()._stream(argv, timeout, stdin, status, err)

    inv, t = node(tmp_path)
    db = tmp_path / "m.db"
    assert sync(inv, db).ok
    [(at,)] = select(db, "SELECT health_at FROM pools")
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/new"])
    r = sync(inv, db, connections=_with(inv, Broken)).nodes[0]
    assert r.ok and r.added == 1 and r.health == 0
    assert r.health_error == "`zpool status -j` exited 1: internal error: out of memory"
    assert select(db, "SELECT health_at, health FROM pools") == [(at, "ONLINE")]  # as it was


def _real_scrub_finish(eid: int) -> str:
    """The real `sysevent.fs.zfs.scrub_finish` event of the lab's capture, as the next event
    of the node (its eid), in `zpool events -H -v` text."""
    text = (REAL / "zpool_events_ops.txt").read_text()
    block = next(b for b in text.split("\n\n") if "\tsysevent.fs.zfs.scrub_finish" in b)
    return re.sub(r"eid = 0x[0-9a-f]+", f"eid = {hex(eid)}", block.strip("\n")) + "\n\n"


def _apply(inv: Inventory, db: Path, t: SimTransport, events: list[Any]) -> tuple[int, int]:
    """apply_events, as the watch runs it; returns (pools whose health it wrote, the
    `zpool status` commands it ran)."""
    before = len(t.history)
    r = apply_events(inv, db, "n1", t, events)
    return r.health, sum(1 for a in t.history[before:] if a[:2] == ["zpool", "status"])


def test_followed_events_that_may_change_health_make_the_read_happen_at_once(
        tmp_path: Path) -> None:
    inv, t = node(tmp_path, faults={"tank": "checksum"})
    db = tmp_path / "m.db"
    assert sync(inv, db).ok
    cp = mirror.checkpoint(mirror.connect(db, readonly=True), "n1")
    assert cp is not None and cp.eid is not None
    # a change of datasets only: its events are fetched, health is not read
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/followed"])
    events = [e for e in parse_events(t.lines(zpool_events())) if e.eid > cp.eid]
    assert events and all(e.cls == "sysevent.fs.zfs.history_event" for e in events)
    assert _apply(inv, db, t, events) == (0, 0)
    conn = mirror.connect(db)
    try:
        with mirror.transaction(conn, "a test"):
            conn.execute("UPDATE pools SET checksum_errors = 0, health_at = 1")
    finally:
        conn.close()
    # a scrub finished: the next batch reads health
    (finish,) = parse_events([*_real_scrub_finish(events[-1].eid + 1).splitlines()])
    assert finish.cls == "sysevent.fs.zfs.scrub_finish" and finish.pool == "tank"
    assert _apply(inv, db, t, [finish]) == (1, 1)
    [(errors, at)] = select(db, "SELECT checksum_errors, health_at FROM pools")
    assert errors > 0 and at > 1
