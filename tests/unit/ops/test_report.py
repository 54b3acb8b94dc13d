"""The compression cost report: aggregation in SQL (checked against the mirror's own sums),
money, the 'possible by policy' estimate and its interval, 'needs rewrite' after an apply, the
daily totals, the formats, and the HTML page rendered by headless Chromium. The figures are
checked on both engines of the mirror (SQLite, PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import subprocess
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import run_cli, write_sim_inventory

from xfleet import mirror
from xfleet.core.errors import UsageError
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.ops import compression, estimate, report
from xfleet.ops.compression import parse_policy
from xfleet.ops.sync import sync

POLICY = "rules:\n  - name: all\n    compression: zstd\n"


def make_fleet(tmp_path: Path, mirror_at: str | None = None) -> inventory.Inventory:
    """n1 (150 volumes) and n3 (100), synced into the mirror at `mirror_at` (an SQLite path
    or a PostgreSQL URL; default mirror.db beside the inventory)."""
    path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 7, "volumes": 150},
                                                          "n3": {"seed": 8, "volumes": 100}},
                               extra="    price_per_gb_month: 0.10\n"
                               "    compression_policy: policy.yaml")
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


def test_groups_add_up_to_the_mirror_and_money_follows_the_price(
        fleet_at: inventory.Inventory) -> None:
    fleet = fleet_at
    conn = mirror.connect(fleet.mirror)
    logical, physical, n, thick = conn.execute(
        "SELECT sum(logicalused), sum(used - coalesce(usedbyrefreservation, 0)), count(*), "
        "count(CASE WHEN refreservation > 0 THEN 1 END) FROM datasets WHERE type = 'volume'"
    ).fetchone()
    for by in ("node", "pool", "tenant", "compression", "label:zone", "volume"):
        rep = report.build(conn, by=by, inventory=fleet, price_per_gb_month=0.10)
        t = rep.total
        assert (t["logical"], t["physical"], t["volumes"], t["thick"]) == (
            logical, physical, n, thick), by
        assert sum(r["volumes"] for r in rep.rows) == n
        assert t["saved"] == logical - physical
        assert t["saved_money"] == round((logical - physical) / 2**30 * 0.10, 2)
        assert t["possible"] is None  # no policy given
    by_zone = {r["group"]: r for r in report.build(conn, by="label:zone", inventory=fleet).rows}
    n1 = conn.execute("SELECT sum(logicalused) FROM datasets WHERE type = 'volume' AND "
                      "node = 'n1'").fetchone()[0]
    assert by_zone["a"]["logical"] == n1 and set(by_zone) == {"a", "b"}
    with pytest.raises(UsageError):
        report.build(conn, by="colour")


def test_possible_by_policy_uses_estimates_and_keeps_an_interval(
        fleet_at: inventory.Inventory) -> None:
    fleet = fleet_at
    conn = mirror.connect(fleet.mirror)
    pol = parse_policy(POLICY)
    vol = conn.execute("SELECT name, referenced, logicalreferenced FROM datasets WHERE "
                       "type = 'volume' AND node = 'n1' AND compression = 'off' "
                       "ORDER BY logicalreferenced DESC LIMIT 1").fetchone()
    one = report.build(conn, by="volume", policy=pol, where="name = ? AND node = 'n1'",
                       params=[vol["name"]])
    assert one.total["possible_volumes"] == 1 and one.total["unestimated"] == 1
    assert one.total["possible"] == 0  # nothing estimated yet: not counted
    with Connections(fleet.hosts, state_dir=fleet.state_dir) as cs:
        items = estimate.targets(conn, "TRUE", [], limit=20)
        ests, _ = estimate.estimate_fleet(conn, cs, items, ["zstd"], blocks=48)
    mine = next(e for e in ests if e.volume == vol["name"] and e.node == "n1"
                and e.algorithm == "zstd-3")
    assert mine.ratio is not None and mine.ratio_low is not None and mine.ratio_high is not None
    one = report.build(conn, by="volume", policy=pol, where="name = ? AND node = 'n1'",
                       params=[vol["name"]])
    want = vol["referenced"] - vol["logicalreferenced"] / mine.ratio
    assert one.total["possible"] == pytest.approx(want, rel=1e-6, abs=2)
    half = vol["logicalreferenced"] * (1 / mine.ratio_low - 1 / mine.ratio_high) / 2
    assert one.total["possible_high"] - one.total["possible"] == pytest.approx(half, rel=1e-3)
    assert one.total["estimated"] == 1 and one.total["unestimated"] == 0
    # the whole fleet: estimated volumes use their own figures, others the fallback factor
    rep = report.build(conn, by="node", policy=pol, inventory=fleet)
    t = rep.total
    assert t["estimated"] >= 15 and t["unestimated"] < t["possible_volumes"] / 2
    if t["unestimated"]:  # a change of setting no sampled volume had: said, not guessed
        assert any("no estimate" in n for n in rep.notes)
    assert t["possible_low"] < t["possible"] < t["possible_high"]
    assert t["possible_money"] == round(t["possible"] / 2**30 * 0.08, 2)
    assert rep.top and rep.top[0]["potential"] >= rep.top[-1]["potential"]


def test_needs_rewrite_after_an_apply_and_daily_totals(fleet_at: inventory.Inventory) -> None:
    fleet = fleet_at
    conn = mirror.connect(fleet.mirror)
    pol = parse_policy("rules:\n  - name: n3\n    match: {node: n3}\n    compression: off\n")
    p = compression.plan(conn, pol, fleet)
    run = compression.create_run(conn, p)
    with Connections(fleet.hosts, state_dir=fleet.state_dir) as cs:
        compression.Applier(fleet.mirror, cs).run(run.id)
    rep = report.build(conn, by="node", inventory=fleet)
    rows = {r["group"]: r for r in rep.rows}
    # the setting changed, the data did not: every changed volume needs a rewrite
    assert rows["n3"]["rewrite_volumes"] == p.volumes and rows["n1"]["rewrite_volumes"] == 0
    lref = conn.execute("SELECT sum(logicalreferenced) FROM datasets WHERE node = 'n3' AND "
                        "type = 'volume' AND name IN (SELECT name FROM compression_changes)"
                        ).fetchone()[0]
    assert rows["n3"]["rewrite_logical"] == lref
    import datetime as dt

    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    # every sync records today's totals (from the pools summary, no scan)
    assert [r[0] for r in conn.execute("SELECT DISTINCT day FROM compression_daily")] == [today]
    assert report.record_daily(conn, now=1_790_000_000) == 2
    assert report.record_daily(conn, now=1_790_000_100) == 2  # same day: replaced
    report.record_daily(conn, now=1_790_086_400)
    tr = report.trend(conn)
    assert [d["day"] for d in tr] == ["2026-09-21", "2026-09-22", today]
    assert tr[0]["logical"] == rep.total["logical"] and tr[0]["physical"] == rep.total["physical"]


def test_cli_formats(fleet: inventory.Inventory, tmp_path: Path) -> None:
    inv = str(fleet.path)
    r = run_cli("-i", inv, "report", "compression", "--by", "label:zone")
    assert r.code == 0, r.err
    assert "POSSIBLE BY POLICY" in r.out and "TOTAL" in r.out and "rewritten" in r.out
    r = run_cli("-i", inv, "report", "compression", "--csv")
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert list(rows[0]) == list(report.COLUMNS) and rows[-1]["group"] == "TOTAL"
    assert {r["currency"] for r in rows} == {"USD"}  # the default currency, on every row
    r = run_cli("-i", inv, "report", "compression")
    assert "SAVED USD/MONTH" in r.out.upper() and "0.1 USD/GB-month" in r.out, r.out
    r = run_cli("-i", inv, "report", "compression", "--json", "--by", "tenant", "--limit", "3")
    data = json.loads(r.out)
    assert len(data["rows"]) == 3 and data["price_per_gb_month"] == 0.10
    assert data["currency"] == "USD" and data["total"]["currency"] == "USD"
    assert data["trend"][-1]["volumes"] == 250  # this run recorded today's totals
    html = tmp_path / "r.html"
    r = run_cli("-i", inv, "report", "compression", "--html", str(html), "--no-policy")
    assert r.code == 0 and html.exists()
    r = run_cli("-i", inv, "report", "compression", "--by", "nope")
    assert r.code == 2 and "cannot group by" in r.err


def screenshot(page: Path, shot: Path) -> tuple[int, int, bytes]:
    """The HTML file `page` as headless Chromium draws it at 1200x1600: (width, height, raw
    pixels), after checking the PNG was written and is not trivially small."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (scripts/test-deps.sh installs it)"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1200,1600",
                    page.as_uri()], capture_output=True, timeout=120, check=False)
    assert shot.exists() and shot.stat().st_size > 20_000
    return png_pixels(shot)


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the raw (filtered) scanlines of a PNG: enough to count colours."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    return width, height, zlib.decompress(idat)


def test_html_report_is_self_contained_and_renders_in_chromium(
        fleet: inventory.Inventory, tmp_path: Path) -> None:
    conn = mirror.connect(fleet.mirror)
    with Connections(fleet.hosts, state_dir=fleet.state_dir) as cs:
        estimate.estimate_fleet(conn, cs, estimate.targets(conn, "TRUE", [], limit=30),
                                ["zstd"], blocks=16)
    report.record_daily(conn, now=1_790_000_000)
    report.record_daily(conn)
    rep = report.build(conn, by="pool", policy=parse_policy(POLICY), inventory=fleet)
    page = report.render_html(rep)
    assert "0.08 USD per GB-month" in page and "saved USD/month" in page
    assert report.render_html(replace(rep, currency="EUR")).count("EUR") >= 4
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert "url(" not in page and "@import" not in page and "src=" not in page
    assert page.count("<svg") == 3 and "Top volumes by potential" in page
    out = tmp_path / "report.html"
    out.write_text(page)
    width, height, raw = screenshot(out, tmp_path / "shot.png")
    assert (width, height) == (1200, 1600)
    # not blank: many distinct byte values, and the bars' green and blue are there
    assert len(set(raw)) > 50
