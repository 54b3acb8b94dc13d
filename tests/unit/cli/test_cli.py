"""The CLI as a user drives it: JSON output, clear errors, and the mirror left intact."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Result, write_sim_inventory

Cli = Callable[..., Result]


def digest(db: Path) -> str:
    conn = sqlite3.connect(db)
    h = hashlib.sha256()
    for table in ("nodes", "pools", "datasets"):
        for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
            h.update(repr(row).encode())
    return h.hexdigest()


@pytest.fixture
def synced(sim_fleet: Path, cli: Cli) -> Path:
    r = cli("-i", str(sim_fleet), "sync", "--json")
    assert r.code == 0, r.err
    return sim_fleet


def test_sync_json_report(sim_fleet: Path, cli: Cli) -> None:
    r = cli("-i", str(sim_fleet), "sync", "--json")
    assert r.code == 0, r.err
    rep = r.json()
    assert rep["ok"] is True
    assert {n["node"]: n["commands"] for n in rep["nodes"]} == {"n1": 4, "n2": 4}
    assert all(n["datasets"] > 0 for n in rep["nodes"])


def test_ls_filters_sort_limit_json(synced: Path, cli: Cli) -> None:
    r = cli("-i", str(synced), "ls", "--node", "n1", "--type", "volume", "--sort", "used",
            "--desc", "--limit", "5", "--json")
    assert r.code == 0, r.err
    rows = r.json()
    assert len(rows) == 5
    assert all(x["node"] == "n1" and x["type"] == "volume" for x in rows)
    used = [x["used"] for x in rows]
    assert used == sorted(used, reverse=True)
    conn = sqlite3.connect(synced.parent / "mirror.db")
    top = conn.execute("SELECT max(used) FROM datasets WHERE node='n1' AND type='volume'")
    assert used[0] == top.fetchone()[0]


def test_ls_where_human_sizes_and_count(synced: Path, cli: Cli) -> None:
    r = cli("-i", str(synced), "ls", "--where", "used>1G", "--where", "type=volume", "--json")
    rows = r.json()
    assert rows and all(x["used"] > 2**30 for x in rows)
    conn = sqlite3.connect(synced.parent / "mirror.db")
    n = conn.execute("SELECT count(*) FROM datasets WHERE used > ? AND type='volume'",
                     (2**30,)).fetchone()[0]
    assert len(rows) == n
    c = cli("-i", str(synced), "ls", "--where", "used>1G", "--type", "volume", "--count")
    assert c.out.strip() == str(n)


def test_ls_csv_and_columns(synced: Path, cli: Cli) -> None:
    r = cli("-i", str(synced), "ls", "--type", "snapshot", "--limit", "3", "--csv",
            "-o", "name,guid,createtxg")
    lines = r.out.strip().splitlines()
    assert lines[0] == "name,guid,createtxg"
    assert len(lines) == 4
    assert all("@" in line.split(",")[0] for line in lines[1:])


def test_ls_table_default_limit_says_so(synced: Path, cli: Cli) -> None:
    r = cli("-i", str(synced), "ls")
    assert r.code == 0
    assert "first 100 of" in r.out


def test_clones_and_show_tree(synced: Path, cli: Cli) -> None:
    clones = cli("-i", str(synced), "ls", "--type", "clone", "--json").json()
    assert clones, "the sim fleet has clones"
    clone = clones[0]
    origin = cli("-i", str(synced), "ls", "--type", "clone", "--limit", "1", "--json",
                 "-o", "name,origin,node").json()[0]["origin"]
    parent = origin.split("@")[0]
    d = cli("-i", str(synced), "show", parent, "--node", clone["node"], "--json").json()
    assert d["dataset"]["name"] == parent
    assert origin in [s["name"] for s in d["snapshots"]]
    assert clone["name"] in [c["name"] for c in d["clones"]]
    c = cli("-i", str(synced), "show", clone["name"], "--node", clone["node"], "--json").json()
    assert c["origin_chain"][0]["snapshot"] == origin
    text = cli("-i", str(synced), "show", parent, "--node", clone["node"])
    assert text.code == 0 and clone["name"] in text.out


def test_stats_json(synced: Path, cli: Cli) -> None:
    rows = cli("-i", str(synced), "stats", "--json").json()
    assert {r["node"] for r in rows} == {"n1", "n2"}
    conn = sqlite3.connect(synced.parent / "mirror.db")
    for r in rows:
        vols = conn.execute("SELECT count(*) FROM datasets WHERE node=? AND type='volume'",
                            (r["node"],)).fetchone()[0]
        assert r["volumes"] == vols
        assert r["stale"] is False and r["size"] > 0 and r["health"] == "ONLINE"


def test_sql_read_only_and_saved(synced: Path, cli: Cli) -> None:
    r = cli("-i", str(synced), "sql", "SELECT node, count(*) AS n FROM datasets GROUP BY node",
            "--json")
    assert {x["node"] for x in r.json()} == {"n1", "n2"}
    db = synced.parent / "mirror.db"
    before = digest(db)
    w = cli("-i", str(synced), "sql", "DELETE FROM datasets")
    assert w.code == 2 and "read-only" in w.err and "Traceback" not in w.err
    assert digest(db) == before
    lst = cli("-m", str(db), "sql", "--list", "--json").json()
    assert "biggest-volumes" in {q["name"] for q in lst}
    top = cli("-m", str(db), "sql", "--saved", "biggest-volumes", "--param", "limit=3",
              "--json").json()
    assert len(top) == 3


def test_bad_inventory_clear_error_mirror_intact(synced: Path, cli: Cli, tmp_path: Path) -> None:
    db = synced.parent / "mirror.db"
    before = digest(db)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"all:\n  vars:\n    mirror: {db}\n  hosts:\n    n1:\n      kind: sim\n"
                   "      prot: 22\n")
    r = cli("-i", str(bad), "sync")
    assert r.code == 2
    assert f"{bad}:7" in r.err and "prot" in r.err and "did you mean 'port'" in r.err
    assert "Traceback" not in r.err
    assert digest(db) == before


def test_unreachable_node_is_stale_and_keeps_rows(synced: Path, cli: Cli, tmp_path: Path) -> None:
    db = synced.parent / "mirror.db"
    conn = sqlite3.connect(db)
    n2_before = conn.execute("SELECT * FROM datasets WHERE node='n2' ORDER BY name").fetchall()
    inv = tmp_path / "down.yaml"
    inv.write_text(
        f"all:\n  vars:\n    mirror: {db}\n    state_dir: {synced.parent / 'state'}\n"
        "  hosts:\n    n1:\n      kind: sim\n      sim: {seed: 1, volumes: 300}\n"
        "    n2:\n      kind: ssh\n      address: 127.0.0.1\n      port: 1\n"
        "      connect_timeout: 2\n      connect_retries: 1\n")
    r = cli("-i", str(inv), "sync", "--json")
    assert r.code == 1
    rep = {n["node"]: n for n in r.json()["nodes"]}
    assert rep["n1"]["ok"] and not rep["n2"]["ok"]
    assert "cannot connect" in rep["n2"]["error"]
    assert conn.execute("SELECT * FROM datasets WHERE node='n2' ORDER BY name").fetchall() == \
        n2_before
    assert conn.execute("SELECT stale FROM nodes WHERE name='n2'").fetchone()[0] == 1
    table = cli("-i", str(inv), "sync")
    assert table.code == 1 and "FAILED" in table.out and "Traceback" not in table.err
    stats = {r["node"]: r for r in cli("-m", str(db), "stats", "--json").json()}
    assert stats["n2"]["stale"] is True and stats["n1"]["stale"] is False


@pytest.mark.parametrize(
    "args",
    [
        ["show", "tank/x;rm -rf /"],
        ["show", "tank/$(reboot)"],
        ["show", "tank/a@b@c"],
        ["ls", "--origin", "tank/`id`"],
        ["show", "-"],
    ],
)
def test_hostile_names_are_refused_clearly(synced: Path, cli: Cli, args: list[str]) -> None:
    db = synced.parent / "mirror.db"
    before = digest(db)
    r = cli("-i", str(synced), *args)
    assert r.code == 2, (r.out, r.err)
    assert "invalid ZFS name" in r.err or "No such option" in r.err
    assert "Traceback" not in r.err
    assert digest(db) == before


def test_missing_mirror_and_inventory_errors(cli: Cli, tmp_path: Path) -> None:
    for cmd in ("ls", "stats", "tui"):
        r = cli("-m", str(tmp_path / "none.db"), cmd)
        assert r.code == 1 and "xfleet sync" in r.err and "Traceback" not in r.err, cmd
    r = cli("ls", cwd=tmp_path)
    assert r.code == 2 and "--inventory" in r.err


def test_inventory_check_and_show(sim_fleet: Path, cli: Cli) -> None:
    r = cli("-i", str(sim_fleet), "inventory", "check", "--json")
    assert r.code == 0
    assert {h["node"] for h in r.json()} == {"n1", "n2"}
    s = cli("-i", str(sim_fleet), "inventory", "show", "n1", "--json").json()
    kind = next(x for x in s if x["setting"] == "kind")
    assert kind["value"] == "sim" and f"{sim_fleet}:5" in kind["source"]
    missing = cli("-i", str(sim_fleet), "inventory", "show", "n9")
    assert missing.code == 2 and "no host or group named 'n9'" in missing.err


def test_every_command_has_help_with_examples(cli: Cli) -> None:
    for cmd in (["sync"], ["ls"], ["show"], ["stats"], ["sql"], ["inventory", "check"],
                ["inventory", "show"], ["inventory", "trust"], ["tui"], ["demo"],
                ["lab", "build"], ["lab", "up"], ["lab", "status"], ["lab", "ssh"],
                ["lab", "reset"], ["lab", "down"]):
        r = cli(*cmd, "--help")
        assert r.code == 0 and "Example" in r.out, cmd


def test_many_sim_names_with_spaces_round_trip(tmp_path: Path, cli: Cli) -> None:
    inv = write_sim_inventory(tmp_path / "f.yaml", {"n1": {"seed": 5, "volumes": 10}})
    from xfleet.fleet import inventory
    from xfleet.sim import SimTransport

    loaded = inventory.load(inv)
    t = SimTransport(loaded.hosts["n1"], state_dir=loaded.state_dir)
    names = ["tank/db 1", "tank/a:b.c-d_e", "tank/with  two spaces"]
    for n in names:
        t.run(["zfs", "create", "-V", "1G", n])
    t.run(["zfs", "snapshot", *(f"{n}@s 1" for n in names)])
    assert cli("-i", str(inv), "sync").code == 0
    for n in names:
        d = cli("-i", str(inv), "show", n, "--json").json()
        assert d["dataset"]["name"] == n
        assert [s["name"] for s in d["snapshots"]] == [f"{n}@s 1"]


def test_demo_tour_commands_all_work(tmp_path: Path, cli: Cli) -> None:
    """Every command the demo's tour suggests runs and prints something (on a small fleet)."""
    import subprocess
    import sys

    from conftest import ROOT

    inv = write_sim_inventory(tmp_path / "demo.yaml", {"n1": {"seed": 1, "volumes": 300},
                                                       "n2": {"seed": 2, "volumes": 300}})
    r = cli("-i", str(inv), "demo", "--no-tui")
    assert r.code == 0, r.err
    tour = [line.strip() for line in r.out.replace("\\\n", "").splitlines()
            if line.strip().startswith(".venv/bin/xfleet") and not line.strip().endswith(" tui")]
    assert len(tour) >= 6
    for cmd in tour:
        shell = cmd.replace(".venv/bin/xfleet", f"{sys.executable} -m xfleet")
        p = subprocess.run(["bash", "-c", shell], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0 and p.stdout.strip(), (cmd, p.stderr)
