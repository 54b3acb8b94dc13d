"""Playbooks on a simulated fleet: validation errors with file:line, --check changes nothing,
loops/conditions/registers, the example playbooks, the journal, and a SIGKILLed run resumed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, wait_for, write_sim_inventory

from xfleet import mirror, playbook
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport

Fleet = tuple[inventory.Inventory, Path, SimTransport]
EXAMPLES = ROOT / "playbooks"


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"volumes": 60, "seed": 4},
                                                             "n2": {"volumes": 20, "seed": 5}})
    inv = inventory.load(inv_path)
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    t.run(["zfs", "create", "-p", "tank/acme"])
    for name, size in (("db", "1G"), ("cache", "2G"), ("tiny", "512M")):
        t.run(["zfs", "create", "-s", "-V", size, "-o", "xfleet:tenant=acme",
               f"tank/acme/{name}"])
    assert sync(inv).ok
    return inv, inv_path, t


def _write(tmp_path: Path, text: str, name: str = "pb.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _invalid(tmp_path: Path, text: str) -> playbook.PlaybookError:
    with pytest.raises(playbook.PlaybookError) as exc:
        playbook.load(_write(tmp_path, text))
    return exc.value


@pytest.mark.parametrize("text,line,message", [
    ("- snapshto: {targets: [a], name: x}\n", 1, "unknown step kind 'snapshto'"),
    ("- sync: {}\n- name: x\n  snapshot: {targets: [tank/a], nam: x}\n", 3,
     "unknown field 'nam'"),
    ("- sync: {}\n- snapshot: {targets: [tank/a]}\n", 2, "missing field 'name'"),
    ("- sync: {}\n- sync: {full: 3}\n", 2, "full must be true/false"),
    ("- sync: {}\n-   snapshot:\n      targets: [\"{{ vols }}\"]\n      name: x\n", 3,
     "undefined variable 'vols'"),
    ("- query: {sql: SELECT 1}\n  register: rows\n- name: loop\n  for_each: \"{{ row }}\"\n"
     "  sync: {}\n", 4, "undefined variable 'row'"),
    ("- sync: {}\n  when: \"{{ nope }} > 1\"\n", 2, "undefined variable 'nope'"),
    ("- query: {sql: SELECT 1}\n", 1, "add 'register: NAME'"),
    ("- sync: {}\n  snapshot: {targets: [a], name: x}\n", 2, "several step kinds"),
    ("- sync: {}\n  wehn: x\n", 2, "unknown step field 'wehn'"),
    ("- compression_apply: {polcy: x}\n", 1, "unknown field 'polcy'"),
    ("- upgrade_target: {version: \"1.1\"}\n", 1, "missing field 'package'"),
    ("- sync: {}\n- sync: [\n", 3, "YAML syntax error"),
    ("- set: {targets: [tank/a], properties: {compresion: lz4}}\n", 1,
     "unknown property 'compresion'"),
    ("- destroy: {targets: [tank/a], select: {tenant: x}}\n", 1, "exactly one of"),
    ("- sync: {}\n  concurrency: 0\n", 2, "concurrency"),
    ("- sync: {}\n- snapshot: {targets: [tank/a], name: \"{{ x y }}\"}\n", 2,
     "cannot read the template"),
    ("[]\n", 1, "non-empty list of steps"),
    ("name: x\nsteps:\n  - sync: {}\nextra: 1\n", 4, "unknown playbook key"),
])
def test_invalid_playbooks_name_file_and_line(tmp_path: Path, text: str, line: int,
                                              message: str) -> None:
    err = _invalid(tmp_path, text)
    assert err.where == f"{tmp_path / 'pb.yaml'}:{line}", str(err)
    assert message in str(err)


def test_variables_from_vars_register_and_command_line(tmp_path: Path) -> None:
    text = ("vars: {a: 1}\nsteps:\n  - query: {sql: \"SELECT {{ a }} + {{ b }} AS n\"}\n"
            "    register: r\n  - assert: {that: \"{{ r.0.n }} = 3\"}\n")
    with pytest.raises(playbook.PlaybookError, match="undefined variable 'b'"):
        playbook.load(_write(tmp_path, text))
    pb = playbook.load(_write(tmp_path, text), {"b": "2"})
    assert pb.vars == {"a": 1, "b": "2"}


def test_templates_keep_types_and_bind_sql() -> None:
    v = {"rows": [{"name": "tank/a", "n": 3}], "s": "x'; DROP TABLE datasets; --"}
    assert playbook.render("{{ rows }}", v) == v["rows"]
    assert playbook.render("{{ rows.0.name }}@snap", v) == "tank/a@snap"
    sql, params = playbook.bind("SELECT * FROM datasets WHERE name = {{ s }}", v)
    assert sql == "SELECT * FROM datasets WHERE name = ?" and params == [v["s"]]
    with pytest.raises(playbook.PlaybookError, match="'nope' is not in the value"):
        playbook.render("{{ rows.0.nope }}", v)


def _play(inv: inventory.Inventory, path: Path, *, check: bool = False,
          variables: dict[str, str] | None = None) -> playbook.PlayReport:
    pb = playbook.load(path, variables)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        return playbook.play(inv, inv.mirror, pb, conns, check=check)


def _fleet_state(inv: inventory.Inventory, t: SimTransport) -> tuple[object, ...]:
    listing = t.run(["zfs", "list", "-H", "-o", "name,origin,compression", "-t", "all"]).stdout
    conn = mirror.connect(inv.mirror)
    rows = conn.execute("SELECT count(*), sum(length(name)) FROM datasets").fetchone()
    return listing, tuple(rows)


def test_loop_when_concurrency_register_and_run(fleet: Fleet, tmp_path: Path) -> None:
    inv, _, t = fleet
    text = """
name: branch big volumes
vars: {suffix: qa}
steps:
  - query:
      sql: >
        SELECT node, name, volsize FROM datasets
        WHERE tenant = {{ tenant }} AND type = 'volume' ORDER BY name
    register: vols
  - name: branch each big one
    for_each: "{{ vols }}"
    as: v
    when: "{{ v.volsize }} >= 1073741824"
    concurrency: 2
    clone: {source: "{{ v.name }}", target: "{{ v.name }}-{{ suffix }}", node: "{{ v.node }}"}
  - name: zfs version everywhere
    run: {argv: [zfs, version], nodes: [n1, n2]}
    register: versions
  - assert:
      that: "(SELECT count(*) FROM datasets WHERE name GLOB 'tank/acme/*-qa') = 2"
      message: two branches expected
"""
    path = _write(tmp_path, text)
    before = _fleet_state(inv, t)
    check = _play(inv, path, check=True, variables={"tenant": "acme"})
    assert check.ok, check.to_dict()
    cmds = [c for s in check.steps for c in s.commands]
    assert sum("zfs clone" in c for c in cmds) == 2
    assert sum("zfs snapshot" in c for c in cmds) == 2  # a branch point each
    assert "n1: zfs version" in cmds and "n2: zfs version" in cmds
    assert _fleet_state(inv, t) == before  # --check changed nothing
    conn = mirror.connect(inv.mirror)
    assert conn.execute("SELECT count(*) FROM play_runs").fetchone()[0] == 0
    report = _play(inv, path, variables={"tenant": "acme"})
    assert report.ok, report.to_dict()
    names = [r[0] for r in conn.execute("SELECT name FROM datasets WHERE origin IS NOT NULL "
                                        "AND name GLOB 'tank/acme/*' ORDER BY name")]
    assert names == ["tank/acme/cache-qa", "tank/acme/db-qa"]
    shown = playbook.show(conn, report.run_id or 0)
    assert [s["state"] for s in shown["steps"]] == ["done"] * 4
    items = conn.execute("SELECT item, state FROM play_items WHERE step = 1 ORDER BY item"
                         ).fetchall()
    assert [tuple(i) for i in items] == [("n1:tank/acme/cache", "done"),
                                         ("n1:tank/acme/db", "done")]


@pytest.mark.parametrize(("argv", "says"), [
    ("[]", "argv is empty"),
    ("[echo, null]", "argv holds nothing"),
    ("[echo, {a: 1}]", "argv holds a mapping"),
])
def test_a_run_step_refuses_an_argv_it_cannot_run_as_written(
        fleet: Fleet, tmp_path: Path, argv: str, says: str) -> None:
    inv, _, _ = fleet
    path = tmp_path / "run.yaml"
    path.write_text(f"name: bad run\nsteps:\n  - run: {{argv: {argv}, nodes: [n1]}}\n")
    for check in (True, False):
        report = _play(inv, path, check=check)
        assert report.state == "failed", report
        step = report.steps[0]
        assert step.error and says in step.error, step.error
        assert not step.commands  # nothing ran, and "None" was never an argument


def test_failed_step_stops_the_run_and_resume_skips_finished_steps(fleet: Fleet,
                                                                  tmp_path: Path) -> None:
    inv, _, t = fleet
    text = """
steps:
  - snapshot: {targets: [tank/acme/db], name: one}
  - assert:
      that: "(SELECT count(*) FROM datasets WHERE name = 'tank/acme/go') = 1"
      message: not yet
  - snapshot: {targets: [tank/acme/db], name: two}
"""
    path = _write(tmp_path, text)
    first = _play(inv, path)
    assert first.state == "failed" and first.steps[1].error == "not yet"
    conn = mirror.connect(inv.mirror)
    assert conn.execute("SELECT state FROM play_runs").fetchone()[0] == "failed"
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/acme/go"])
    assert sync(inv, nodes=["n1"]).ok
    pb = playbook.load(path)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        again = playbook.play(inv, inv.mirror, pb, conns, resume=first.run_id)
        assert again.ok and [s.state for s in again.steps] == ["resumed", "done", "done"]
        with pytest.raises(playbook.PlaybookError, match="done already"):
            playbook.play(inv, inv.mirror, pb, conns, resume=first.run_id)
    snaps = conn.execute("SELECT argv FROM lifecycle_log WHERE op = 'snapshot'").fetchall()
    assert len(snaps) == 2  # @one once, then @two


def test_resume_refuses_a_changed_playbook(fleet: Fleet, tmp_path: Path) -> None:
    inv, _, _ = fleet
    path = _write(tmp_path, "- assert: {that: \"0\", message: stop}\n")
    first = _play(inv, path)
    assert first.state == "failed"
    path.write_text("- sync: {}\n")
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns, \
            pytest.raises(playbook.PlaybookError, match="changed since run"):
        playbook.play(inv, inv.mirror, playbook.load(path), conns, resume=first.run_id)


def test_example_playbooks_check_and_run_on_the_sim(fleet: Fleet, tmp_path: Path) -> None:
    inv, inv_path, t = fleet
    report = tmp_path / "nightly.html"
    base = ("-i", str(inv_path), "play")
    nightly = str(EXAMPLES / "nightly-snapshot.yaml")
    r = run_cli(*base, nightly, "--check", "--var", "tenant=acme", "--var", f"report={report}")
    assert r.code == 0, r.out + r.err
    assert "zfs snapshot tank/acme/cache@nightly-" in r.out and "nothing was changed" in r.out
    assert not report.exists()  # --check writes nothing
    r = run_cli(*base, nightly, "--var", "tenant=acme", "--var", f"report={report}", "--json")
    assert r.code == 0, r.out + r.err
    assert r.json()["state"] == "done"
    assert "tank/acme/db" in report.read_text() and report.read_text().startswith("<!")
    # the old-snapshot sweep: everything named before the cut-off goes, tonight's stay
    t.run(["zfs", "snapshot", "tank/acme/db@nightly-20200101"])
    assert sync(inv, nodes=["n1"]).ok
    r = run_cli(*base, nightly, "--var", "tenant=acme", "--var", "keep_after=nightly-99999999",
                "--var", f"report={report}", "--json")
    assert r.code == 0, r.out + r.err
    conn = mirror.connect(inv.mirror)
    assert conn.execute("SELECT count(*) FROM datasets WHERE name GLOB 'tank/acme/*@nightly-*'"
                        ).fetchone()[0] == 3  # tonight's three; @nightly-20200101 is gone
    branch = str(EXAMPLES / "branch-tenant.yaml")
    args = ("--var", "volume=tank/acme/db", "--var", "branch=qa")
    r = run_cli(*base, branch, "--check", *args)
    assert r.code == 0, r.out + r.err
    assert "n1: zfs clone -o xfleet:env=test tank/acme/db@branch-qa tank/acme/db-qa" in r.out
    r = run_cli(*base, branch, *args)
    assert r.code == 0, r.out + r.err
    assert conn.execute("SELECT origin FROM datasets WHERE name = 'tank/acme/db-qa'"
                        ).fetchone()[0] == "tank/acme/db@branch-qa"
    pkg = tmp_path / "t_1.1.pkg"
    pkg.write_text("1.1")
    r = run_cli(*base, str(EXAMPLES / "rolling-upgrade.yaml"), "--check",
                "--var", f"package=1.1={pkg}", "--var", f"previous=1.0={pkg}")
    # the simulated fleet has no target daemon: the step says so, with file:line
    assert r.code != 0 and "no node in the inventory has a target" in r.out + r.err
    assert "(upgrade_target, line 18)" in r.out
    r = run_cli("-i", str(inv_path), "plays", "list", "--json")
    assert [x["state"] for x in r.json()] == ["done", "done", "done"]


def test_drain_example_in_check_mode(tmp_path: Path) -> None:
    # the simulator has no data path: the drain runs for real in the lab
    # (tests/lab/test_playbooks_real.py); here its plan, on a node whose volumes are its own
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"volumes": 10, "seed": 1},
                                                             "n3": {"volumes": 1, "seed": 3}})
    inv = inventory.load(inv_path)
    t = SimTransport(inv.hosts["n3"], state_dir=inv.state_dir)
    t.run(["zfs", "destroy", "-r", "tank/t0000"])
    t.run(["zfs", "create", "-p", "tank/only3"])
    for i in range(3):
        t.run(["zfs", "create", "-s", "-V", "1G", f"tank/only3/v{i}"])
    assert sync(inv).ok
    r = run_cli("-i", str(inv_path), "play", str(EXAMPLES / "drain-node.yaml"), "--check",
                "--var", "node=n3")
    assert r.code == 0, r.out + r.err
    assert r.out.count("move tank/only3/v") == 3 and "-> n1:tank/only3/v0" in r.out


def test_sigkilled_run_resumes(fleet: Fleet, tmp_path: Path) -> None:
    inv, inv_path, t = fleet
    path = _write(tmp_path, """
steps:
  - snapshot: {targets: [tank/acme/db], name: before}
  - wait:
      that: "(SELECT count(*) FROM datasets WHERE name = 'tank/acme/go') > 0"
      sync: [n1]
      interval: 0.2
      timeout: 300
  - clone: {source: tank/acme/db@before, target: tank/acme/db-after}
""")
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "xfleet", "-i", str(inv_path), "play",
                             str(path)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    conn = mirror.connect(inv.mirror)

    def step_state() -> str | None:
        try:
            row = conn.execute("SELECT state FROM play_steps WHERE run = 1 AND idx = 1"
                               ).fetchone()
        except sqlite3.OperationalError:  # the play has not created its tables yet
            return None
        return row[0] if row else None

    wait_for(lambda: step_state() == "running", "the wait step to run", timeout=120)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    run = conn.execute("SELECT state, pid FROM play_runs WHERE id = 1").fetchone()
    assert tuple(run) == ("running", proc.pid)  # as the crash left it
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/acme/go"])
    r = run_cli("-i", str(inv_path), "play", "--resume", "1", "--json")
    assert r.code == 0, r.out + r.err
    assert [s["state"] for s in r.json()["steps"]] == ["resumed", "done", "done"]
    assert conn.execute("SELECT count(*) FROM lifecycle_log WHERE op = 'snapshot'"
                        ).fetchone()[0] == 1  # not taken twice
    assert conn.execute("SELECT origin FROM datasets WHERE name = 'tank/acme/db-after'"
                        ).fetchone()[0] == "tank/acme/db@before"
    r = run_cli("-i", str(inv_path), "plays", "show", "1")
    assert r.code == 0 and "done" in r.out


def test_set_resize_move_steps(tmp_path: Path) -> None:
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"volumes": 10, "seed": 1},
                                                             "n3": {"volumes": 1, "seed": 3}})
    inv = inventory.load(inv_path)
    t = SimTransport(inv.hosts["n3"], state_dir=inv.state_dir)
    t.run(["zfs", "create", "-p", "tank/only3"])
    for i in range(3):
        t.run(["zfs", "create", "-s", "-V", "1G", "-o", "xfleet:tenant=m", f"tank/only3/v{i}"])
    assert sync(inv).ok
    path = _write(tmp_path, """
steps:
  - set: {select: {tenant: m}, properties: {compression: zstd, "xfleet:tier": free}}
  - resize: {select: {tenant: m}, size: +1G}
  - query: {sql: "SELECT node, name FROM datasets WHERE tenant = 'm' ORDER BY name"}
    register: vols
  - name: move them
    for_each: "{{ vols }}"
    move: {volume: "{{ row.name }}", from: "{{ row.node }}", to: n1}
""")
    check = _play(inv, path, check=True)
    assert check.ok, check.to_dict()
    assert check.steps[0].commands == [
        "n3: zfs set compression=zstd xfleet:tier=free tank/only3/v0 tank/only3/v1 "
        "tank/only3/v2"]
    assert check.steps[1].commands == [
        f"n3: zfs set volsize={2 << 30} tank/only3/v0 tank/only3/v1 tank/only3/v2"]
    moves_planned = check.steps[3].commands
    for i in range(3):  # a move planned per row: base snapshot, send, receive on n1
        assert any(c.startswith(f"n3: zfs send -L -c tank/only3/v{i}@") and
                   "n1: zfs receive -s -u" in c for c in moves_planned)
    assert any("zfs receive -s -u" in c for c in moves_planned)
    # for real: set and resize (the simulator has no data path for the moves)
    real = _write(tmp_path, """
steps:
  - set: {select: {tenant: m}, properties: {compression: zstd}}
  - resize: {select: {tenant: m}, size: +1G}
""", "real.yaml")
    assert _play(inv, real).ok
    conn = mirror.connect(inv.mirror)
    assert {tuple(r) for r in conn.execute(
        "SELECT compression, volsize FROM datasets WHERE tenant = 'm'")} == {("zstd", 2 << 30)}


def test_compress_free_tier_example_checks_applies_and_reports_on_the_sim(
        tmp_path: Path) -> None:
    policy = ROOT / "inventory" / "compression.yaml"
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"volumes": 40, "seed": 4},
                                                             "n3": {"volumes": 30, "seed": 6}},
                                   extra=f"    compression_policy: {policy}")
    inv = inventory.load(inv_path)
    assert sync(inv).ok
    report = tmp_path / "free.html"
    args = ("-i", str(inv_path), "play", str(EXAMPLES / "compress-free-tier.yaml"),
            "--var", "tier=tank/t000*/*", "--var", f"report={report}")
    conn = mirror.connect(inv.mirror)

    def settings() -> dict[tuple[str, str], str]:
        return {(r[0], r[1]): r[2] for r in conn.execute(
            "SELECT node, name, compression FROM datasets WHERE type = 'volume' AND "
            "name GLOB 'tank/t000*/*'")}

    before = settings()
    r = run_cli(*args, "--check")
    assert r.code == 0, r.out + r.err
    assert "zfs set compression=" in r.out and settings() == before and not report.exists()
    r = run_cli(*args, "--json")
    assert r.code == 0, r.out + r.err
    assert r.json()["state"] == "done"
    after = settings()
    # tenants t0000-t0099 are hot: the policy says lz4 for them (inventory/compression.yaml)
    assert after and set(after.values()) == {"lz4"} and after != before
    audit = conn.execute("SELECT count(*) FROM compression_changes").fetchone()[0]
    assert audit == sum(1 for v in before.values() if v not in ("lz4", "on"))
    assert "compression" in report.read_text()
    r = run_cli(*args, "--json")  # again: nothing left to change
    assert r.code == 0 and conn.execute("SELECT count(*) FROM compression_changes"
                                        ).fetchone()[0] == audit
