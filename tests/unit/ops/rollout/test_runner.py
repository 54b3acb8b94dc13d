"""Running rolling upgrades on local nodes with a fake target daemon, and on the simulator:
batches, a broken canary rolled back, the failure budget, changed identities, pause and
resume, a crash mid-node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, wait_for

from unit.ops.rollout.conftest import (
    SKIP,
    SOAK,
    make_packages,
    node_state,
    rollouts_cli,
    run_rollout,
    setup_nodes,
    sim_fleet,
    write_inventory,
)
from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.ops import rollout
from xfleet.tui import operations


def test_rollout_upgrades_every_node_in_batches(tmp_path: Path, mirror_at: str) -> None:
    nodes = ["n1", "n2", "n3"]
    inv_path = setup_nodes(tmp_path, nodes, mirror=mirror_at)
    res, inv = run_rollout(inv_path, "1.1", opts=rollout.Options(serial=[2], soak=0.2,
                                                          ready_timeout=5, skip=SKIP))
    assert res.state == "done", res.reason
    for n in nodes:
        assert node_state(tmp_path, n, "running") == "1.1"
        assert node_state(tmp_path, n, "restarts") == "1.1"  # one restart each
        assert (tmp_path / "stage" / n / "target_1.1.pkg").read_text() == "package 1.1\n"
        assert (tmp_path / "stage" / n / "target_1.0.pkg").exists()  # the way back, staged
    assert [(n["node"], n["batch"], n["from_version"], n["state"]) for n in res.nodes] == [
        ("n1", 0, "1.0", "done"), ("n2", 1, "1.0", "done"), ("n3", 1, "1.0", "done")]
    conn = mirror.connect(inv.mirror)
    msgs = [e["message"] for e in rollout.log(conn, res.id)]
    s = rollout.summary(conn, res.id)
    ops = operations.rollouts(conn)  # what the TUI's operations view shows
    versions = rollout.target_versions(conn)  # the TUI's fleet view: TARGET
    conn.close()
    assert versions == {"n1": "1.1", "n2": "1.1", "n3": "1.1"}
    assert [(o.kind, o.subject, o.node, o.state, o.progress) for o in ops] == [
        ("upgrade", "target 1.1", "3/3 nodes", "done", 1.0)]
    assert "per node: n1 " in ops[0].message
    # every node staged before the first restart
    first_restart = next(i for i, m in enumerate(msgs) if "restarting" in m)
    assert sum("staged and verified" in m for m in msgs[:first_restart]) == 3
    assert s["nodes_done"] == 3 and s["nodes_total"] == 3 and s["state"] == "done"
    assert all(n["seconds"] is not None for n in s["nodes"])


def test_broken_canary_is_rolled_back_and_pauses_others_untouched(tmp_path: Path) -> None:
    nodes = ["n1", "n2", "n3"]
    inv_path = setup_nodes(tmp_path, nodes, "1.1")
    (tmp_path / "target" / "broken").write_text("1.2\n")
    res, inv = run_rollout(inv_path, "1.2")
    assert res.state == "paused"
    assert res.reason is not None and "the canary failed" in res.reason
    assert "not ready with version 1.2" in res.reason and "rolled back to 1.1" in res.reason
    assert node_state(tmp_path, "n1", "restarts").split() == ["1.2", "1.1"]
    assert node_state(tmp_path, "n1", "running") == "1.1"
    for n in ("n2", "n3"):
        assert node_state(tmp_path, n, "restarts") == ""
        assert node_state(tmp_path, n, "running") == "1.1"
    # resume retries the canary: still broken, pauses again; stop ends it
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        again = rollout.resume(inv, inv.mirror, conns, res.id)
    assert again.state == "paused" and node_state(tmp_path, "n2", "restarts") == ""
    conn = mirror.connect(inv.mirror)
    try:  # the canary rolled back to what it ran; the others not touched
        assert rollout.target_versions(conn) == {"n1": "1.1", "n2": "1.1", "n3": "1.1"}
        with mirror.transaction(conn, "a test: n2 mid-upgrade, n3 upgraded"):
            conn.execute("UPDATE rollout_nodes SET state = CASE node WHEN 'n2' THEN "
                         "'restarting' WHEN 'n3' THEN 'done' ELSE state END")
        assert rollout.target_versions(conn) == {"n1": "1.1", "n2": "1.1->1.2", "n3": "1.2"}
    finally:
        conn.close()
    assert rollout.request(inv.mirror, res.id, "stop") == "stopped"
    with pytest.raises(rollout.RolloutError, match="stopped"):
        rollout.request(inv.mirror, res.id, "pause")


@pytest.mark.parametrize("budget,expect", [(1, "done"), (0, "paused")])
def test_failure_budget_is_exceeded_not_equalled(tmp_path: Path, budget: int,
                                                 expect: str) -> None:
    nodes = ["n1", "n2", "n3"]
    inv_path = setup_nodes(tmp_path, nodes)
    (tmp_path / "target" / "n3.broken").write_text("1.1\n")
    res, _ = run_rollout(inv_path, "1.1", opts=rollout.Options(serial=[2], max_failures=budget,
                                                        soak=0, ready_timeout=2, skip=SKIP))
    assert res.state == expect, res.reason
    states = {n["node"]: n["state"] for n in res.nodes}
    assert states == {"n1": "done", "n2": "done", "n3": "failed"}
    assert node_state(tmp_path, "n3", "running") == "1.0"  # rolled back either way
    if expect == "paused":
        assert res.reason is not None and "batch 2 failed (1 failure(s), budget 0)" in res.reason
    else:
        assert res.reason is not None and "rolled back: n3" in res.reason


def test_changed_identities_after_restart_fail_the_node(tmp_path: Path) -> None:
    inv_path = setup_nodes(tmp_path, ["n1", "n2"])
    res, _ = run_rollout(inv_path, "1.3")
    assert res.state == "paused"
    assert res.reason is not None and "exports changed" in res.reason
    assert node_state(tmp_path, "n1", "running") == "1.0"


def test_pause_request_stops_at_the_next_node_and_resume_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mirror_at: str) -> None:
    nodes = ["n1", "n2", "n3"]
    inv_path = setup_nodes(tmp_path, nodes, mirror=mirror_at)
    inv = inventory.load(inv_path)
    o = rollout.Options(soak=0, ready_timeout=2, skip=SKIP).validate()
    rid = rollout.create(inv.mirror, "1.1", nodes, make_packages(tmp_path), o)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        runner = rollout.Runner(inv, inv.mirror, conns)
        upgrade = runner._upgrade

        def then_pause(node: str) -> None:  # the user pauses while n1 is being upgraded
            upgrade(node)
            if node == "n1":
                conn = mirror.connect(inv.mirror)
                conn.execute("UPDATE rollouts SET control = 'pause' WHERE id = ?", (rid,))
                conn.close()

        monkeypatch.setattr(runner, "_upgrade", then_pause)
        res = runner.run(rid)
        assert res.state == "paused" and res.reason == "pause requested by the user"
        assert node_state(tmp_path, "n1", "running") == "1.1"
        assert node_state(tmp_path, "n2", "restarts") == ""
        done = rollout.resume(inv, inv.mirror, conns, rid)
    assert done.state == "done"
    assert all(node_state(tmp_path, n, "restarts") == "1.1" for n in nodes)


def test_resume_after_a_crash_mid_node_and_new_nodes_are_picked_up(tmp_path: Path,
                                                                    mirror_at: str) -> None:
    nodes = ["n1", "n2"]
    inv_path = setup_nodes(tmp_path, nodes, mirror=mirror_at)
    inv = inventory.load(inv_path)
    o = rollout.Options(soak=0, ready_timeout=2, skip=SKIP).validate()
    rid = rollout.create(inv.mirror, "1.1", nodes, make_packages(tmp_path), o)
    # a process died while n1 was soaking at 1.1: its pid is gone, the journal says so
    (tmp_path / "target" / "n1.running").write_text("1.1\n")
    (tmp_path / "target" / "n1.installed").write_text("1.1\n")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    conn = mirror.connect(inv.mirror)
    conn.execute("UPDATE rollouts SET state = 'running', pid = ?, host = ?, heartbeat = ? "
                 "WHERE id = ?", (int(dead.stdout), os.uname().nodename, time.time(), rid))
    conn.execute("UPDATE rollout_nodes SET state = CASE node WHEN 'n1' THEN 'soaking' "
                 "ELSE 'staged' END, from_version = '1.0', started_at = ?,"
                 " exports_digest = NULL WHERE rollout = ?", (time.time(), rid))
    conn.close()
    # meanwhile a node joined the fleet
    (tmp_path / "target" / "n3.installed").write_text("1.0\n")
    (tmp_path / "target" / "n3.running").write_text("1.0\n")
    write_inventory(tmp_path, ["n1", "n2", "n3"], mirror_at)
    env = {**os.environ, "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "xfleet", "--inventory", str(inv_path),
                        "rollouts", "resume", str(rid), "--json"], capture_output=True,
                       text=True, cwd=ROOT, env=env, check=False)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["state"] == "done"
    assert [(n["node"], n["state"]) for n in out["nodes"]] == [
        ("n1", "done"), ("n2", "done"), ("n3", "done")]
    assert node_state(tmp_path, "n1", "restarts") == ""  # not restarted again: it was at 1.1
    assert node_state(tmp_path, "n3", "running") == "1.1"
    assert (tmp_path / "stage" / "n3" / "target_1.1.pkg").exists()


@pytest.mark.parametrize("volumes", [50, 2000])
def test_sim_rollout_commands_per_node_do_not_grow_with_volumes(tmp_path: Path,
                                                                volumes: int) -> None:
    inv = sim_fleet(tmp_path, volumes)
    pk = make_packages(tmp_path)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        p = rollout.plan(inv, inv.mirror, conns, "1.1", f"1.1={pk['1.1'].file}",
                         [f"1.0={pk['1.0'].file}"], rollout.Options(soak=0, serial=["50%"]))
        before = {n: conns.get(n).commands for n in inv.hosts}
        res = rollout.Runner(inv, inv.mirror, conns).run(rollout.start(inv.mirror, p))
        used = [conns.get(n).commands - before[n] for n in inv.hosts]
        status = [conns.get(n).run(["xfleet-sim-target", "running"]).stdout.strip()
                  for n in inv.hosts]
    assert res.state == "done" and status == ["1.1", "1.1", "1.1"]
    assert [n["batch"] for n in res.nodes] == [0, 1, 1]  # canary, then 50 % of 3 = 2
    # the ok-to-stop checks (zpool status, exports), staging, restart, ready...: a constant.
    # The exports are listed once before the restart: the check's listing feeds the digest
    assert used == [16, 16, 16], used


def test_cli_pause_of_a_running_rollout_then_resume(tmp_path: Path) -> None:
    inv_path = setup_nodes(tmp_path, ["n1", "n2", "n3"])
    pk = make_packages(tmp_path)
    skip = [a for c in SKIP for a in ("--skip-check", c)]
    argv = [sys.executable, "-m", "xfleet", "--inventory", str(inv_path), "upgrade", "target",
            "1.1", "--package", f"1.1={pk['1.1'].file}", "--rollback-package",
            f"1.0={pk['1.0'].file}", *skip, "--soak", str(SOAK), "--yes"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
    try:
        wait_for(lambda: node_state(tmp_path, "n1", "restarts"), "n1 to be upgraded")
        r = rollouts_cli(inv_path, "rollouts", "pause", "1")
        assert r.returncode == 0 and "rollout 1: pause requested" in r.stdout, r.stderr
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 4, err
    assert "rollout 1: paused: pause requested by the user" in out
    assert "n1: at 1.1 in" in err and "(1/3 nodes done)" in err  # n1 finished first
    assert node_state(tmp_path, "n2", "restarts") == ""
    r = rollouts_cli(inv_path, "rollouts", "list")
    assert "paused" in r.stdout and "1/3" in r.stdout
    r = rollouts_cli(inv_path, "rollouts", "resume", "1")
    assert r.returncode == 0 and "rollout 1: done" in r.stdout, r.stderr
    assert all(node_state(tmp_path, n, "running") == "1.1" for n in ("n1", "n2", "n3"))


def test_sim_rollout_by_the_cli_records_its_operator(tmp_path: Path, mirror_at: str) -> None:
    """On the simulator (its exports checked against the mirror's volumes), on each engine:
    `XFLEET_OPERATOR=alice xfleet --reason INC-42 upgrade target` to done, then listed."""
    inv = sim_fleet(tmp_path, 50, mirror_at)
    pk = make_packages(tmp_path)
    env = {**os.environ, "COLUMNS": "200", "XFLEET_OPERATOR": "alice"}
    argv = [sys.executable, "-m", "xfleet", "--inventory", str(inv.path), "--reason", "INC-42",
            "upgrade", "target", "1.1", "--package", f"1.1={pk['1.1'].file}",
            "--rollback-package", f"1.0={pk['1.0'].file}", "--soak", "0", "--serial", "50%",
            "--yes", "--json"]
    p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert p.returncode == 0, f"upgrade target: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    done = json.loads(p.stdout)
    assert done["state"] == "done", done
    assert [n["state"] for n in done["nodes"]] == ["done"] * 3, done["nodes"]
    r = rollouts_cli(inv.path, "rollouts", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert [(x["id"], x["state"], x["operator"]) for x in json.loads(r.stdout)] == [
        (done["id"], "done", "alice")], r.stdout
    conn = mirror.connect(inv.mirror)
    try:
        row = conn.execute("SELECT operator, operator_reason FROM rollouts WHERE id = ?",
                           (done["id"],)).fetchone()
        assert tuple(row) == ("alice", "INC-42")
        who = {r[0] for r in conn.execute("SELECT operator FROM rollout_log WHERE rollout = ?",
                                          (done["id"],))}
        assert who == {"alice"}, who
    finally:
        conn.close()
