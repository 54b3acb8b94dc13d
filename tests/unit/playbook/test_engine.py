"""The engine on a simulated fleet: validation errors with file:line, variables, loops,
conditions, concurrency and registers, --check changes nothing, the example playbooks. (The
journal and --resume: test_journal.py; each step kind: steps/; templates: test_template.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from unit.playbook.plays import EXAMPLES, Fleet, play_file, write
from xfleet import mirror, playbook
from xfleet.fleet import inventory
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport


def _invalid(tmp_path: Path, text: str) -> playbook.PlaybookError:
    with pytest.raises(playbook.PlaybookError) as exc:
        playbook.load(write(tmp_path, text))
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
        playbook.load(write(tmp_path, text))
    pb = playbook.load(write(tmp_path, text), {"b": "2"})
    assert pb.vars == {"a": 1, "b": "2"}



def _fleet_state(inv: inventory.Inventory, t: SimTransport) -> tuple[object, ...]:
    listing = t.run(["zfs", "list", "-H", "-o", "name,origin,compression", "-t", "all"]).stdout
    conn = mirror.connect(inv.mirror)
    rows = conn.execute("SELECT count(*), sum(length(name)) FROM datasets").fetchone()
    return listing, tuple(rows)


def test_loop_when_concurrency_register_and_run(fleet_at: Fleet, tmp_path: Path) -> None:
    """On both engines of the mirror: the playbook's SQL is written portably (glob() is
    SQLite's function and one of the mirror's on PostgreSQL)."""
    inv, _, t = fleet_at
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
      that: "(SELECT count(*) FROM datasets WHERE glob('tank/acme/*-qa', name)) = 2"
      message: two branches expected
"""
    path = write(tmp_path, text)
    before = _fleet_state(inv, t)
    check = play_file(inv, path, check=True, variables={"tenant": "acme"})
    assert check.ok, check.to_dict()
    cmds = [c for s in check.steps for c in s.commands]
    assert sum("zfs clone" in c for c in cmds) == 2
    assert sum("zfs snapshot" in c for c in cmds) == 2  # a branch point each
    assert "n1: zfs version" in cmds and "n2: zfs version" in cmds
    assert _fleet_state(inv, t) == before  # --check changed nothing
    conn = mirror.connect(inv.mirror)
    assert conn.execute("SELECT count(*) FROM play_runs").fetchone()[0] == 0
    report = play_file(inv, path, variables={"tenant": "acme"})
    assert report.ok, report.to_dict()
    names = [r[0] for r in conn.execute("SELECT name FROM datasets WHERE origin IS NOT NULL "
                                        "AND glob('tank/acme/*', name) ORDER BY name")]
    assert names == ["tank/acme/cache-qa", "tank/acme/db-qa"]
    shown = playbook.show(conn, report.run_id or 0)
    assert [s["state"] for s in shown["steps"]] == ["done"] * 4
    items = conn.execute("SELECT item, state FROM play_items WHERE step = 1 ORDER BY item"
                         ).fetchall()
    assert [tuple(i) for i in items] == [("n1:tank/acme/cache", "done"),
                                         ("n1:tank/acme/db", "done")]


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

