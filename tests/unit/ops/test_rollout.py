"""The rollout engine (xfleet.ops.rollout) and its CLI on local nodes whose target is a small
script behind the `command` driver: batches, the canary, failure budgets ("exceeded, not
equalled"), rollback, pause/resume/stop, crash resume, nodes added mid-rollout, preflight
refusals. Real OpenZFS and the real NVMe/TCP target are in tests/lab/test_upgrades_real.py."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, wait_for

from xfleet import mirror, sim
from xfleet.core.errors import UsageError
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.ops import rollout
from xfleet.ops.target import Export
from xfleet.tui import operations

SKIP = ("pools", "exports", "identities")  # local nodes have no pools and no mirror rows

# A target daemon in a file: installed/running version per node, restarts logged; a version
# listed in STATE/broken never gets ready; 1.3 changes the namespace identities.
FAKE = r"""#!/bin/sh
set -eu
S="$1"; N="$2"; OP="$3"; shift 3
case "$OP" in
  installed) cat "$S/$N.installed" ;;
  running) cat "$S/$N.running" 2>/dev/null || true ;;
  ready) test -s "$S/$N.running" && cat "$S/$N.running" ;;
  exports) v=$(cat "$S/$N.running" 2>/dev/null || true)
    id=00000000-0000-4000-8000-00000000000$( [ "$v" = 1.3 ] && echo 2 || echo 1)
    k=0; while [ "$k" -lt "$(cat "$S/$N.volumes" 2>/dev/null || echo 1)" ]; do k=$((k+1))
      printf 'nqn.test:%s:tank.v%s\t1\t/dev/zvol/tank/v%s\t%s\t%s\t1\n' "$N" $k $k "$id" "$id"
    done ;;
  stage) test "$(sha256sum -- "$1" | cut -d' ' -f1)" = "$2" ;;
  restart) echo "$2" >> "$S/$N.restarts"; echo "$2" > "$S/$N.installed"
    if grep -qx -- "$2" "$S/broken" 2>/dev/null || grep -qx -- "$2" "$S/$N.broken" 2>/dev/null
    then : > "$S/$N.running"; else echo "$2" > "$S/$N.running"; fi ;;
  *) echo "unknown op $OP" >&2; exit 2 ;;
esac
"""


def _setup(tmp_path: Path, nodes: list[str], version: str = "1.0") -> Path:
    state = tmp_path / "target"
    state.mkdir()
    script = tmp_path / "fake-target"
    script.write_text(FAKE)
    script.chmod(0o755)
    for n in nodes:
        (state / f"{n}.installed").write_text(version + "\n")
        (state / f"{n}.running").write_text(version + "\n")
    return _inventory(tmp_path, nodes)


def _inventory(tmp_path: Path, nodes: list[str]) -> Path:
    s, f = tmp_path / "target", tmp_path / "fake-target"
    cmds = {
        "installed_version": [str(f), str(s), "{node}", "installed"],
        "running_version": [str(f), str(s), "{node}", "running"],
        "ready": [str(f), str(s), "{node}", "ready"],
        "exports": [str(f), str(s), "{node}", "exports"],
        "stage": [str(f), str(s), "{node}", "stage", "{path}", "{sha256}"],
        "restart": [str(f), str(s), "{node}", "restart", "{path}", "{version}"],
        "rollback": [str(f), str(s), "{node}", "restart", "{path}", "{version}"],
    }
    hosts = {n: {"kind": "local", "target": {"driver": "command",
                                             "stage_dir": str(tmp_path / "stage" / n), **cmds}}
             for n in nodes}
    inv = tmp_path / "inv.yaml"
    inv.write_text(json.dumps({"all": {"vars": {"mirror": str(tmp_path / "m.db"),
                                                "state_dir": str(tmp_path / "st")},
                                       "hosts": hosts}}))
    return inv


def _pkgs(tmp_path: Path) -> dict[str, rollout.Package]:
    out = {}
    for v in ("1.0", "1.1", "1.2", "1.3"):
        p = tmp_path / f"target_{v}.pkg"
        p.write_text(f"package {v}\n")
        out[v] = rollout.package(f"{v}={p}")
    return out


def _run(inv_path: Path, version: str, *, opts: rollout.Options | None = None,
         nodes: list[str] | None = None) -> tuple[rollout.Result, Any]:
    inv = inventory.load(inv_path)
    o = (opts or rollout.Options(soak=0, ready_timeout=2, skip=SKIP)).validate()
    pkgs = _pkgs(inv_path.parent)
    targets = rollout.target_nodes(inv, nodes)
    rid = rollout.create(inv.mirror, version, targets, pkgs, o, selection=nodes)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        res = rollout.Runner(inv, inv.mirror, conns, rid).run()
    return res, inv


def _state(tmp_path: Path, node: str, what: str) -> str:
    p = tmp_path / "target" / f"{node}.{what}"
    return p.read_text().strip() if p.exists() else ""


def test_batches_canary_then_serial_sizes_last_repeats() -> None:
    nodes = [f"n{i}" for i in range(1, 11)]
    assert rollout.plan_batches(nodes, [1, 2, "25%"]) == [
        ["n1"], ["n2"], ["n3", "n4"], ["n5", "n6", "n7"], ["n8", "n9", "n10"]]
    assert rollout.plan_batches(nodes, [5], canary="n4")[0] == ["n4"]
    assert rollout.plan_batches(nodes, ["100%"]) == [["n1"], nodes[1:]]
    assert rollout.parse_serial("1,2,25%") == [1, 2, "25%"]
    for bad in ("0", "x", "101%", ""):
        with pytest.raises(UsageError):
            rollout.parse_serial(bad)
    with pytest.raises(UsageError, match="canary"):
        rollout.plan_batches(nodes, [1], canary="zz")


def test_versions_compare_like_debian() -> None:
    assert rollout.compare_versions("1.10", "1.9") == 1
    assert rollout.compare_versions("2.0~rc1", "2.0") == -1
    assert rollout.compare_versions("1:1.0", "2.0") == 1
    assert rollout.compare_versions("1.1", "1.1") == 0


def test_exports_digest_ignores_order_and_sees_any_change() -> None:
    exports = [Export(f"nqn.2026-11.io.xfleet:n1:v{i}", 1, f"/dev/zvol/tank/v{i}",
                      f"uuid-{i}", f"nguid-{i}") for i in range(5)]
    count, digest = rollout.exports_digest(exports)
    assert count == 5
    assert rollout.exports_digest(reversed(exports)) == (5, digest)
    changed = [*exports[:4], replace(exports[4], uuid="uuid-new")]
    assert rollout.exports_digest(changed)[1] != digest
    assert rollout.exports_digest([*exports[:4], replace(exports[4], enabled=False)])[1] != digest
    assert rollout.exports_digest(exports[:4])[1] != digest
    # fed while another consumer reads the listing: same figures, the listing unchanged
    fed = rollout.ExportsDigest()
    it = fed.feed(iter(exports))
    assert next(it) == exports[0] and not fed.complete
    assert list(it) == exports[1:]
    assert fed.complete and (fed.count, fed.hexdigest) == (count, digest)


def test_rollout_upgrades_every_node_in_batches(tmp_path: Path) -> None:
    nodes = ["n1", "n2", "n3"]
    inv_path = _setup(tmp_path, nodes)
    res, inv = _run(inv_path, "1.1", opts=rollout.Options(serial=[2], soak=0.2,
                                                          ready_timeout=5, skip=SKIP))
    assert res.state == "done", res.reason
    for n in nodes:
        assert _state(tmp_path, n, "running") == "1.1"
        assert _state(tmp_path, n, "restarts") == "1.1"  # one restart each
        assert (tmp_path / "stage" / n / "target_1.1.pkg").read_text() == "package 1.1\n"
        assert (tmp_path / "stage" / n / "target_1.0.pkg").exists()  # the way back, staged
    assert [(n["node"], n["batch"], n["from_version"], n["state"]) for n in res.nodes] == [
        ("n1", 0, "1.0", "done"), ("n2", 1, "1.0", "done"), ("n3", 1, "1.0", "done")]
    conn = mirror.connect(inv.mirror)
    msgs = [e["message"] for e in rollout.log(conn, res.id)]
    s = rollout.summary(conn, res.id)
    ops = operations.rollouts(conn)  # what the TUI's operations view shows
    conn.close()
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
    inv_path = _setup(tmp_path, nodes, "1.1")
    (tmp_path / "target" / "broken").write_text("1.2\n")
    res, inv = _run(inv_path, "1.2")
    assert res.state == "paused"
    assert res.reason is not None and "the canary failed" in res.reason
    assert "not ready with version 1.2" in res.reason and "rolled back to 1.1" in res.reason
    assert _state(tmp_path, "n1", "restarts").split() == ["1.2", "1.1"]
    assert _state(tmp_path, "n1", "running") == "1.1"
    for n in ("n2", "n3"):
        assert _state(tmp_path, n, "restarts") == "" and _state(tmp_path, n, "running") == "1.1"
    # resume retries the canary: still broken, pauses again; stop ends it
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        again = rollout.resume(inv, inv.mirror, conns, res.id)
    assert again.state == "paused" and _state(tmp_path, "n2", "restarts") == ""
    assert rollout.request(inv.mirror, res.id, "stop") == "stopped"
    with pytest.raises(rollout.RolloutError, match="stopped"):
        rollout.request(inv.mirror, res.id, "pause")


@pytest.mark.parametrize("budget,expect", [(1, "done"), (0, "paused")])
def test_failure_budget_is_exceeded_not_equalled(tmp_path: Path, budget: int,
                                                 expect: str) -> None:
    nodes = ["n1", "n2", "n3"]
    inv_path = _setup(tmp_path, nodes)
    (tmp_path / "target" / "n3.broken").write_text("1.1\n")
    res, _ = _run(inv_path, "1.1", opts=rollout.Options(serial=[2], max_failures=budget,
                                                        soak=0, ready_timeout=2, skip=SKIP))
    assert res.state == expect, res.reason
    states = {n["node"]: n["state"] for n in res.nodes}
    assert states == {"n1": "done", "n2": "done", "n3": "failed"}
    assert _state(tmp_path, "n3", "running") == "1.0"  # rolled back either way
    if expect == "paused":
        assert res.reason is not None and "batch 2 failed (1 failure(s), budget 0)" in res.reason
    else:
        assert res.reason is not None and "rolled back: n3" in res.reason


def test_changed_identities_after_restart_fail_the_node(tmp_path: Path) -> None:
    inv_path = _setup(tmp_path, ["n1", "n2"])
    res, _ = _run(inv_path, "1.3")
    assert res.state == "paused"
    assert res.reason is not None and "exports changed" in res.reason
    assert _state(tmp_path, "n1", "running") == "1.0"


def test_pause_request_stops_at_the_next_node_and_resume_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = ["n1", "n2", "n3"]
    inv_path = _setup(tmp_path, nodes)
    inv = inventory.load(inv_path)
    o = rollout.Options(soak=0, ready_timeout=2, skip=SKIP).validate()
    rid = rollout.create(inv.mirror, "1.1", nodes, _pkgs(tmp_path), o)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        runner = rollout.Runner(inv, inv.mirror, conns, rid)
        upgrade = runner._upgrade

        def then_pause(node: str) -> None:  # the user pauses while n1 is being upgraded
            upgrade(node)
            if node == "n1":
                conn = sqlite3.connect(inv.mirror)
                conn.execute("UPDATE rollouts SET control = 'pause' WHERE id = ?", (rid,))
                conn.commit()
                conn.close()

        monkeypatch.setattr(runner, "_upgrade", then_pause)
        res = runner.run()
        assert res.state == "paused" and res.reason == "pause requested by the user"
        assert _state(tmp_path, "n1", "running") == "1.1"
        assert _state(tmp_path, "n2", "restarts") == ""
        done = rollout.resume(inv, inv.mirror, conns, rid)
    assert done.state == "done"
    assert all(_state(tmp_path, n, "restarts") == "1.1" for n in nodes)


def test_resume_after_a_crash_mid_node_and_new_nodes_are_picked_up(tmp_path: Path) -> None:
    nodes = ["n1", "n2"]
    inv_path = _setup(tmp_path, nodes)
    inv = inventory.load(inv_path)
    o = rollout.Options(soak=0, ready_timeout=2, skip=SKIP).validate()
    rid = rollout.create(inv.mirror, "1.1", nodes, _pkgs(tmp_path), o)
    # a process died while n1 was soaking at 1.1: its pid is gone, the journal says so
    (tmp_path / "target" / "n1.running").write_text("1.1\n")
    (tmp_path / "target" / "n1.installed").write_text("1.1\n")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    conn = mirror.connect(inv.mirror)
    conn.execute("UPDATE rollouts SET state = 'running', pid = ?, host = ?, heartbeat = "
                 "strftime('%s','now') WHERE id = ?", (int(dead.stdout), os.uname().nodename,
                                                       rid))
    conn.execute("UPDATE rollout_nodes SET state = CASE node WHEN 'n1' THEN 'soaking' "
                 "ELSE 'staged' END, from_version = '1.0', started_at = strftime('%s','now'),"
                 " exports_digest = NULL WHERE rollout = ?", (rid,))
    conn.close()
    # meanwhile a node joined the fleet
    (tmp_path / "target" / "n3.installed").write_text("1.0\n")
    (tmp_path / "target" / "n3.running").write_text("1.0\n")
    _inventory(tmp_path, ["n1", "n2", "n3"])
    env = {**os.environ, "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "xfleet", "--inventory", str(inv_path),
                        "rollouts", "resume", str(rid), "--json"], capture_output=True,
                       text=True, cwd=ROOT, env=env, check=False)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["state"] == "done"
    assert [(n["node"], n["state"]) for n in out["nodes"]] == [
        ("n1", "done"), ("n2", "done"), ("n3", "done")]
    assert _state(tmp_path, "n1", "restarts") == ""  # not restarted again: it was at 1.1
    assert _state(tmp_path, "n3", "running") == "1.1"
    assert (tmp_path / "stage" / "n3" / "target_1.1.pkg").exists()


def _cli(inv_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xfleet", "--inventory", str(inv_path), *args],
                          capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "COLUMNS": "200"})


def test_cli_preflight_refuses_downgrade_and_missing_rollback_package(tmp_path: Path) -> None:
    inv_path = _setup(tmp_path, ["n1", "n2"], "1.1")
    pk = _pkgs(tmp_path)
    skip = [a for c in SKIP for a in ("--skip-check", c)]
    p = _cli(inv_path, "upgrade", "target", "1.0", "--package", f"1.0={pk['1.0'].file}",
             *skip, "--yes")
    assert p.returncode != 0 and "would downgrade n1 from 1.1" in p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    p = _cli(inv_path, "upgrade", "target", "1.2", "--package", f"1.2={pk['1.2'].file}",
             *skip, "--yes")
    assert p.returncode != 0 and "no package of 1.1" in p.stdout + p.stderr
    assert _state(tmp_path, "n1", "restarts") == ""
    # a dry run with everything in place: checks and batches, nothing changed
    p = _cli(inv_path, "upgrade", "target", "1.2", "--package", f"1.2={pk['1.2'].file}",
             "--rollback-package", f"1.1={pk['1.1'].file}", *skip, "--dry-run", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["batches"] == [["n1"], ["n2"]] and d["refused"] == []
    assert {c["name"] for c in d["checks"]} >= {"reachable", "version", "rollback", "moves"}
    assert not (tmp_path / "stage").exists()
    # the real thing, then list/show
    p = _cli(inv_path, "upgrade", "target", "1.2", "--package", f"1.2={pk['1.2'].file}",
             "--rollback-package", f"1.1={pk['1.1'].file}", *skip, "--soak", "0", "--yes")
    assert p.returncode == 0, p.stderr
    assert "rollout 1: done" in p.stdout
    p = _cli(inv_path, "rollouts", "list", "--json")
    assert json.loads(p.stdout)[0]["nodes_done"] == 2
    p = _cli(inv_path, "rollouts", "show", "1")
    assert p.returncode == 0 and "n2" in p.stdout and "at 1.2 in" in p.stdout
    p = _cli(inv_path, "rollouts", "resume", "1")
    assert p.returncode != 0 and "rollout 1 is done" in p.stderr and "Traceback" not in p.stderr
    p = _cli(inv_path, "upgrade", "target", "1.2", "--package", "/nonexistent.deb", "--yes")
    assert p.returncode == 2 and "does not exist" in p.stderr
    p = _cli(inv_path, "target", "status", "--json")
    assert p.returncode == 0, p.stderr
    assert [(r["node"], r["installed"], r["running"], r["exports"]) for r in
            json.loads(p.stdout)] == [("n1", "1.2", "1.2", 1), ("n2", "1.2", "1.2", 1)]


def test_only_one_open_rollout(tmp_path: Path) -> None:
    inv_path = _setup(tmp_path, ["n1"])
    inv = inventory.load(inv_path)
    o = rollout.Options(skip=SKIP).validate()
    rid = rollout.create(inv.mirror, "1.1", ["n1"], _pkgs(tmp_path), o)
    with pytest.raises(rollout.RolloutError, match=f"rollout {rid} is not finished"):
        rollout.create(inv.mirror, "1.1", ["n1"], _pkgs(tmp_path), o)
    assert rollout.request(inv.mirror, rid, "pause") == "paused"


@pytest.mark.parametrize("volumes", [1, 400])
def test_remote_commands_do_not_grow_with_the_exports(tmp_path: Path, volumes: int) -> None:
    nodes = ["n1", "n2"]
    inv_path = _setup(tmp_path, nodes)
    for n in nodes:
        (tmp_path / "target" / f"{n}.volumes").write_text(f"{volumes}\n")
    inv = inventory.load(inv_path)
    o = rollout.Options(soak=0, ready_timeout=5, skip=SKIP).validate()
    rid = rollout.create(inv.mirror, "1.1", nodes, _pkgs(tmp_path), o)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        res = rollout.Runner(inv, inv.mirror, conns, rid).run()
        counts = [conns.get(n).commands for n in nodes]
    assert res.state == "done"
    # per node: versions (2); digest, copy and check of two packages (6); versions again (2);
    # exports before and after (2); restart, ready, still ready after the soak (3)
    assert counts == [15, 15], counts


# ---------------------------------------------------------------------------------------------
# on the simulated fleet: the simulated target daemon (xfleet-sim-target) exports every volume
# with pinned identities, so the exports/identities checks run against a real mirror



def _sim(tmp_path: Path, volumes: int = 200) -> Any:
    from xfleet.ops.sync import sync

    p = tmp_path / "sim.yaml"
    p.write_text("all:\n  vars:\n    mirror: m.db\n    state_dir: st\n    kind: sim\n"
                 f"    target: {json.dumps(sim.TARGET)}\n"
                 + "  hosts:\n" + "".join(f"    n{i}: {{sim: {{seed: {i}, volumes: {volumes}}}}}\n"
                                          for i in (1, 2, 3)))
    inv = inventory.load(p)
    assert sync(inv).ok
    return inv


def test_sim_preflight_compares_exports_with_the_mirror_and_sees_moves(tmp_path: Path) -> None:
    inv = _sim(tmp_path)
    pk = _pkgs(tmp_path)
    opts = rollout.Options(soak=0)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        p = rollout.plan(inv, inv.mirror, conns, "1.1", f"1.1={pk['1.1'].file}",
                         [f"1.0={pk['1.0'].file}"], opts)
        assert p.refused == []
        ok = {(c.node, c.name): c.message for c in p.checks}
        assert ok[("n1", "exports")] == "200 export(s) match the mirror"
        assert ok[("n1", "identities")] == "identities pinned"
        # a volume created behind the mirror's back, and a move in progress on n2
        conns.get("n1").run(["zfs", "create", "-V", "1G", "tank/late"])
        conn = mirror.connect(inv.mirror)
        conn.execute("INSERT INTO moves (volume, source_node, target_node, target_volume, state,"
                     " created_at, updated_at) VALUES ('tank/x', 'n2', 'n3', 'tank/x', 'base',"
                     " 0, 0)")
        conn.close()
        p = rollout.plan(inv, inv.mirror, conns, "1.1", f"1.1={pk['1.1'].file}",
                         [f"1.0={pk['1.0'].file}"], opts)
    bad = {(c.node, c.name): c.message for c in p.refused}
    assert set(bad) == {("n1", "exports"), ("n2", "moves"), ("n3", "moves")}
    assert "1 export(s) of no volume in the mirror (/dev/zvol/tank/late)" in bad[("n1", "exports")]
    assert "xfleet sync n1" in bad[("n1", "exports")]
    assert bad[("n2", "moves")] == "move(s) 1 in progress"
    with pytest.raises(rollout.RolloutError, match="preflight refused"):
        rollout.start(inv.mirror, p)


@pytest.mark.parametrize("volumes", [50, 2000])
def test_sim_rollout_commands_per_node_do_not_grow_with_volumes(tmp_path: Path,
                                                                volumes: int) -> None:
    inv = _sim(tmp_path, volumes)
    pk = _pkgs(tmp_path)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        p = rollout.plan(inv, inv.mirror, conns, "1.1", f"1.1={pk['1.1'].file}",
                         [f"1.0={pk['1.0'].file}"], rollout.Options(soak=0, serial=["50%"]))
        before = {n: conns.get(n).commands for n in inv.hosts}
        res = rollout.Runner(inv, inv.mirror, conns, rollout.start(inv.mirror, p)).run()
        used = [conns.get(n).commands - before[n] for n in inv.hosts]
        status = [conns.get(n).run(["xfleet-sim-target", "running"]).stdout.strip()
                  for n in inv.hosts]
    assert res.state == "done" and status == ["1.1", "1.1", "1.1"]
    assert [n["batch"] for n in res.nodes] == [0, 1, 1]  # canary, then 50 % of 3 = 2
    # the ok-to-stop checks (zpool status, exports), staging, restart, ready...: a constant.
    # The exports are listed once before the restart: the check's listing feeds the digest
    assert used == [16, 16, 16], used


# The pause must reach the mirror while n1 soaks (a new `xfleet` process: ~1 s here, over 2 s
# on a loaded machine, where a 2 s soak let n2 start first); the test waits out the soak.
SOAK = 10


def test_cli_pause_of_a_running_rollout_then_resume(tmp_path: Path) -> None:
    inv_path = _setup(tmp_path, ["n1", "n2", "n3"])
    pk = _pkgs(tmp_path)
    skip = [a for c in SKIP for a in ("--skip-check", c)]
    argv = [sys.executable, "-m", "xfleet", "--inventory", str(inv_path), "upgrade", "target",
            "1.1", "--package", f"1.1={pk['1.1'].file}", "--rollback-package",
            f"1.0={pk['1.0'].file}", *skip, "--soak", str(SOAK), "--yes"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
    try:
        wait_for(lambda: _state(tmp_path, "n1", "restarts"), "n1 to be upgraded")
        r = _cli(inv_path, "rollouts", "pause", "1")
        assert r.returncode == 0 and "rollout 1: pause requested" in r.stdout, r.stderr
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 4, err
    assert "rollout 1: paused: pause requested by the user" in out
    assert "n1: at 1.1 in" in err and "(1/3 nodes done)" in err  # n1 finished first
    assert _state(tmp_path, "n2", "restarts") == ""
    r = _cli(inv_path, "rollouts", "list")
    assert "paused" in r.stdout and "1/3" in r.stdout
    r = _cli(inv_path, "rollouts", "resume", "1")
    assert r.returncode == 0 and "rollout 1: done" in r.stdout, r.stderr
    assert all(_state(tmp_path, n, "running") == "1.1" for n in ("n1", "n2", "n3"))


def test_demo_fleet_uses_the_simulated_target() -> None:
    demo = inventory.load(ROOT / "inventory" / "demo.yaml")
    want = {k: tuple(v) for k, v in sim.TARGET.items() if k != "driver"}
    assert {h.target.driver for h in demo.hosts.values()} == {"command"}
    assert all(h.target.commands == want for h in demo.hosts.values())
