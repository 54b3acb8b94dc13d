"""`xfleet ls|show|stats|sql` (xfleet/cli/query.py): reads from the mirror, as a user drives
them: JSON, CSV and tables, filters, hostile names refused, the mirror left intact. The tests
of what the commands read run on both engines (`synced_at`: SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import write_sim_inventory

from xfleet import mirror

from .conftest import Cli, digest


def one(db: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the first row of `sql` on the mirror at `db` (either engine)."""
    conn = mirror.connect(db, readonly=True)
    try:
        return conn.execute(sql, params).fetchone()[0]
    finally:
        conn.close()


def column(db: str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    conn = mirror.connect(db, readonly=True)
    try:
        return [r[0] for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def test_ls_filters_sort_limit_json(synced_at: tuple[Path, str], cli: Cli) -> None:
    inv, db = synced_at
    r = cli("-i", str(inv), "ls", "--node", "n1", "--type", "volume", "--sort", "used",
            "--desc", "--limit", "5", "--json")
    assert r.code == 0, r.err
    rows = r.json()
    assert len(rows) == 5
    assert all(x["node"] == "n1" and x["type"] == "volume" for x in rows)
    used = [x["used"] for x in rows]
    assert used == sorted(used, reverse=True)
    assert used[0] == one(db, "SELECT max(used) FROM datasets WHERE node='n1' AND "
                          "type='volume'")
    # fleet-wide: the 50 smallest, in order, as the mirror has them
    r = cli("-i", str(inv), "ls", "--sort", "used", "--limit", "50", "--json", "-o",
            "node,name,used")
    assert r.code == 0, f"exit {r.code}: {r.err}"
    used = [x["used"] for x in r.json()]
    assert used == column(db, "SELECT used FROM datasets WHERE used IS NOT NULL ORDER BY used "
                          "LIMIT 50")


def test_ls_where_human_sizes_and_count(synced_at: tuple[Path, str], cli: Cli) -> None:
    inv, db = synced_at
    r = cli("-i", str(inv), "ls", "--where", "used>1G", "--where", "type=volume", "--json")
    assert r.code == 0, f"exit {r.code}: {r.err}"
    rows = r.json()
    assert rows and all(x["used"] > 2**30 for x in rows)
    n = one(db, "SELECT count(*) FROM datasets WHERE used > ? AND type='volume'", (2**30,))
    assert len(rows) == n
    c = cli("-i", str(inv), "ls", "--where", "used>1G", "--type", "volume", "--count")
    assert c.out.strip() == str(n), f"exit {c.code}: {c.out} {c.err}"
    # a glob on names, and a label of the nodes (JSON in the mirror): both are in zone a
    g = cli("-i", str(inv), "ls", "tank/t0001/*", "--label", "zone=a", "--type", "volume",
            "--limit", "0", "--json", "-o", "node,name")
    assert g.code == 0, f"exit {g.code}: {g.err}"
    assert g.json() and all(x["name"].startswith("tank/t0001/") for x in g.json())
    assert len(g.json()) == one(db, "SELECT count(*) FROM datasets WHERE type = 'volume' AND "
                                "name LIKE 'tank/t0001/%'")
    b = cli("-i", str(inv), "ls", "--label", "zone=b", "--json")
    assert b.code == 0 and b.json() == [], f"exit {b.code}: {b.out[:200]} {b.err}"


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


def test_clones_and_show_tree(synced_at: tuple[Path, str], cli: Cli) -> None:
    synced, _ = synced_at
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


def test_stats_json(synced_at: tuple[Path, str], cli: Cli) -> None:
    synced, db = synced_at
    rows = cli("-i", str(synced), "stats", "--json").json()
    assert {r["node"] for r in rows} == {"n1", "n2"}
    for r in rows:
        vols = one(db, "SELECT count(*) FROM datasets WHERE node=? AND type='volume'",
                   (r["node"],))
        assert r["volumes"] == vols
        assert r["stale"] is False and r["size"] > 0 and r["health"] == "ONLINE"


def test_sql_read_only_and_saved(synced_at: tuple[Path, str], cli: Cli) -> None:
    synced, db = synced_at
    r = cli("-i", str(synced), "sql", "SELECT node, count(*) AS n FROM datasets GROUP BY node",
            "--json")
    assert {x["node"] for x in r.json()} == {"n1", "n2"}
    before = digest(db)
    for write in ("DELETE FROM datasets", "UPDATE nodes SET stale = 1",
                  "SELECT 1; DELETE FROM datasets", "DROP TABLE datasets"):
        w = cli("-i", str(synced), "sql", write)
        assert w.code == 2 and "Traceback" not in w.err, f"{write}: exit {w.code}\n{w.err}"
        assert "read-only" in w.err or "refused" in w.err, f"{write}: {w.err}"
    assert digest(db) == before
    lst = cli("-m", db, "sql", "--list", "--json").json()
    assert "biggest-volumes" in {q["name"] for q in lst}
    top = cli("-m", db, "sql", "--saved", "biggest-volumes", "--param", "limit=3",
              "--json").json()
    assert len(top) == 3
    # :name parameters, with the value bound (never spliced into the text)
    n1 = cli("-m", db, "sql", "SELECT count(*) AS n FROM datasets WHERE node = :node AND "
             "name LIKE :like -- a :comment", "--param", "node=n1", "--param", "like=tank/%",
             "--json")
    assert n1.code == 0, f"exit {n1.code}: {n1.err}"
    assert n1.json() == [{"n": one(db, "SELECT count(*) FROM datasets WHERE node = 'n1' AND "
                                   "name LIKE 'tank/%'")}]
    bad = cli("-m", db, "sql", "SELECT nosuchcolumn FROM datasets")
    assert bad.code == 2 and "SQL error" in bad.err and "Traceback" not in bad.err, bad.err


def test_every_saved_query_runs(synced_at: tuple[Path, str], cli: Cli) -> None:
    synced, db = synced_at
    saved = cli("-m", db, "sql", "--list", "--json").json()
    assert len(saved) >= 6
    for q in saved:
        r = cli("-m", db, "sql", "--saved", q["name"], "--json")
        assert r.code == 0 and "Traceback" not in r.err, \
            f"xfleet sql --saved {q['name']}: exit {r.code}\n{r.err}"
        assert isinstance(r.json(), list), r.out
    # (the sim fleet has clones and tenants: these two have rows)
    tenants = cli("-m", db, "sql", "--saved", "tenant-usage", "--json").json()
    assert tenants and all(t["volumes"] >= 0 and t["snapshots"] >= 0 for t in tenants)
    assert sum(t["volumes"] for t in tenants) == one(
        db, "SELECT count(*) FROM datasets WHERE type = 'volume' AND tenant IS NOT NULL")
    assert cli("-m", db, "sql", "--saved", "clone-chains", "--json").json()


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
