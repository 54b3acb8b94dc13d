"""A snapshot run as a journaled job (xfleet/ops/snapshots/run.py) on a simulated node: the run's
row records its time, names, counts and state; a run stopped between its steps, or after the
node acted and before the mirror learnt it, is finished by a resume (or the next run) without
a second snapshot for the slot and without destroying anything twice."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import write_sim_inventory

from xfleet import mirror
from xfleet.core.errors import UsageError
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.mirror import jobs
from xfleet.mirror.backend import location
from xfleet.ops.snapshots import run
from xfleet.ops.snapshots.policy import parse_policies
from xfleet.ops.sync import sync

POLICIES = """\
policies:
  - name: hot
    match: {pool: tank}
    schedule: {every: 1h}
    keep: {frequently: 2}
"""
T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC, on an hour: the slots are T0 + k * 3600
HOUR = 3600.0


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[inventory.Inventory, str]:
    inv = inventory.load(write_sim_inventory(tmp_path / "fleet.yaml",
                                             {"n1": {"seed": 5, "volumes": 30}}))
    db = str(tmp_path / "m.db")
    assert sync(inv, db).ok
    return inv, db


def owned(db: str) -> dict[str, int]:
    """Snapshot name (after '@') -> how many volumes have it, of the policy `hot`."""
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute(
            "SELECT substr(name, instr(name, '@') + 1) AS s, count(*) FROM datasets WHERE "
            "type = 'snapshot' AND name LIKE '%@xfleet_hot_%' GROUP BY s ORDER BY s"))
    finally:
        conn.close()


def log_ops(db: str) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return [(op, json.loads(argv)[1]) for op, argv in
                conn.execute("SELECT op, argv FROM lifecycle_log ORDER BY id")]
    finally:
        conn.close()


def test_a_run_is_a_job_with_its_time_names_and_counts(fleet: tuple[inventory.Inventory, str]
                                                       ) -> None:
    inv, db = fleet
    ps = parse_policies(POLICIES)
    name = ps.policies[0].snapshot_name
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        results = [run.run_policies(inv, location(db), conns, ps, now=T0 + h * HOUR)
                   for h in range(3)]
        again = run.run_policies(inv, location(db), conns, ps, now=T0 + 2 * HOUR)
    # each hour: 30 taken; from the third, the oldest pruned (`frequently: 2`)
    assert [(r.state, r.taken, r.pruned) for r in results] == [
        ("done", 30, 0), ("done", 30, 0), ("done", 30, 30)]
    assert results[2].names == {"hot": name(T0 + 2 * HOUR)}
    assert owned(db) == {name(T0 + HOUR): 30, name(T0 + 2 * HOUR): 30}
    # a second run in the same slot: a job that takes and prunes nothing
    assert (again.state, again.planned_take, again.taken, again.pruned) == ("done", 0, 0, 0)
    conn = mirror.connect(db)
    try:
        row = jobs.get(conn, run.SNAPSHOT_RUNS, results[2].id)
        assert (row["mode"], row["at"], row["step"], row["state"], row["pid"]) == (
            "run", T0 + 2 * HOUR, "done", "done", None)
        assert row["finished_at"] is not None and row["operator"]
        assert [r.id for r in run.runs(conn)] == [again.id, *[r.id for r in results[::-1]]]
    finally:
        conn.close()


def test_a_run_stopped_before_pruning_is_finished_by_the_next_without_taking_twice(
        fleet: tuple[inventory.Inventory, str]) -> None:
    inv, db = fleet
    ps = parse_policies(POLICIES)
    name = ps.policies[0].snapshot_name
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        for h in range(2):
            run.run_policies(inv, location(db), conns, ps, now=T0 + h * HOUR)

        def stop(message: str) -> None:  # SIGTERM as the destroys begin
            if message.startswith("destroying"):
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run.run_policies(inv, location(db), conns, ps, now=T0 + 2 * HOUR, progress=stop)
        conn = mirror.connect(db)
        try:
            (left,) = jobs.rows(conn, run.SNAPSHOT_RUNS, open_only=True)
            assert (left["state"], left["step"], left["taken"], left["pid"]) == (
                "running", "pruning", 30, None)
            assert run.interrupted(conn, ps) == [left["id"]]
        finally:
            conn.close()
        assert owned(db) == {name(T0 + h * HOUR): 30 for h in range(3)}
        # the next run (an hour later) finishes it first: it prunes, it does not take again
        nxt = run.run_policies(inv, location(db), conns, ps, now=T0 + 3 * HOUR)
    assert nxt.finished_first == [left["id"]]
    conn = mirror.connect(db)
    try:
        done = run.get(conn, left["id"])
    finally:
        conn.close()
    assert (done.state, done.step, done.taken, done.pruned, done.resumed) == (
        "done", "done", 30, 30, 1)
    assert (nxt.taken, nxt.pruned) == (30, 30)
    assert owned(db) == {name(T0 + 2 * HOUR): 30, name(T0 + 3 * HOUR): 30}
    ops = log_ops(db)
    assert ops.count(("snapshots run", "snapshot")) == 4  # one per hour, none twice
    destroyed = sum(1 for op in ops if op == ("snapshots run", "destroy"))
    assert destroyed == 60  # one `zfs destroy vol@a` per volume and prune, none twice


def test_a_run_that_died_after_the_node_acted_resumes_without_a_duplicate(
        fleet: tuple[inventory.Inventory, str]) -> None:
    """The process made the snapshots and died before the mirror learnt of them (the worst
    moment): the resume re-reads exactly those names, finds them, and takes nothing."""
    inv, db = fleet
    ps = parse_policies(POLICIES)
    snap = ps.policies[0].snapshot_name(T0)
    run_id = run.start(location(db), ps, at=T0)
    conn = mirror.connect(db)
    try:
        jobs.claim(conn, run.SNAPSHOT_RUNS, run_id)  # ours: a pid that is "gone" on resume
        vols = [r[0] for r in conn.execute(
            "SELECT name FROM datasets WHERE type = 'volume' ORDER BY name")]
    finally:
        conn.close()
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        res = conns.get("n1").run(["zfs", "snapshot", *[f"{v}@{snap}" for v in vols]])
        assert res.exit_status == 0, res.stderr
        assert owned(db) == {}  # the mirror did not learn it
        out = run.resume(inv, location(db), conns, ps, run_id)
        with pytest.raises(UsageError, match="is done: nothing to resume"):
            run.resume(inv, location(db), conns, ps, run_id)
        other = parse_policies(POLICIES.replace("frequently: 2", "frequently: 3"))
        left = run.start(location(db), ps, at=T0)
        with pytest.raises(UsageError, match="other policies"):
            run.resume(inv, location(db), conns, other, left)
    assert (out.state, out.taken, out.planned_take, out.resumed) == ("done", 30, 30, 1)
    assert owned(db) == {snap: 30}
    listed = conns_listing(inv, snap)
    assert listed == 30
    assert ("snapshots run", "snapshot") not in log_ops(db)  # nothing taken by the resume


def conns_listing(inv: inventory.Inventory, snap: str) -> int:
    """The node's own count of snapshots named `snap` (not the mirror's)."""
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        res = conns.get("n1").run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot"])
    assert res.exit_status == 0, res.stderr
    return sum(1 for line in res.stdout.splitlines() if line.endswith("@" + snap))


def test_a_run_held_by_a_live_process_is_refused_then_finished_once_it_is_gone(
        fleet: tuple[inventory.Inventory, str]) -> None:
    """Two rounds at once would take two snapshots for one slot: while another live process
    holds a run of the same policies, a new run is refused naming it; once that process is
    gone, the next run finishes it first."""
    inv, db = fleet
    ps = parse_policies(POLICIES)
    rid = run.start(location(db), ps, at=T0)
    holder = subprocess.Popen(["cat"], stdin=subprocess.PIPE)  # alive until its stdin closes
    try:
        conn = sqlite3.connect(db)
        with conn:
            conn.execute("UPDATE snapshot_runs SET pid = ?, host = ?, heartbeat = ? WHERE id = ?",
                         (holder.pid, socket.gethostname(), time.time(), rid))
        conn.close()
        busy = f"snapshot run {rid} of these policies is being run by .*process {holder.pid}"
        with Connections(inv.hosts, state_dir=inv.state_dir) as conns, \
                pytest.raises(UsageError, match=busy):
            run.run_policies(inv, location(db), conns, ps, now=T0)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        out = run.run_policies(inv, location(db), conns, ps, now=T0)
    assert out.finished_first == [rid] and out.taken == 0 and out.planned_take == 0
    assert owned(db) == {ps.policies[0].snapshot_name(T0): 30}
