"""Snapshot policies on real OpenZFS over real SSH (docs/snapshots.md): `xfleet snapshots run`
across simulated days takes, keeps and prunes exactly the expected snapshots of volumes whose
names hold spaces and colons, checked against `zfs list -t snapshot` on the node; a held
snapshot and a clone's origin are never pruned (and the run reports them); a run that died
after the node made its snapshots is resumed without a second snapshot.

What the simulator cannot prove: real `zfs snapshot`/`zfs destroy vol@a,b` argv quoting of such
names, ZFS's own `creation` times driving the retention, real holds (`zfs get userrefs`) and
a real clone's origin. The days are simulated by setting lab1's clock (the snapshots' creation
comes from it) and passing the same time to `--at` (the schedule and the names come from it);
the clock is put back at the end."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from xfleet.mirror.backend import location
from xfleet.ops.snapshots import run as runs
from xfleet.ops.snapshots.policy import load_policies

from .labkit import Lab, figure

pytestmark = pytest.mark.lab

NODE = "lab1"
ROOT = "tank/sp"
VOLS = [f"{ROOT}/vol a:1", f"{ROOT}/vol b:2", f"{ROOT}/vol c:3"]
CLONE = f"{ROOT}/clone x"
POLICY = """\
policies:
  - name: daily
    match: {name: "tank/sp/vol *"}
    schedule: {daily: "02:30"}
    keep: {daily: 2}
"""
DAY = 86400


def snapshots(lab: Lab) -> set[str]:
    """What the node has: `zfs list -t snapshot` under tank/sp."""
    out = lab.run(NODE, ["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r",
                         ROOT]).stdout
    return set(out.splitlines())


def set_clock(lab: Lab, at: float) -> None:
    lab.run(NODE, ["date", "-u", "-s", f"@{int(at)}"])


@pytest.fixture(scope="module")
def setup(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    lab.run(NODE, ["zfs", "create", "-p", "-o", "volmode=none", ROOT])
    for v in VOLS:
        lab.run(NODE, ["zfs", "create", "-s", "-V", "16M", v])
    d = tmp_path_factory.mktemp("snapshots")
    policy = d / "snapshots.yaml"
    policy.write_text(POLICY)
    db = d / "lab.db"
    res = lab.xfleet("sync", "--json", mirror=db)
    assert res.code == 0, res.explain()
    return db, policy


def test_days_of_runs_keep_exactly_the_retention_and_spare_holds_and_origins(
        lab: Lab, setup: tuple[Path, Path]) -> None:
    db, policy = setup
    # ten days ago at 08:00 UTC: each "day" is after that day's 02:30 slot
    base = (time.time() // DAY - 10) * DAY + 8 * 3600
    p = load_policies(policy).policies[0]

    def name(v: str, day: int) -> str:
        return f"{v}@{p.snapshot_name(base + day * DAY)}"

    def day_run(day: int, *extra: str) -> dict[str, object]:
        at = base + day * DAY
        set_clock(lab, at)
        res = lab.xfleet("snapshots", "run", "--policy", str(policy), "--at", str(at),
                         "--yes", "--json", *extra, mirror=db)
        assert res.code == 0, res.explain()
        doc: dict[str, object] = res.json()
        return doc

    started = time.monotonic()
    try:
        d0 = day_run(0)
        assert (d0["taken"], d0["pruned"], d0["state"]) == (3, 0, "done"), d0
        assert snapshots(lab) == {name(v, 0) for v in VOLS}
        # day 0's snapshot of `vol a:1` held, of `vol b:2` a clone's origin
        lab.run(NODE, ["zfs", "hold", "keep-me", name(VOLS[0], 0)])
        lab.run(NODE, ["zfs", "clone", name(VOLS[1], 0), CLONE])
        assert lab.xfleet("sync", "--json", mirror=db).code == 0
        d1 = day_run(1)
        assert (d1["taken"], d1["pruned"]) == (3, 0), d1
        # day 2: `daily: 2` lets day 0 go; only `vol c:3`'s can
        d2 = day_run(2)
        assert (d2["taken"], d2["pruned"]) == (3, 1), d2
        why = {s["name"]: s["why"] for s in d2["skipped"]}  # type: ignore[attr-defined]
        assert why == {name(VOLS[0], 0): "held (1 hold(s))",
                       name(VOLS[1], 0): "kept: a clone's origin"}, why
        expected = {name(v, d) for v in VOLS for d in (1, 2)} | {name(VOLS[0], 0),
                                                                  name(VOLS[1], 0)}
        assert snapshots(lab) == expected
        # day 3, as a run that died after `zfs snapshot` and before the mirror learnt it:
        # the run's row exists, the node has its snapshots; the resume takes none again
        at3 = base + 3 * DAY
        set_clock(lab, at3)
        rid = runs.start(location(str(db)), load_policies(policy), at=at3)
        gone = subprocess.Popen(["true"])  # the run's process: it claimed the run and died
        gone.wait()
        conn = sqlite3.connect(db)
        with conn:
            conn.execute("UPDATE snapshot_runs SET pid = ?, host = ?, heartbeat = ?, "
                         "updated_at = ? WHERE id = ?",
                         (gone.pid, socket.gethostname(), time.time(), time.time(), rid))
        conn.close()
        lab.run(NODE, ["zfs", "snapshot", *[name(v, 3) for v in VOLS]])
        res = lab.xfleet("snapshots", "run", "--resume", str(rid), "--yes", "--json",
                         mirror=db)
        assert res.code == 0, res.explain()
        d3 = res.json()
        # the three found on the node count as taken by the run; no `zfs snapshot` again
        assert (d3["id"], d3["state"], d3["taken"], d3["resumed"], d3["pruned"]) == (
            rid, "done", 3, 1, 3), d3
        expected = {name(v, d) for v in VOLS for d in (2, 3)} | {name(VOLS[0], 0),
                                                                  name(VOLS[1], 0)}
        assert snapshots(lab) == expected
        # the hold released and the clone gone: the next day's run lets them go
        lab.run(NODE, ["zfs", "release", "keep-me", name(VOLS[0], 0)])
        lab.run(NODE, ["zfs", "destroy", CLONE])
        assert lab.xfleet("sync", "--json", mirror=db).code == 0
        d4 = day_run(4)
        assert (d4["taken"], d4["pruned"], d4["skipped"]) == (3, 5, []), d4
        assert snapshots(lab) == {name(v, d) for v in VOLS for d in (3, 4)}
    finally:
        lab.run(NODE, ["date", "-u", "-s", f"@{int(time.time())}"])
    figure(f"snapshots: five simulated days of runs on real OpenZFS in "
           f"{time.monotonic() - started:.1f} s")
