"""Incremental sync and `xfleet watch` against real OpenZFS.

A seeded random sequence of real operations (create, snapshot, clone, promote, rename,
destroy, set/inherit compression, write data, send/receive, bookmark) is played on lab1 while
the mirror follows it; afterwards the mirror must equal a fresh full sync, row by row, every
column. Faults: the events channel is killed, the event queue overflows or is cleared, the
node reboots — each must be detected and caught up.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opsgen import Ops

from xfleet.core import zfs

from .labkit import TENANT, Lab, log, mirror_rows

pytestmark = pytest.mark.lab

NODE = "lab1"
ROOT = "tank/w"
SEED = int(os.environ.get("XFLEET_LAB_SEED", "20261124"))


# ---------------------------------------------------------------------------------------------
# helpers


def sync_json(lab: Lab, db: Path, *args: str) -> dict[str, Any]:
    res = lab.xfleet("sync", "--node", NODE, "--json", *args, mirror=db)
    assert res.code == 0, res.explain()
    report = res.json()
    (entry,) = report["nodes"]
    return dict(entry)


# settle's remote half, in one round trip: `zpool sync` until the listing ("$@") no longer
# changes across one
SETTLE = """pool=$1; shift
sync; zpool sync "$pool"
before=$("$@") || exit 2
i=0
while [ "$i" -lt 20 ]; do
  zpool sync "$pool"
  after=$("$@") || exit 2
  [ "$after" = "$before" ] && exit 0
  before=$after; i=$((i + 1))
done
echo "the listing still changes after 20 txgs" >&2
exit 1
"""


def settle(lab: Lab) -> None:
    """Let space accounting settle (it lags writes by a txg or two): until the node's listing
    is the same on both sides of a `zpool sync`."""
    res = lab.run(NODE, ["sh", "-c", SETTLE, "sh", "tank", *zfs.zfs_list(
        user_properties=[TENANT])], check=False)
    assert res.ok, f"{NODE}: settle exited {res.exit_status}: {res.stderr}"


def assert_equal_to_full_sync(lab: Lab, db: Path, tmp_path: Path, what: str) -> None:
    """The mirror's rows for NODE equal those of a fresh full sync (every column)."""
    fresh = tmp_path / f"fresh-{int(time.monotonic() * 1000)}.db"
    for _ in range(3):
        before = lab.zfs_list(NODE)
        r = sync_json(lab, fresh, "--full")
        assert r["mode"] == "full"
        if lab.zfs_list(NODE) == before:
            break
        settle(lab)
    want, got = mirror_rows(fresh, NODE), mirror_rows(db, NODE)
    want_names, got_names = [r[0] for r in want], [r[0] for r in got]
    assert got_names == want_names, (
        f"{what}: names differ: missing {sorted(set(want_names) - set(got_names))}, "
        f"extra {sorted(set(got_names) - set(want_names))}")
    for w, g in zip(want, got, strict=True):
        assert g == w, f"{what}: {w[0]!r}: mirror {g!r} != full sync {w!r}"


def lab_ops(lab: Lab, seed: int) -> Ops:
    return Ops(lambda argv: lab.run(NODE, argv).stdout, ROOT, seed,
               sh=lambda script: lab.run(NODE, ["sh", "-c", script], timeout=300), log=log)


# base's remote half, in one round trip (each command costs ~0.3-0.8 s under TCG)
BASE = """zfs destroy -R "$1" 2>/dev/null  # left by a previous test
set -e
zfs create -o "$2=base" "$1"
zfs create "$1/fs"
for i in 0 1 2; do zfs create -s -V 16M "$1/fs/v$i"; done
zfs snapshot -r "$1@base"
"""


def base(lab: Lab) -> None:
    """A fresh ROOT: a filesystem with three small volumes, all snapshotted."""
    lab.run(NODE, ["sh", "-c", BASE, "sh", ROOT, TENANT])


def watch_row(db: Path) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        r = conn.execute("SELECT * FROM nodes WHERE name = ?", (NODE,)).fetchone()
        return dict(r) if r else {}
    finally:
        conn.close()


def wait_for(pred: Callable[[], bool], what: str, timeout: float = 120.0) -> float:
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if pred():
            return time.monotonic() - t
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def has_row(db: Path, name: str) -> bool:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT 1 FROM datasets WHERE node = ? AND name = ?",
                            (NODE, name)).fetchone() is not None
    finally:
        conn.close()


def start_watch(lab: Lab, db: Path) -> Any:
    """A fresh ROOT, a full sync into `db`, then `xfleet watch` following NODE."""
    base(lab)
    sync_json(lab, db)
    proc = lab.popen_xfleet("watch", "--node", NODE, "--refresh-interval", "3",
                            "--space-refresh-interval", "0", "--json-lines", mirror=db)
    try:
        wait_for(lambda: watch_row(db).get("watch_state") == "following", "watch to follow")
    except AssertionError:
        proc.kill()
        raise AssertionError(f"watch never followed: {proc.communicate()[1][-2000:]}") from None
    return proc


def last_run_started(db: Path) -> float:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT max(started_at) FROM sync_runs WHERE node = ? AND "
                            "status = 'ok' AND kind = 'incremental'", (NODE,)).fetchone()[0] or 0
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# tests


def test_incremental_sync_equals_full_sync_after_random_operations(
        lab: Lab, tmp_path: Path) -> None:
    base(lab)
    db = tmp_path / "inc.db"
    first = sync_json(lab, db)
    assert first["mode"] == "full" and first["commands"] == 5  # with zpool status -j
    ops = lab_ops(lab, SEED)
    ops.run(12)
    settle(lab)
    r = sync_json(lab, db, "--no-refresh")
    assert r["mode"] == "incremental" and r["gap"] is None, r
    assert r["events"] >= 12 and r["refreshed"] == 0
    # commands: zpool list + zpool events + zpool status -j + a few batched fetches (names,
    # subtrees, clones whose origin moved; each a listing and its user properties) — not one
    # per dataset
    assert r["commands"] <= 11, r
    # data writes post no event: the scheduled space refresh brings their figures
    r = sync_json(lab, db, "--refresh")
    assert r["refreshed"] > 0
    assert_equal_to_full_sync(lab, db, tmp_path, f"after {ops.done}")
    again = sync_json(lab, db, "--no-refresh")
    assert again["events"] == 0 and again["commands"] == 3


# `zfs program tank PROGRAM DATASET N SNAPSHOT...`: N property sets on DATASET (one
# history_event each), then the snapshots, all in one txg
OVERFLOW_PROGRAM = """
local argv = (...)["argv"]
local ds, n = argv[1], tonumber(argv[2])
for i = 1, n do
    local err = zfs.sync.set_prop(ds, "xfleet:ov", tostring(i))
    if err ~= 0 then error("set_prop " .. i .. " failed: " .. err) end
end
for i = 3, #argv do
    local err = zfs.sync.snapshot(argv[i])
    if err ~= 0 then error("snapshot " .. argv[i] .. " failed: " .. err) end
end
"""


def test_gaps_are_detected_and_caught_up_from_history(lab: Lab, tmp_path: Path) -> None:
    base(lab)
    db = tmp_path / "gaps.db"
    sync_json(lab, db)
    ops = lab_ops(lab, SEED + 1)
    # 1. the queue is cleared after some changes: history catches up
    ops.run(5)
    lab.run(NODE, ["zpool", "events", "-c"])
    ops.run(2)
    settle(lab)
    r = sync_json(lab, db, "--refresh")
    assert r["gap"] and "lost" in r["gap"] and r["reconciled"] == [], r
    assert_equal_to_full_sync(lab, db, tmp_path, "after zpool events -c")
    # 2. more than the queue's 512 events at once (overflow): history catches up. The events
    # are cheap ones: one channel program (one command, one txg) sets a user property 560
    # times (a history event each) and snapshots three volumes; the lost events include the
    # snapshots, so the catch-up must add their rows
    volumes = lab.run(NODE, ["zfs", "list", "-H", "-o", "name", "-t", "volume", "-r",
                             ROOT]).stdout.split()
    snaps = [f"{v}@ov" for v in volumes[:3]]
    assert snaps, "the random operations left no volume to snapshot"
    lab.run(NODE, ["zfs", "program", "tank", "/dev/stdin", ROOT, "560", *snaps],
            input=OVERFLOW_PROGRAM)
    assert int(lab.run(NODE, ["zfs", "get", "-H", "-o", "value", "xfleet:ov",
                              ROOT]).stdout) == 560
    settle(lab)
    r = sync_json(lab, db, "--refresh")
    assert r["gap"] and "lost" in r["gap"], r
    assert_equal_to_full_sync(lab, db, tmp_path, "after overflow")
    gaps = watch_row(db)["gaps"]
    assert gaps >= 2
    # 3. a forced structural reconcile finds nothing to change
    r = sync_json(lab, db, "--reconcile", "--refresh")
    assert r["reconciled"] == ["tank"] and r["removed"] == 0 and r["added"] == 0, r
    assert_equal_to_full_sync(lab, db, tmp_path, "after reconcile")


def test_watch_follows_operations_through_a_killed_channel(lab: Lab, tmp_path: Path) -> None:
    db = tmp_path / "watch.db"
    proc = start_watch(lab, db)
    try:
        # latency: a snapshot on the node until its row is in the mirror
        lat = []
        for i in range(5):
            name = f"{ROOT}/fs/v0@lat{i}"
            t = time.monotonic()
            lab.run(NODE, ["zfs", "snapshot", name])
            wait_for(functools.partial(has_row, db, name), f"{name} in the mirror", 60)
            lat.append(time.monotonic() - t)
        log(f"watch latency snapshot -> mirror: median {statistics.median(lat):.2f}s, "
            f"max {max(lat):.2f}s (includes the ssh round trip of `zfs snapshot`)")
        ops = lab_ops(lab, SEED + 2)
        ops.run(8)
        # kill the events channel on the node: watch must reconnect and catch up
        lab.run(NODE, ["pkill", "-f", "zpool events -f"])
        ops.run(6)
        name = f"{ROOT}/after-kill"
        lab.run(NODE, ["zfs", "create", "-s", "-V", "8M", name])
        wait_for(lambda: has_row(db, name), "a change made after the channel was killed")
        settle(lab)
        t_settled = time.time() + 0.5
        wait_for(lambda: last_run_started(db) > t_settled, "a refresh after the last change")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    states = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(s["reconnects"] >= 1 for s in states), "the killed channel was not noticed"
    assert states[-1]["state"] == "stopped"
    assert watch_row(db)["watch_pid"] is None
    assert_equal_to_full_sync(lab, db, tmp_path, f"watch after {ops.done}")


def test_watch_catches_up_after_the_node_reboots(lab: Lab, tmp_path: Path) -> None:
    """A reboot (a power cycle: Lab.power_cycle): the event queue is lost and its ids
    restart (the node comes back from its saved boot, whose kernel random state repeats, so
    its load_guid may too); the pool is imported again. Watch loses the node, retries with
    backoff, then catches up from the pool's on-disk history."""
    db = tmp_path / "reboot.db"
    proc = start_watch(lab, db)
    try:
        ops = lab_ops(lab, SEED + 3)
        ops.run(4)
        settle(lab)
        lab.power_cycle(NODE)  # and imports the pool again
        ops.run(4)
        name = f"{ROOT}/after-reboot"
        lab.run(NODE, ["zfs", "create", "-s", "-V", "8M", name])
        wait_for(lambda: has_row(db, name), "a change made after the reboot", 300)
        settle(lab)
        t_settled = time.time() + 0.5
        wait_for(lambda: last_run_started(db) > t_settled, "a refresh after the last change")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    row = watch_row(db)
    assert row["gaps"] >= 1 and ("restarted" in row["last_gap"] or "load_guid" in row["last_gap"]
                                 or "empty" in row["last_gap"]), row
    assert_equal_to_full_sync(lab, db, tmp_path, f"reboot, after {ops.done}")
