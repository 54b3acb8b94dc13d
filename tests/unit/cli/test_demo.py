"""The demo's set-up (xfleet/cli/demo.py, `xfleet demo`): on a small simulated fleet, every
report, journal and dashboard view has real figures after it, and they agree with `xfleet sql`
over the same mirror."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import Result, run_cli, write_sim_inventory
from tui.conftest import screen_text, settle  # tests/tui/conftest.py: Pilot helpers

from xfleet.cli import demo
from xfleet.core.errors import UsageError
from xfleet.fleet import inventory
from xfleet.mirror.backend import location
from xfleet.ops.compression import canonical
from xfleet.tui.app import XfleetApp
from xfleet.tui.views import CompView, FleetView, OpsView, VolumesView

NODES = ("n1", "n2", "n3")
# the demo inventory's target (the simulated NVMe-oF target), a policy, money in euros
EXTRA = """    compression_policy: policy.yaml
    currency: EUR
    price_per_gb_month: 0.1
    target:
      driver: command
      installed_version: [xfleet-sim-target, installed]
      running_version: [xfleet-sim-target, running]
      ready: [xfleet-sim-target, ready]
      exports: [xfleet-sim-target, exports]
      stage: [xfleet-sim-target, stage, "{path}", "{sha256}"]
      restart: [xfleet-sim-target, restart, "{path}", "{version}"]
      rollback: [xfleet-sim-target, restart, "{path}", "{version}"]"""
# the demo's policy (inventory/compression.yaml) but its hot tenants: on 200 volumes a node,
# t0000-t0099 would be every tenant
POLICY = """rules:
  - name: cold-zone-big
    match: {labels: {zone: b}, volsize: ">=8G"}
    compression: zstd-9
  - name: default
    compression: zstd
"""


def ok(*args: str) -> Result:
    r = run_cli(*args)
    assert r.code == 0, f"xfleet {' '.join(args)} exited {r.code}\n{r.err}"
    return r


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    """`xfleet demo --no-tui` on 3 nodes of 200 volumes (the demo's settings otherwise):
    (the inventory, what the command printed)."""
    d = tmp_path_factory.mktemp("demo")
    (d / "policy.yaml").write_text(POLICY)
    inv = write_sim_inventory(d / "demo.yaml", {
        n: {"seed": 10 + i, "volumes": 200, "now": "today"} for i, n in enumerate(NODES)},
        extra=EXTRA)
    return inv, ok("-i", str(inv), "demo", "--no-tui")


def sql(inv: Path, query: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = ok("-i", str(inv), "sql", query, "--json").json()
    return rows


def test_every_step_runs_and_is_timed(built: tuple[Path, Result]) -> None:
    _, r = built
    steps = dict(re.findall(r"^\s+(\w+)\s+(\d+\.\d) s\b", r.out, re.M))
    assert list(steps) == ["fleet", "history", "estimates", "upgrade", "playbook", "drain",
                           "reports", "total"], r.out
    assert f"drain plan of {NODES[-1]}: " in r.out
    # the tour names one command per capability and where the reports are
    for needle in ("report compression", "report capacity", "rollouts list", "target status",
                   "plays list", "moves list", "drain n3 --dry-run", "status", "sql", "tui",
                   "demo-compression.html",
                   "demo-capacity.html", "demo-nightly-compression.html"):
        assert needle in r.out, needle


def test_the_compression_report_shows_what_the_policy_would_save(
        built: tuple[Path, Result]) -> None:
    inv, _ = built
    rep = ok("-i", str(inv), "report", "compression", "--json").json()
    t = rep["total"]
    assert rep["currency"] == "EUR" and {r["currency"] for r in rep["rows"]} == {"EUR"}
    assert 0 < t["possible_low"] < t["possible"] < t["possible_high"], t
    assert t["possible_money"] == pytest.approx(t["possible"] / 2**30 * 0.1, abs=0.01)
    assert t["estimated"] > 0 and t["unestimated"] == 0, t
    assert len(rep["top"]) == 15 and all(v["potential"] > 0 for v in rep["top"])
    # the figures are the mirror's: the same sums in SQL
    (want,) = sql(inv, "SELECT count(*) AS n, sum(logicalused) AS logical, "
                  "sum(used - coalesce(usedbyrefreservation, 0)) AS physical "
                  "FROM datasets WHERE type = 'volume'")
    assert (t["volumes"], t["logical"], t["physical"]) == (
        want["n"], want["logical"], want["physical"])
    (est,) = sql(inv, "SELECT count(DISTINCT node || ':' || name) AS n FROM "
                 "compression_estimates")
    assert est["n"] == demo.SAMPLE
    top = rep["top"][0]
    (row,) = sql(inv, f"SELECT ratio FROM compression_estimates WHERE node = '{top['node']}' "
                 f"AND name = '{top['name']}' AND algorithm = '{canonical(top['new'])}'")
    assert row["ratio"] == pytest.approx(top["ratio"])
    # the trend: a day a point, the last today's
    days = sql(inv, "SELECT day, sum(logicalused) AS logical FROM compression_daily "
               "GROUP BY day ORDER BY day")
    assert [p["day"] for p in rep["trend"]] == [d["day"] for d in days]
    assert len(days) == demo.HISTORY_DAYS and rep["trend"][-1]["logical"] == days[-1]["logical"]
    csv = ok("-i", str(inv), "report", "compression", "--csv").out.splitlines()
    assert "saved_money" in csv[0] and "currency" in csv[0] and csv[-1].count(",EUR,") == 1
    table = ok("-i", str(inv), "report", "compression").out
    assert "SAVED EUR/MONTH" in table and "POSSIBLE EUR/MONTH" in table, table
    assert "(price 0.1 EUR/GB-month)" in table


def test_the_capacity_report_has_a_week_of_history(built: tuple[Path, Result]) -> None:
    inv, _ = built
    rep = ok("-i", str(inv), "report", "capacity", "--json").json()
    assert len(rep["rows"]) == len(NODES)
    for r in rep["rows"]:
        assert r["days"] == demo.HISTORY_DAYS and r["growth_per_day"] is not None, r
        hist = rep["history"][f"{r['node']}/{r['pool']}"]
        (now,) = sql(inv, f"SELECT allocated FROM pools WHERE node = '{r['node']}'")
        assert len(hist) == demo.HISTORY_DAYS and hist[-1]["allocated"] == now["allocated"]
        assert r["allocated"] == now["allocated"]
    # the tenant that grew: its trend goes up to today's figures (the rows rewritten at the end)
    tenants = ok("-i", str(inv), "report", "capacity", "--by", "tenant", "--limit", "0",
                 "--json").json()["rows"]
    grew = next(t for t in tenants if t["tenant"] == demo.GROW_TENANT)
    (used,) = sql(inv, "SELECT sum(used) AS used FROM datasets WHERE type = 'volume' AND "
                  f"tenant = '{demo.GROW_TENANT}'")
    (today,) = sql(inv, "SELECT sum(used) AS used FROM tenant_daily WHERE tenant = "
                   f"'{demo.GROW_TENANT}' AND day = (SELECT max(day) FROM tenant_daily)")
    assert grew["used"] == used["used"] == today["used"]
    assert grew["days"] == demo.HISTORY_DAYS and (grew["growth_per_day"] or 0) > 0, grew


def test_a_volume_moved_a_day_and_its_bytes_with_it(built: tuple[Path, Result]) -> None:
    inv, _ = built
    done = ok("-i", str(inv), "moves", "list", "--json").json()
    assert len(done) == demo.HISTORY_DAYS - 1, done
    assert {(m["state"], m["source_node"], m["step"]) for m in done} == {
        ("done", "n1", "source destroyed")}
    for m in done:  # each volume is on its target only, its bytes counted there
        where = sql(inv, "SELECT node, used FROM datasets WHERE type = 'volume' AND name = "
                    f"'{m['volume']}' AND node IN ('n1', '{m['target_node']}')")
        assert [w["node"] for w in where] == [m["target_node"]], (m, where)
    # the pools' history follows: n1 gave, the targets took
    hist = ok("-i", str(inv), "report", "capacity", "--json").json()["history"]
    first, last = hist["n1/tank"][0]["allocated"], hist["n1/tank"][-1]["allocated"]
    assert last < first
    assert sum(h[-1]["allocated"] - h[0]["allocated"] for k, h in hist.items()
               if k != "n1/tank") > 0


def test_the_target_was_rolled_out_and_a_playbook_ran(built: tuple[Path, Result]) -> None:
    inv, _ = built
    (ro,) = ok("-i", str(inv), "rollouts", "list", "--json").json()
    assert (ro["state"], ro["version"], ro["nodes_done"]) == ("done", demo.TARGET_TO, 3)
    status = ok("-i", str(inv), "target", "status", "--json").json()
    assert {(s["node"], s["running"]) for s in status} == {(n, demo.TARGET_TO) for n in NODES}
    (run,) = ok("-i", str(inv), "plays", "list", "--json").json()
    assert run["state"] == "done" and run["file"].endswith(demo.PLAYBOOK)
    snaps = sql(inv, "SELECT count(*) AS n FROM datasets WHERE type = 'snapshot' AND "
                f"tenant = '{demo.GROW_TENANT}' AND name GLOB '*@nightly-*'")
    assert snaps[0]["n"] > 0
    # the simulated fleet's clock is today: no scrub months overdue
    alerts = ok("-i", str(inv), "status", "--json").json()["alerts"]
    assert [a for a in alerts if a["name"] == "XfleetScrubOverdue"] == []
    for name in demo.REPORTS.values():
        page = (inv.parent / name).read_text()
        assert "<svg" in page, name
    page = (inv.parent / demo.REPORTS["compression"]).read_text()
    assert "0.1 EUR per GB-month" in page and " EUR</b>" in page


def test_every_view_of_the_dashboard_has_figures(built: tuple[Path, Result]) -> None:
    inv_path, _ = built
    inv = inventory.load(inv_path)
    (counts,) = sql(inv_path, "SELECT count(*) AS n FROM datasets WHERE node = 'n1' AND "
                    "type = 'volume'")

    async def drive() -> dict[str, str]:
        seen = {}
        app = XfleetApp(inv.mirror, inventory=inv, poll_seconds=0)
        async with app.run_test(size=(180, 40)) as pilot:
            for name, view in (("nodes", FleetView), ("vols", VolumesView), ("ops", OpsView),
                               ("comp", CompView)):
                if name != "nodes":
                    await pilot.press("colon", *name, "enter")
                await settle(pilot)
                assert isinstance(app.screen, view)
                seen[name] = screen_text(app)
        return seen

    seen = asyncio.run(drive())
    for n in NODES:  # TARGET: the version the rollout left
        line = next(ln for ln in seen["nodes"].splitlines() if ln.strip().startswith(n))
        assert f" {demo.TARGET_TO} " in line and "ONLINE" in line, line
    n1 = next(ln for ln in seen["nodes"].splitlines() if ln.strip().startswith("n1"))
    assert f"{counts['n']:,}" in n1
    assert "XfleetScrubOverdue" not in seen["nodes"]
    assert "tank/t" in seen["vols"]
    ops = seen["ops"]
    assert "upgrade" in ops and f"target {demo.TARGET_TO}" in ops and "3/3 nodes" in ops, ops
    play = next(ln for ln in ops.splitlines() if "nightly snapshot" in ln)
    assert " play " in play and "6/6 steps" in play and "100%" in play, play
    assert "move" in ops and "n1->" in ops, ops
    assert "POSSIBLE" in seen["comp"] and "by tenant" in seen["comp"]


def test_the_demo_refuses_real_nodes_and_postgresql(tmp_path: Path) -> None:
    inv_path = tmp_path / "fleet.yaml"
    inv_path.write_text("all:\n  hosts:\n    real1: {address: 10.0.0.1}\n")
    inv = inventory.load(inv_path)
    with pytest.raises(UsageError, match="simulated nodes only; real1 is not"):
        demo.require_sim(inv)
    sim = inventory.load(write_sim_inventory(tmp_path / "sim.yaml", {"n1": {"volumes": 5}}))
    with pytest.raises(UsageError, match="does not reset a PostgreSQL"):
        demo.reset(sim, location("postgresql://x@db/fleet"))
    r = run_cli("-i", str(inv_path), "demo", "--no-tui")
    assert r.code != 0 and "simulated nodes only" in r.err and "Traceback" not in r.err


def test_reset_starts_the_simulated_nodes_and_the_mirror_afresh(tmp_path: Path) -> None:
    inv = inventory.load(write_sim_inventory(tmp_path / "sim.yaml", {"n1": {"volumes": 5}}))
    inv.state_dir.mkdir(parents=True)
    keep = inv.state_dir / "known_hosts"
    for name in ("sim-n1.sqlite", "sim-n1.target.json", "known_hosts"):
        (inv.state_dir / name).write_text("x")
    db = Path(str(inv.mirror))
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).write_text("x")
    demo.reset(inv, db)
    assert sorted(p.name for p in inv.state_dir.iterdir()) == [keep.name]
    assert not any(db.parent.glob(db.name + "*"))
