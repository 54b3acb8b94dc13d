"""The moves journal on both engines of the mirror (SQLite and PostgreSQL): a move planned,
started (to a node without a data path, which fails it: journaled, resumable), paused, resumed,
aborted; a drain planned and journaled; a crashed run resumed where it was; a second move of a
volume refused, naming who started the first; and who did it (`operator`, `--reason`)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import Result, run_cli

from unit.ops.moves.conftest import Fleet
from xfleet import mirror
from xfleet.fleet.connections import Connections
from xfleet.ops import moves


def ok(res: Result, what: str) -> Result:
    assert res.code == 0, f"{what}: exit {res.code}\nstdout: {res.out}\nstderr: {res.err}"
    return res


def test_move_started_paused_resumed_aborted_with_its_operator(stuck_at: Fleet) -> None:
    inv, inv_path, t = stuck_at
    i = str(inv_path)
    alice = {"XFLEET_OPERATOR": "alice"}
    res = run_cli("-i", i, "--reason", "INC-42", "move", "tank/app/db", "--to", "n2", "--json",
                  env=alice)
    assert res.code == 1, f"move to n2: exit {res.code}\n{res.out}\n{res.err}"
    failed = json.loads(res.out)
    assert failed["state"] == "failed" and "no data path" in failed["error"]["message"], failed
    listed = json.loads(ok(run_cli("-i", i, "moves", "list", "--json"), "moves list").out)
    assert [(m["id"], m["state"], m["operator"], m["operator_reason"]) for m in listed] == [
        (failed["id"], "failed", "alice", "INC-42")], listed
    conn = mirror.connect(inv.mirror)
    m = moves.get(conn, failed["id"])
    assert m.options["failed_state"] == "base", m.options  # it failed in its base copy
    assert {r[0] for r in conn.execute("SELECT operator FROM move_log WHERE move = ?",
                                       (m.id,))} == {"alice"}
    # a second move of the same volume is refused, naming who started the first
    res = run_cli("-i", i, "move", "tank/app/db", "--to", "n2")
    assert res.code != 0 and f"already has move {m.id} (failed, started by alice)" in res.err, \
        f"exit {res.code}: {res.err}"
    # pause (nobody runs it) keeps the state it stopped in; resume goes back there
    ok(run_cli("-i", i, "moves", "pause", str(m.id), "--json"), "moves pause")
    assert moves.get(conn, m.id).state == "failed"  # halted already: unchanged
    res = run_cli("-i", i, "moves", "resume", str(m.id), "--json")
    again = json.loads(res.out)
    assert again["state"] == "failed" and "no data path" in again["error"]["message"], res.err
    log = [e["message"] for e in moves.log(conn, m.id)]
    assert log[0].startswith("planned") and "resuming in base" in log[-3], log
    assert log[-1].startswith("failed:"), log
    snaps = t.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-d", "1",
                   "tank/app/db"]).stdout.split()
    assert f"tank/app/db@xfleet-move-{m.id}-0" in snaps, snaps  # the move's base snapshot
    ok(run_cli("-i", i, "moves", "abort", str(m.id), "--yes"), "moves abort")
    assert moves.get(conn, m.id).state == "aborted"
    snaps = t.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-d", "1",
                   "tank/app/db"]).stdout.split()
    assert snaps == ["tank/app/db@a", "tank/app/db@b"], snaps  # its snapshot removed
    assert moves.listing(conn, active_only=True) == []
    # aborted: the volume may move again
    assert moves.plan_move(inv, conn, "tank/app/db", "n2").target_node == "n2"


def test_pause_before_the_start_then_resume(stuck_at: Fleet) -> None:
    inv, inv_path, _ = stuck_at
    conn = mirror.connect(inv.mirror)
    m = moves.create(inv, conn, moves.plan_move(inv, conn, "tank/app/db", "n2"))
    res = ok(run_cli("-i", str(inv_path), "moves", "pause", str(m.id), "--json"), "pause")
    assert json.loads(res.out)[0]["state"] == "paused"
    paused = moves.get(conn, m.id)
    assert (paused.state, paused.options["failed_state"]) == ("paused", "planned")
    assert [x.state for x in moves.listing(conn, active_only=True)] == ["paused"]
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        got = moves.Runner(inv, inv.mirror, conns).run(m.id)
    assert got.state == "failed" and "no data path" in (got.error or ""), got
    log = [e["message"] for e in moves.log(conn, m.id)]
    assert "resuming in planned" in log and any(x.startswith("preflight:") for x in log), log


def test_a_crashed_run_is_resumed_where_it_was_and_a_live_one_refused(
        stuck_at: Fleet) -> None:
    inv, _, _ = stuck_at
    conn = mirror.connect(inv.mirror)
    m = moves.create(inv, conn, moves.plan_move(inv, conn, "tank/app/db", "n2"))
    # a process that ran it died (SIGKILL) in its catch-up: its pid is left, not alive
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    conn.execute("UPDATE moves SET state = 'catchup', snapshots = ?, pid = ?, host = ?, "
                 "heartbeat = ?, held_by = 'bob' WHERE id = ?",
                 (json.dumps([f"xfleet-move-{m.id}-0"]), dead.pid, socket.gethostname(),
                  time.time(), m.id))
    # while a live process holds it, a run is refused naming the holder
    conn.execute("UPDATE moves SET pid = ? WHERE id = ?", (os.getppid(), m.id))
    with pytest.raises(moves.MoveError) as exc:
        moves.claim(conn, moves.get(conn, m.id))
    assert f"is being run by bob (process {os.getppid()} on {socket.gethostname()})" in \
        exc.value.message, exc.value.message
    conn.execute("UPDATE moves SET pid = ? WHERE id = ?", (dead.pid, m.id))
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        got = moves.Runner(inv, inv.mirror, conns).run(m.id)
    # taken over, and continued in its catch-up (a first round, then the data path fails)
    assert got.state == "failed" and got.options["failed_state"] == "catchup", got
    assert got.snapshots[:2] == [f"xfleet-move-{m.id}-0", f"xfleet-move-{m.id}-1"], got
    row = conn.execute("SELECT pid, held_by FROM moves WHERE id = ?", (m.id,)).fetchone()
    assert row["pid"] is None and row["held_by"] != "bob", tuple(row)


def test_drain_planned_and_journaled_at_once(fleet_at: Fleet) -> None:
    inv, inv_path, _ = fleet_at
    conn = mirror.connect(inv.mirror)
    plans, refused = moves.plan_drain(inv, conn, "n1")
    assert plans and all(p.target_node == "n2" for p in plans), plans
    sizes = [p.needed_bytes for p in plans]
    assert sizes == sorted(sizes, reverse=True)
    res = ok(run_cli("-i", str(inv_path), "drain", "n1", "--dry-run", "--json"), "drain -n")
    out = json.loads(res.out)
    assert len(out["moves"]) == len(plans) and len(out["refused"]) == len(refused), out
    assert conn.execute("SELECT count(*) FROM moves").fetchone()[0] == 0
    # journaled all at once: a second drain (another operator's) is refused volume by volume
    made = moves.create_many(inv, conn, plans[:3])
    assert [x.state for x in made] == ["planned"] * 3
    again, refused_now = moves.plan_drain(inv, conn, "n1")
    assert {p.volume for p in again}.isdisjoint({x.volume for x in made}), again
    assert {v for v, why in refused_now if "already has move" in why} >= {
        x.volume for x in made}, refused_now
