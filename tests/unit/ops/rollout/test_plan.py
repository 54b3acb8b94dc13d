"""Planning rolling upgrades: batches, versions, the exports digest, the preflight on local and
simulated nodes (its remote commands do not grow with the exports), the demo fleet's target."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ROOT

from unit.ops.rollout.conftest import (
    SKIP,
    make_packages,
    node_state,
    rollouts_cli,
    setup_nodes,
    sim_fleet,
)
from xfleet import mirror, sim
from xfleet.core.errors import UsageError
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.ops import rollout
from xfleet.ops.target import Export


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


def test_cli_preflight_refuses_downgrade_and_missing_rollback_package(tmp_path: Path) -> None:
    inv_path = setup_nodes(tmp_path, ["n1", "n2"], "1.1")
    pk = make_packages(tmp_path)
    skip = [a for c in SKIP for a in ("--skip-check", c)]
    p = rollouts_cli(inv_path, "upgrade", "target", "1.0", "--package", f"1.0={pk['1.0'].file}",
             *skip, "--yes")
    assert p.returncode != 0 and "would downgrade n1 from 1.1" in p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    p = rollouts_cli(inv_path, "upgrade", "target", "1.2", "--package", f"1.2={pk['1.2'].file}",
             *skip, "--yes")
    assert p.returncode != 0 and "no package of 1.1" in p.stdout + p.stderr
    assert node_state(tmp_path, "n1", "restarts") == ""
    # a dry run with everything in place: checks and batches, nothing changed
    p = rollouts_cli(inv_path, "upgrade", "target", "1.2", "--package", f"1.2={pk['1.2'].file}",
             "--rollback-package", f"1.1={pk['1.1'].file}", *skip, "--dry-run", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["batches"] == [["n1"], ["n2"]] and d["refused"] == []
    assert {c["name"] for c in d["checks"]} >= {"reachable", "version", "rollback", "moves"}
    assert not (tmp_path / "stage").exists()
    # the real thing, then list/show
    p = rollouts_cli(inv_path, "upgrade", "target", "1.2", "--package", f"1.2={pk['1.2'].file}",
             "--rollback-package", f"1.1={pk['1.1'].file}", *skip, "--soak", "0", "--yes")
    assert p.returncode == 0, p.stderr
    assert "rollout 1: done" in p.stdout
    p = rollouts_cli(inv_path, "rollouts", "list", "--json")
    assert json.loads(p.stdout)[0]["nodes_done"] == 2
    p = rollouts_cli(inv_path, "rollouts", "show", "1")
    assert p.returncode == 0 and "n2" in p.stdout and "at 1.2 in" in p.stdout
    p = rollouts_cli(inv_path, "rollouts", "resume", "1")
    assert p.returncode != 0 and "rollout 1 is done" in p.stderr and "Traceback" not in p.stderr
    p = rollouts_cli(inv_path, "upgrade", "target", "1.2", "--package", "/nonexistent.deb", "--yes")
    assert p.returncode == 2 and "does not exist" in p.stderr
    p = rollouts_cli(inv_path, "target", "status", "--json")
    assert p.returncode == 0, p.stderr
    assert [(r["node"], r["installed"], r["running"], r["exports"]) for r in
            json.loads(p.stdout)] == [("n1", "1.2", "1.2", 1), ("n2", "1.2", "1.2", 1)]


@pytest.mark.parametrize("volumes", [1, 400])
def test_remote_commands_do_not_grow_with_the_exports(tmp_path: Path, volumes: int) -> None:
    nodes = ["n1", "n2"]
    inv_path = setup_nodes(tmp_path, nodes)
    for n in nodes:
        (tmp_path / "target" / f"{n}.volumes").write_text(f"{volumes}\n")
    inv = inventory.load(inv_path)
    o = rollout.Options(soak=0, ready_timeout=5, skip=SKIP).validate()
    rid = rollout.create(inv.mirror, "1.1", nodes, make_packages(tmp_path), o)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        res = rollout.Runner(inv, inv.mirror, conns).run(rid)
        counts = [conns.get(n).commands for n in nodes]
    assert res.state == "done"
    # per node: versions (2); digest, copy and check of two packages (6); versions again (2);
    # exports before and after (2); restart, ready, still ready after the soak (3)
    assert counts == [15, 15], counts


def test_sim_preflight_compares_exports_with_the_mirror_and_sees_moves(tmp_path: Path) -> None:
    inv = sim_fleet(tmp_path)
    pk = make_packages(tmp_path)
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


def test_demo_fleet_uses_the_simulated_target() -> None:
    demo = inventory.load(ROOT / "inventory" / "demo.yaml")
    want = {k: tuple(v) for k, v in sim.TARGET.items() if k != "driver"}
    assert {h.target.driver for h in demo.hosts.values()} == {"command"}
    assert all(h.target.commands == want for h in demo.hosts.values())
