"""`xfleet status` shows the alert conditions of the shipped rules after its node table, and
as `alerts` in its --json: here a node whose pool the simulator fills (a small pool_size), a
paused rollout, which concerns the fleet and shows whatever --node selects, and a pool whose
capacity history (xfleet.ops.capacity) says it fills within two weeks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import write_sim_inventory

from unit.cli.conftest import Cli
from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.ops import capacity, rollout


@pytest.fixture
def fleet(tmp_path: Path, cli: Cli) -> Path:
    """n1's pool is full (2 GiB for 20 volumes) and its volumes promise many times its size;
    n2's is roomy (64 TiB). Synced, the simulator's clock at ours (its last scrubs are days
    old)."""
    now = int(time.time())
    inv = write_sim_inventory(tmp_path / "fleet.yaml", {
        "n1": {"seed": 1, "volumes": 20, "pool_size": "2G", "now": now},
        "n2": {"seed": 2, "volumes": 20, "pool_size": "64T", "now": now}})
    r = cli("-i", str(inv), "sync", "--json")
    assert r.code == 0, f"xfleet sync exited {r.code}\n{r.err}"
    return inv


def test_status_lists_the_alerts_that_hold(fleet: Path, cli: Cli) -> None:
    r = cli("-i", str(fleet), "status", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert [n["node"] for n in doc["nodes"]] == ["n1", "n2"]
    got = [(a["severity"], a["name"], a["node"], a["pool"]) for a in doc["alerts"]]
    assert got == [("critical", "XfleetPoolCapacityCritical", "n1", "tank"),
                   ("warning", "XfleetPoolOvercommitted", "n1", "tank")], doc["alerts"]
    crit = doc["alerts"][0]
    assert crit["summary"].startswith("pool n1:tank is 100% full") and crit["since"] is None
    assert set(crit) == {"name", "severity", "node", "pool", "job", "summary", "hint", "since"}

    text = cli("-i", str(fleet), "status")
    assert text.code == 0, text.err
    table, _, section = text.out.partition("\nalerts: ")
    assert "n1" in table and "LAG" in table
    assert section.startswith("1 critical, 1 warning (the conditions of "
                              "docs/alerts/xfleet.rules.yml, shown as soon as they hold)")
    lines = section.splitlines()
    assert lines[1].split() == ["SEVERITY", "ALERT", "SUMMARY", "HINT"]
    assert lines[2].split()[:2] == ["critical", "XfleetPoolCapacityCritical"]
    assert "xfleet drain n1 --dry-run" in lines[2]
    assert lines[3].split()[:2] == ["warning", "XfleetPoolOvercommitted"]


def test_node_selection_and_fleet_wide_alerts(fleet: Path, cli: Cli) -> None:
    r = cli("-i", str(fleet), "status", "--node", "n2")
    assert r.code == 0, r.err
    assert "\nalerts: none (" in r.out and "Xfleet" not in r.out, r.out
    inv = inventory.load(fleet)
    rid = rollout.create(inv.mirror, "2.0.0", ["n1", "n2"], {}, rollout.Options())
    conn = mirror.connect(inv.mirror)
    try:
        rollout.set_state(conn, rid, "paused", "1 node(s) failed in batch 0")
    finally:
        conn.close()
    doc = cli("-i", str(fleet), "status", "--node", "n2", "--json").json()
    assert [(a["name"], a["job"], a["node"]) for a in doc["alerts"]] == [
        ("XfleetRolloutHalted", f"rollout {rid}", None)]
    assert doc["alerts"][0]["since"] is not None
    text = cli("-i", str(fleet), "status", "--node", "n2").out
    assert "alerts: 1 warning" in text and "SINCE" in text, text
    assert f"rollout {rid} to 2.0.0 is paused: 1 node(s) failed" in text, text


def test_a_pool_filling_up_by_its_capacity_history(fleet: Path, cli: Cli) -> None:
    inv = inventory.load(fleet)
    conn = mirror.connect(inv.mirror)
    now = time.time()
    try:
        # three days of growth, 10 % of the pool a day, recorded by the capacity module's own
        # writer at past times (the simulator's pools do not grow by themselves)
        for days_ago, fill in ((3, 0.4), (2, 0.5), (1, 0.6), (0, 0.7)):
            with mirror.transaction(conn, "test: the pool grows"):
                conn.execute("UPDATE pools SET allocated = CAST(size * ? AS INTEGER) "
                             "WHERE node = 'n2'", (fill,))
            capacity.record_daily(conn, now - days_ago * 86400)
    finally:
        conn.close()
    doc = cli("-i", str(fleet), "status", "--node", "n2", "--json").json()
    assert [(a["name"], a["node"], a["pool"]) for a in doc["alerts"]] == [
        ("XfleetPoolFillingUp", "n2", "tank")], doc["alerts"]
    assert doc["alerts"][0]["summary"] == \
        "pool n2:tank reaches 90% full in 2.0 days at its trend"
