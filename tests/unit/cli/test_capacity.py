"""`xfleet report capacity` (xfleet/cli/capacity.py) on the simulated fleet: the table, CSV and
JSON (on both engines), the tenants' figures against `xfleet sql`, the HTML page rendered by
headless Chromium, and the user's mistakes said without a traceback. The figures themselves
are tested in tests/unit/ops/test_capacity.py."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.ops import capacity
from xfleet.ops.sync import sync

from ..ops.test_report import screenshot
from .conftest import Cli, digest

DAY = 86400.0


def grow(inv_path: Path, db: str) -> None:
    """Three earlier days of history: each day n1 gets 30 new volumes (its allocation grows),
    then a sync and the day's record; the sync of today records today (its tenant rows as an
    hour later: the first sync of the loop wrote today's, and they are rewritten hourly)."""
    inv = inventory.load(inv_path)
    conn = mirror.connect(db)
    try:
        with Connections(inv.hosts, state_dir=inv.state_dir) as cs:
            for back in (3, 2, 1):
                t = cs.get("n1")
                t.run(["zfs", "create", "-p", f"tank/t0001/d{back}"])
                for i in range(30):
                    t.run(["zfs", "create", "-s", "-V", "4G", f"tank/t0001/d{back}/v{i}"])
                assert sync(inv, connections=cs).ok
                capacity.record_daily(conn, now=time.time() - back * DAY)
            with mirror.transaction(conn, "test: an hour later"):
                conn.execute("UPDATE tenant_daily SET at = at - 3601 WHERE day = ?",
                             (capacity.day_of(time.time()),))
            assert sync(inv, connections=cs).ok
    finally:
        conn.close()


@pytest.fixture
def history(synced_at: tuple[Path, str]) -> tuple[Path, str]:
    inv, db = synced_at
    grow(inv, db)
    return inv, db


def test_table_csv_and_json(history: tuple[Path, str], cli: Cli) -> None:
    inv, db = str(history[0]), history[1]
    before = digest(db)
    r = cli("-i", inv, "report", "capacity")
    assert r.code == 0, r.err
    assert "DAYS TO 90%" in r.out and "GROWTH/DAY (95%)" in r.out and "TOTAL" in r.out
    assert "n1" in r.out and "n2" in r.out and "overcommit" in r.out
    r = cli("-i", inv, "report", "capacity", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    rows = {row["node"]: row for row in doc["rows"]}
    assert list(doc["rows"][0]) == list(capacity.POOL_COLUMNS) and doc["days"] == 30
    n1, n2 = rows["n1"], rows["n2"]
    assert n1["days"] == 4 and n1["growth_per_day"] > 0 and n1["days_until_90"] > 0
    assert n1["growth_low"] <= n1["growth_per_day"] <= n1["growth_high"]
    assert n2["days"] == 4 and n2["growth_per_day"] == 0 and n2["days_until_90"] is None
    assert doc["rows"][0]["node"] == "n1"  # the one that reaches 90 % first
    assert len(doc["history"]["n1/tank"]) == 4 and doc["total"]["pools"] == 2
    r = cli("-i", inv, "report", "capacity", "--csv", "-n", "n2", "--days", "3")
    got = list(csv.DictReader(io.StringIO(r.out)))
    assert r.code == 0 and list(got[0]) == list(capacity.POOL_COLUMNS)
    assert [(g["node"], g["days"]) for g in got] == [("n2", "3")]
    assert digest(db) == before  # a report reads only


def test_by_tenant_adds_up_to_the_mirror(history: tuple[Path, str], cli: Cli) -> None:
    inv = str(history[0])
    r = cli("-i", inv, "report", "capacity", "--by", "tenant", "--csv", "--limit", "0")
    assert r.code == 0, r.err
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert list(rows[0]) == list(capacity.TENANT_COLUMNS)
    sql = cli("-i", inv, "sql", "--json", "SELECT coalesce(tenant, '-') AS tenant, count(*) AS n,"
              " sum(volsize) AS volsize, sum(used) AS used FROM datasets WHERE type = 'volume' "
              "GROUP BY coalesce(tenant, '-')")
    assert sql.code == 0, sql.err
    want = {s["tenant"]: (s["n"], s["volsize"], s["used"]) for s in sql.json()}
    assert {g["tenant"]: (int(g["volumes"]), int(g["volsize"]), int(g["used"]))
            for g in rows} == want
    assert rows[0]["tenant"] == "t0001" and float(rows[0]["growth_per_day"]) > 0
    r = cli("-i", inv, "report", "capacity", "--by", "tenant", "--limit", "3")
    assert r.code == 0 and "TENANT" in r.out and "t0001" in r.out and "TOTAL" in r.out


def test_html_renders_in_chromium(synced: Path, cli: Cli, tmp_path: Path) -> None:
    grow(synced, str(synced.parent / "mirror.db"))
    out = tmp_path / "capacity.html"
    r = cli("-i", str(synced), "report", "capacity", "--html", str(out))
    assert r.code == 0, r.err
    assert f"wrote {out}" in r.err and "TOTAL" in r.out
    page = out.read_text()
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert page.count("<svg") == 4 and "95 % interval" in page
    width, height, raw = screenshot(out, tmp_path / "shot.png")
    assert (width, height) == (1200, 1600)
    assert len(set(raw)) > 50  # not blank: bars, lines, bands and text


def test_mistakes_are_said_without_a_traceback(synced: Path, cli: Cli, tmp_path: Path) -> None:
    inv = str(synced)
    for args, code, words in [
        (["--html", str(tmp_path / "no" / "such" / "dir" / "r.html")], 2, "does not exist"),
        (["--html", str(tmp_path)], 2, "is a directory"),
        (["--html", "/proc/xfleet-capacity.html"], 2, "--html /proc/xfleet-capacity.html"),
        (["-n", "nope"], 2, "no pools of node 'nope'"),
        (["--by", "colour"], 2, "'colour' is not one of 'pool', 'tenant'"),
        (["--days", "2"], 2, "2 is not in the range 3<=x<=3650"),
        (["--json", "--csv"], 2, "--json and --csv exclude each other"),
    ]:
        r = cli("-i", inv, "report", "capacity", *args)
        assert r.code == code and words in r.err, (args, r.code, r.err)
        assert "Traceback" not in r.err, args
    empty = tmp_path / "empty.db"
    mirror.connect(empty).close()
    r = cli("--mirror", str(empty), "report", "capacity", "--json")
    assert r.code == 1 and "no pools yet" in r.err and "xfleet sync" in r.err
    assert r.json()["ok"] is False and "no pools yet" in r.json()["error"]["message"]
    r = cli("--mirror", str(tmp_path / "missing.db"), "report", "capacity")
    assert r.code == 1 and "does not exist yet" in r.err and "Traceback" not in r.err
