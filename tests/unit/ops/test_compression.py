"""Compression policy: loading and validation (file:line), the plan in SQL, applying in
batches (commands counted), the audit, idempotence, resume, and the CLI (the runs on both
engines of the mirror, recording who applied them)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run_cli, write_sim_inventory

from xfleet import mirror
from xfleet.core.errors import InventoryError, TransportError, UsageError
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.ops import compression
from xfleet.ops.compression import PolicyError, parse_policy
from xfleet.ops.sync import sync
from xfleet.remote.transport import Transport
from xfleet.sim import SimTransport

POLICY = """\
rules:
  - name: zone-b
    match: {labels: {zone: b}, volsize: ">=1G"}
    compression: zstd-9
  - name: legacy
    match: {name: "tank/t000*/*"}
    compression: gzip
  - name: default
    compression: zstd
"""


def err(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "p.yaml")
    return e.value


# -- the policy file ------------------------------------------------------------------------


def test_the_example_policy_loads_and_the_demo_inventory_points_at_it() -> None:
    inv = inventory.load(ROOT / "inventory" / "demo.yaml")
    assert inv.compression_policy == ROOT / "inventory" / "compression.yaml"
    pol = compression.load_policy(inv.compression_policy)
    assert [r.name for r in pol.rules] == ["hot-tenants", "cold-zone-big", "default"]
    assert pol.rules[1].match == {"labels": {"zone": "b"}, "volsize": [(">=", 8 << 30)]}


def test_policy_values_and_matches_are_parsed() -> None:
    pol = parse_policy(POLICY, "p.yaml")
    assert [(r.name, r.compression, r.line) for r in pol.rules] == [
        ("zone-b", "zstd-9", 2), ("legacy", "gzip", 5), ("default", "zstd", 8)]
    assert pol.rules[1].match == {"name": ["tank/t000*/*"]}


@pytest.mark.parametrize("text, line, words", [
    ("rules:\n  - compression: lz5\n", 2, "'lz5' is not a compression setting"),
    ("rules:\n  - compression: on\n", 2, "not a compression setting"),
    ("rules:\n  - compression: zstd-20\n", 2, "not a compression setting"),
    ("rules:\n  - compression: zstd-fast-11\n", 2, "not a compression setting"),
    ("rules:\n  - name: a\n    match: {nodes: n1}\n    compression: lz4\n", 3,
     "unknown match key 'nodes'"),
    ("rules:\n  - name: a\n    match:\n      volsize: big\n    compression: lz4\n", 4,
     "not a size condition"),
    ("rules:\n  - name: a\n    match: {properties: {tier: cold}}\n    compression: lz4\n", 3,
     "not a user property"),
    ("rules:\n  - name: a\n    compression: lz4\n  - name: a\n    compression: off\n", 4,
     "used twice"),
    ("rules:\n  - name: all\n    compression: lz4\n  - name: b\n    match: {node: n1}\n"
     "    compression: off\n", 4, "can never match"),
    ("rules:\n  - name: a\n    compresion: lz4\n", 3, "unknown key 'compresion'"),
    ("rules:\n  - name: a\n", 2, "has no 'compression'"),
    ("rules: []\n", 1, "non-empty list"),
    ("rule:\n  - compression: lz4\n", 1, "'rules:'"),
    ("rules:\n  - compression: lz4\n    compression: off\n", 3, "duplicate key"),
    ("rules:\n  - {compression: lz4\n", 3, "YAML syntax error"),
])
def test_policy_errors_name_the_line_and_say_what_to_do(text: str, line: int,
                                                        words: str) -> None:
    e = err(text)
    assert e.where == f"p.yaml:{line}", (e.where, e.message)
    assert words in str(e)


def test_compression_values_canonical_and_hints() -> None:
    assert compression.canonical("zstd") == "zstd-3"
    assert compression.canonical("gzip") == "gzip-6"
    assert compression.canonical("on") == "lz4"
    assert compression.validate_compression("zstd-fast-1000") == "zstd-fast-1000"
    with pytest.raises(UsageError) as e:
        compression.validate_compression("on")
    assert "write lz4" in str(e.value)


def test_inventory_compression_policy_var_is_validated(tmp_path: Path) -> None:
    p = write_sim_inventory(tmp_path / "f.yaml", {"n1": {"volumes": 5}},
                            extra="    compression_policy: [x]")
    with pytest.raises(InventoryError) as e:
        inventory.load(p)
    assert "compression_policy must be a path" in str(e.value) and e.value.where == f"{p}:6"


# -- plan and apply on a simulated fleet ------------------------------------------------------


def make_fleet(tmp_path: Path, mirror_at: str | None = None) -> inventory.Inventory:
    """n1 (400 volumes) and n3 (300), synced into the mirror at `mirror_at` (an SQLite path or
    a PostgreSQL URL; default mirror.db beside the inventory); the policy in policy.yaml."""
    path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 1, "volumes": 400},
                                                          "n3": {"seed": 3, "volumes": 300}})
    if mirror_at is not None:
        text = path.read_text()
        assert "mirror: mirror.db\n" in text, text
        path.write_text(text.replace("mirror: mirror.db\n", f"mirror: {mirror_at}\n"))
    (tmp_path / "policy.yaml").write_text(POLICY)
    inv = inventory.load(path)
    assert sync(inv).ok
    return inv


@pytest.fixture
def fleet(tmp_path: Path) -> inventory.Inventory:
    return make_fleet(tmp_path)


@pytest.fixture
def fleet_at(tmp_path: Path, mirror_at: str) -> inventory.Inventory:
    """The same fleet on each engine of the mirror (SQLite, PostgreSQL)."""
    return make_fleet(tmp_path, mirror_at)


def expected(conn: Any, pol: compression.Policy, inv: inventory.Inventory) -> dict[str, str]:
    """The plan computed the slow way, row by row in Python (small fleet only)."""
    out = {}
    for r in conn.execute("SELECT node, name, volsize, compression FROM datasets "
                          "WHERE type = 'volume'"):
        labels = inv.hosts[r["node"]].labels
        for rule in pol.rules:
            m = rule.match
            if "labels" in m and any(labels.get(k) != v for k, v in m["labels"].items()):
                continue
            if "volsize" in m and not all(r["volsize"] >= s for _, s in m["volsize"]):
                continue
            if "name" in m and not any(Path(r["name"]).match(g) and r["name"].count("/") ==
                                       g.count("/") for g in m["name"]):
                continue
            if compression.canonical(rule.compression) != compression.canonical(
                    r["compression"]):
                out[f"{r['node']}:{r['name']}"] = rule.compression
            break
    return out


def test_plan_matches_a_row_by_row_evaluation(fleet: inventory.Inventory,
                                              tmp_path: Path) -> None:
    conn = mirror.connect(fleet.mirror)
    pol = compression.load_policy(tmp_path / "policy.yaml")
    p = compression.plan(conn, pol, fleet, batch_size=50)
    want = expected(conn, pol, fleet)
    got = {f"{c['node']}:{c['name']}": c["new"]
           for c in compression.changes(conn, p, limit=None, order="name")}
    assert got == want and len(got) > 100
    assert p.volumes == len(want)
    assert {g.rule for g in p.groups} == {"zone-b", "legacy", "default"}
    per_setting: dict[tuple[str, str], int] = {}
    for g in p.groups:
        per_setting[(g.node, g.new)] = per_setting.get((g.node, g.new), 0) + g.volumes
    assert p.commands == sum(math.ceil(n / 50) for n in per_setting.values())
    # volumes already at the canonical equivalent are not changed (zstd == zstd-3)
    conn.execute("UPDATE datasets SET compression = 'zstd-3' WHERE type = 'volume' AND "
                 "node = 'n1' AND name NOT GLOB 'tank/t000*/*'")
    p2 = compression.plan(conn, pol, fleet)
    assert not [g for g in p2.groups if g.node == "n1" and g.rule == "default"]


def test_apply_batches_few_commands_per_node_audits_and_is_idempotent(
        fleet_at: inventory.Inventory, tmp_path: Path) -> None:
    fleet = fleet_at
    conn = mirror.connect(fleet.mirror)
    pol = compression.load_policy(tmp_path / "policy.yaml")
    p = compression.plan(conn, pol, fleet, batch_size=100)
    run = compression.create_run(conn, p)
    assert run.state == "planned" and run.changes == p.volumes
    with Connections(fleet.hosts, state_dir=fleet.state_dir) as cs:
        done, per_node = compression.Applier(fleet.mirror, cs).run(run.id)
        counts = {n: cs.commands(n) for n in ("n1", "n3")}
    assert done.state == "done" and done.done == p.volumes and done.failed == 0
    for node in ("n1", "n3"):  # one zfs set per (setting, 100 volumes): not one per volume
        want = p.commands_by_node()[node]
        assert counts[node] == want < sum(g.volumes for g in p.groups if g.node == node) / 50
    # the nodes really changed (asked the simulated nodes, not the mirror)
    sample = conn.execute("SELECT node, name, new FROM compression_changes WHERE run = ? "
                          "ORDER BY id LIMIT 5", (run.id,)).fetchall()
    for node, name, new in sample:
        t = SimTransport(fleet.hosts[node], state_dir=fleet.state_dir)
        value = t.run(["zfs", "get", "-H", "-o", "value", "compression", name]).stdout.strip()
        assert compression.canonical(value) == compression.canonical(new)
    # the audit: who, when, old -> new, batch for every volume; the mirror follows
    rows = list(compression.audit(conn, run_id=run.id, limit=100000))
    assert len(rows) == p.volumes and all(r["state"] == "done" and r["operator"] and r["at"]
                                          and r["batch"] for r in rows)
    assert len({r["batch"] for r in rows}) == p.commands
    assert compression.plan(conn, pol, fleet).volumes == 0
    assert sync(fleet).ok  # the nodes agree: a fresh listing gives the same empty plan
    assert compression.plan(conn, pol, fleet).volumes == 0


class Flaky(Transport):
    """A transport whose commands fail (a node that went away)."""

    kind = "flaky"

    def _stream(self, argv: list[str], timeout: float, stdin: bytes | None,
                status: list[int], err: list[str]) -> Any:
        raise TransportError("connection lost", where=self.node)
        yield ""


def test_a_failed_node_keeps_its_pending_changes_and_the_run_resumes(
        fleet_at: inventory.Inventory, tmp_path: Path) -> None:
    fleet = fleet_at
    conn = mirror.connect(fleet.mirror)
    pol = compression.load_policy(tmp_path / "policy.yaml")
    run = compression.create_run(conn, compression.plan(conn, pol, fleet))
    with Connections(fleet.hosts, state_dir=fleet.state_dir) as cs:
        cs.use("n3", Flaky("n3"))
        first, per_node = compression.Applier(fleet.mirror, cs).run(run.id)
    assert first.state == "failed" and "n3" in (first.error or "")
    pending = conn.execute("SELECT DISTINCT node FROM compression_changes WHERE run = ? AND "
                           "state = 'pending'", (run.id,)).fetchall()
    assert [r[0] for r in pending] == ["n3"]
    with Connections(fleet.hosts, state_dir=fleet.state_dir) as cs:
        again, _ = compression.Applier(fleet.mirror, cs).run(run.id)
        assert cs.commands("n1") == 0  # n1 was done: nothing re-sent
    assert again.state == "done" and again.done == again.changes


def test_a_volume_gone_since_the_sync_fails_alone(fleet: inventory.Inventory,
                                                  tmp_path: Path) -> None:
    conn = mirror.connect(fleet.mirror)
    pol = parse_policy("rules:\n  - name: n1\n    match: {node: n1}\n    compression: off\n")
    p = compression.plan(conn, pol, fleet)
    victim = next(compression.changes(conn, p, limit=1, order="name"))["name"]
    SimTransport(fleet.hosts["n1"], state_dir=fleet.state_dir).run(
        ["zfs", "destroy", "-r", victim])
    run = compression.create_run(conn, p)
    with Connections(fleet.hosts, state_dir=fleet.state_dir) as cs:
        done, _ = compression.Applier(fleet.mirror, cs).run(run.id)
        assert cs.commands("n1") == 2  # the batch, then one zfs get to see what took
    assert done.failed == 1 and done.done == p.volumes - 1
    bad = list(compression.audit(conn, volume=victim))
    assert bad[0]["state"] == "failed" and "dataset" in bad[0]["error"]


# -- the CLI --------------------------------------------------------------------------------


def cli(inv: inventory.Inventory, *args: str) -> Any:
    return run_cli("-i", str(inv.path), *args)


def test_cli_plan_dry_run_apply_audit(fleet_at: inventory.Inventory, tmp_path: Path) -> None:
    fleet = fleet_at
    pol = str(tmp_path / "policy.yaml")
    r = cli(fleet, "compression", "plan", "--policy", pol, "--json")
    assert r.code == 0, r.err
    plan = r.json()
    assert plan["volumes"] > 100 and "rewritten" in plan["note"]
    r = cli(fleet, "compression", "plan", "--policy", pol)
    assert r.code == 0 and "needs a rewrite" in r.out and "zone-b" in r.out
    r = cli(fleet, "compression", "apply", "--policy", pol, "--dry-run", "--json",
            "--batch", "200")
    cmds = r.json()["commands"]
    assert all(c["argv"][:2] == ["zfs", "set"] and len(c["argv"]) <= 203 for c in cmds)
    assert sum(len(c["argv"]) - 3 for c in cmds) == plan["volumes"]
    r = cli(fleet, "compression", "apply", "--policy", pol)
    assert r.code == 2 and "without confirmation" in r.err  # not a tty, no --yes
    r = run_cli("-i", str(fleet.path), "--reason", "INC-42", "compression", "apply",
                "--policy", pol, "--yes", "--json", env={"XFLEET_OPERATOR": "alice"})
    assert r.code == 0, f"compression apply: exit {r.code}\n{r.err}"
    out = r.json()
    assert out["run"]["state"] == "done" and out["run"]["done"] == plan["volumes"]
    assert (out["run"]["operator"], out["run"]["operator_reason"]) == ("alice", "INC-42")
    r = cli(fleet, "compression", "apply", "--policy", pol, "--yes")
    assert r.code == 0 and "nothing to change" in r.out
    r = cli(fleet, "compression", "audit", "--run", str(out["run"]["id"]), "--csv",
            "--limit", "5")
    assert r.out.splitlines()[0].startswith("run,operator,at,node,name,old,new")
    assert len(r.out.splitlines()) == 6
    assert {line.split(",")[1] for line in r.out.splitlines()[1:]} == {"alice"}, r.out
    runs = cli(fleet, "compression", "runs", "--json").json()
    assert [(x["state"], x["operator"], x["operator_reason"]) for x in runs] == [
        ("done", "alice", "INC-42")], runs


def test_cli_errors_are_clear(fleet: inventory.Inventory, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: x\n    compression: lz5\n")
    r = cli(fleet, "compression", "plan", "--policy", str(bad))
    assert r.code == 2 and f"{bad}:3" in r.err and "Traceback" not in r.err
    r = cli(fleet, "compression", "plan")
    assert r.code == 2 and "no compression policy" in r.err
    r = cli(fleet, "compression", "estimate")
    assert r.code == 2 and "which volumes" in r.err
    r = cli(fleet, "compression", "estimate", "tank/x;rm")
    assert r.code == 2 and "invalid ZFS name" in r.err
    r = cli(fleet, "compression", "apply", "--resume", "99", "--yes")
    assert r.code == 2 and "no compression run 99" in r.err


def test_cli_estimate_then_plan_shows_estimated_effects(fleet: inventory.Inventory,
                                                        tmp_path: Path) -> None:
    pol = str(tmp_path / "policy.yaml")
    r = cli(fleet, "compression", "estimate", "--policy", pol, "--where", "compression=off",
            "--limit", "5", "--blocks", "24", "--json")
    assert r.code == 0, r.err
    est = r.json()["estimates"]
    assert {e["algorithm"] for e in est} >= {"lz4", "zstd-3", "zstd-9", "gzip-6", "off"}
    assert len({e["volume"] for e in est}) == 5
    plan = cli(fleet, "compression", "plan", "--policy", pol, "--json").json()
    assert sum(g["estimated"] for g in plan["groups"]) == 5
    top = plan["changes"][0]
    assert top["estimated_ratio"] and top["referenced_after"] < top["referenced"]
    text = cli(fleet, "compression", "estimate", "--where", "compression=off", "--limit", "1",
               "-a", "lz4").out
    assert "holes" in text and "rewrite" in text


def test_help_has_examples() -> None:
    for args in (["compression", "plan"], ["compression", "apply"], ["compression", "estimate"],
                 ["compression", "audit"], ["compression", "runs"], ["report", "compression"]):
        r = run_cli(*args, "--help")
        assert r.code == 0 and "Example" in r.out, args
