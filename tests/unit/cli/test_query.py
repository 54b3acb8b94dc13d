"""`xfleet ls|show|stats|sql` (xfleet/cli/query.py): reads from the mirror, as a user drives
them: JSON, CSV and tables, filters, hostile names refused, the mirror left intact. The tests
of what the commands read run on both engines (`synced_at`: SQLite and PostgreSQL)."""

from __future__ import annotations

import json
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
        # health from zpool status: no errors, the last scrub
        assert (r["errors"], r["read_errors"], r["checksum_errors"], r["data_errors"]) == \
            (0, 0, 0, 0)
        assert (r["scan_function"], r["scan_state"]) == ("SCRUB", "FINISHED")
        assert r["last_scrub"] == r["scan_end"] and r["scan_start"] < r["scan_end"]
        assert r["health_at"] >= r["last_success"] - 60


@pytest.fixture
def faulty(tmp_path: Path, mirror_at: str, cli: Cli) -> tuple[Path, str]:
    """A synced sim fleet whose pools show faults: n1's mirror has a side OFFLINE, n2's a
    side with checksum errors (the sim's `faults` setting), n3 is healthy."""
    inv = write_sim_inventory(tmp_path / "faulty.yaml", {
        "n1": {"seed": 1, "volumes": 30, "faults": {"tank": "offline"}},
        "n2": {"seed": 2, "volumes": 30, "faults": {"tank": "checksum"}},
        "n3": {"seed": 3, "volumes": 30}})
    inv.write_text(inv.read_text().replace("mirror: mirror.db",
                                           f"mirror: {json.dumps(mirror_at)}"))
    r = cli("-i", str(inv), "sync", "--json")
    assert r.code == 0, r.err
    return inv, mirror_at


def test_stats_show_health_errors_and_the_last_scrub(faulty: tuple[Path, str],
                                                     cli: Cli) -> None:
    inv, db = faulty
    rows = {r["node"]: r for r in cli("-i", str(inv), "stats", "--json").json()}
    cksum = one(db, "SELECT sum(checksum_errors) FROM vdevs WHERE node = 'n2'")
    assert cksum > 0
    assert [(r["health"], r["errors"], r["checksum_errors"]) for r in rows.values()] == [
        ("DEGRADED", 0, 0), ("ONLINE", cksum, cksum), ("ONLINE", 0, 0)]
    table = cli("-i", str(inv), "stats")
    assert table.code == 0, table.err
    header = table.out.splitlines()[0].split()
    assert header[:5] == ["NODE", "POOL", "HEALTH", "ERRORS", "SCAN"]
    lines = {ln.split()[0]: ln.split() for ln in table.out.splitlines()[1:]}
    assert lines["n1"][2:5] == ["DEGRADED", "0", "scrub"]
    assert lines["n2"][2:4] == ["ONLINE", str(cksum)]
    assert lines["n3"][4:6] == ["scrub", lines["n3"][5]] and lines["n3"][6] == "ago"
    csv = cli("-i", str(inv), "stats", "--csv").out.splitlines()
    assert csv[0].startswith("node,pool,health,errors,scan,")
    assert csv[2].startswith(f"n2,tank,ONLINE,{cksum},scrub ")


def test_show_a_pool_shows_its_health_and_vdev_tree(faulty: tuple[Path, str],
                                                    cli: Cli) -> None:
    inv, db = faulty
    d = cli("-i", str(inv), "show", "tank", "--node", "n1", "--json").json()
    pool = d["pool"]
    assert (pool["node"], pool["pool"], pool["health"], pool["errors"]) == (
        "n1", "tank", "DEGRADED", 0)
    assert pool["status"].startswith("One or more devices has been taken offline")
    assert pool["action"].startswith("Online the device using 'zpool online'")
    assert [(v["depth"], v["name"], v["state"]) for v in pool["vdevs"]] == [
        (0, "tank", "DEGRADED"), (1, "mirror-0", "DEGRADED"), (2, "nvme0n1", "ONLINE"),
        (2, "nvme1n1", "OFFLINE")]
    assert pool["last_scrub"] == pool["scan_end"]
    text = cli("-i", str(inv), "show", "tank", "--node", "n2")
    assert text.code == 0, text.err
    cksum = one(db, "SELECT checksum_errors FROM pools WHERE node = 'n2'")
    out = " ".join(text.out.split())
    assert f"pool tank on n2: ONLINE {cksum} err" in out
    assert "status: One or more devices has experienced an unrecoverable error." in out
    assert f"errors: read 0, write 0, checksum {cksum} (leaf vdevs); data 0" in out
    assert "scan: scrub " in out and " ago (started " in out
    vdev = next(ln.split() for ln in text.out.splitlines() if "nvme1n1" in ln)
    assert vdev[:6] == ["nvme1n1", "ONLINE", "0", "0", str(cksum), "0"]
    # a dataset that is not a pool's root shows no pool
    child = cli("-i", str(inv), "ls", "--node", "n2", "--type", "volume", "--limit", "1",
                "--json").json()[0]["name"]
    assert "pool" not in cli("-i", str(inv), "show", child, "--node", "n2", "--json").json()


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
