"""`xfleet ls|show|stats|sql` (xfleet/cli/query.py): reads from the mirror, as a user drives
them: JSON, CSV and tables, filters, hostile names refused, the mirror left intact."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import write_sim_inventory

from .conftest import Cli, digest


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


def test_saved_queries_are_found_from_any_directory(synced: Path, cli: Cli,
                                                    tmp_path: Path) -> None:
    db = synced.parent / "mirror.db"
    lst = cli("-m", str(db), "sql", "--list", "--json", cwd=tmp_path).json()
    assert "biggest-volumes" in {q["name"] for q in lst}  # the checkout's queries/
