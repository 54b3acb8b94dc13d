"""The alert conditions judged on the mirror (xfleet/ops/alerts.py), on both engines: a
simulated fleet synced into the mirror with pools filled to chosen capacities (the simulator's
pool_size) and its clock at the test's (so its last scrubs are days old), a node whose syncs
fail, an event gap, moves and a rollout written by their journals, standing replicas as rows of
`replicas`; pool health, errors and scrub ages by UPDATE (the simulator's pools are always
ONLINE and error-free, and scrubbed 3 to 23 days before its clock). Every alert comes with its
severity, what it is about, a hint, and when it began where the mirror knows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import write_sim_inventory

from unit.ops.moves.conftest import move_row
from unit.ops.replicate.test_journal import _add
from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.mirror import claims
from xfleet.mirror.backend import Connection
from xfleet.ops import alerts, moves, rollout
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport

DAY = 86400.0
# capacity the fleet's pools are filled to: n1 healthy, n2 above the warning, n3 the critical
FILL = {"n1": None, "n2": 0.85, "n3": 0.95}
DOWN = ("    n4:\n      kind: ssh\n      address: 127.0.0.1\n      port: 1\n"
        "      connect_timeout: 2\n      connect_retries: 1\n")


@dataclass(frozen=True)
class Forecast:
    """Stands in for xfleet.ops.capacity's Forecast (alerts.ForecastLike)."""

    node: str
    pool: str
    days_until: dict[int, float | None] = field(default_factory=dict)


def build(tmp_path: Path, mirror_at: str, *, down: bool = False) -> inventory.Inventory:
    """n1..n3 (40 volumes each) synced into `mirror_at`, their pools sized so that what the
    simulator allocates fills them to FILL (n1: 1 TiB, 7 %, volumes promise 0.7x); with
    `down`, n4 too, an ssh node nobody answers for (its sync fails). Every pool healthy, its
    last scrub finished days ago (the simulator's clock is now)."""
    sizes = {n: 1 << 40 for n in FILL}
    clock = int(time.time())

    def write() -> inventory.Inventory:
        path = write_sim_inventory(tmp_path / "fleet.yaml", {
            n: {"seed": i + 1, "volumes": 40, "pool_size": sizes[n], "now": clock}
            for i, n in enumerate(FILL)})
        text = path.read_text().replace("mirror: mirror.db\n", f"mirror: {mirror_at}\n")
        path.write_text(text + (DOWN if down else ""))
        return inventory.load(path)

    rep = sync(write())
    assert [n.node for n in rep.nodes if not n.ok] == (["n4"] if down else []), rep
    conn = mirror.connect(mirror_at)
    try:
        for node, fill in FILL.items():
            if fill is not None:
                allocated = conn.execute("SELECT allocated FROM pools WHERE node = ?",
                                         (node,)).fetchone()[0]
                sizes[node] = int(allocated / fill)
        inv = write()
        sync(inv)
        pools = {r[0]: dict(r) for r in conn.execute("SELECT * FROM pools")}
    finally:
        conn.close()
    for node, fill in FILL.items():
        p = pools[node]
        assert fill is None or abs(p["allocated"] / p["size"] - fill) < 0.005, (node, p)
        assert (p["health"], p["scan_function"], p["scan_state"], p["checksum_errors"]) == (
            "ONLINE", "SCRUB", "FINISHED", 0), p
        assert 0 < clock - p["scan_end"] < 30 * DAY and p["health_at"] is not None, p
    assert pools["n1"]["allocated"] / pools["n1"]["size"] < 0.5, pools["n1"]
    return inv


@pytest.fixture
def fleet_at(tmp_path: Path, mirror_at: str) -> inventory.Inventory:
    return build(tmp_path, mirror_at)


def seen(found: list[alerts.Alert]) -> list[tuple[str, str, str | None, str | None]]:
    return [(a.severity, a.name, a.node, a.pool or a.job) for a in found]


def update(conn: Connection, sql: str, *args: object) -> None:
    with mirror.transaction(conn, "test: a state the simulator cannot produce"):
        conn.execute(sql, args)


def test_the_fleet_alerts_on_its_full_and_overcommitted_pools_only(
        fleet_at: inventory.Inventory) -> None:
    conn = mirror.connect(fleet_at.mirror, readonly=True)
    found = alerts.evaluate(conn, now=time.time())
    assert seen(found) == [
        ("critical", "XfleetPoolCapacityCritical", "n3", "tank"),  # only the critical one
        ("warning", "XfleetPoolCapacityHigh", "n2", "tank"),
        ("warning", "XfleetPoolOvercommitted", "n2", "tank"),
        ("warning", "XfleetPoolOvercommitted", "n3", "tank"),
    ], found
    crit, high = found[0], found[1]
    assert crit.summary.startswith("pool n3:tank is 95% full") and "drain n3" in crit.hint
    assert high.summary == "pool n2:tank is 85% full" and "xfleet report capacity" in high.hint
    assert "x its size" in found[2].summary and found[2].since is None
    assert alerts.evaluate(conn, now=time.time(), nodes=["n1"]) == []
    assert [a.to_dict()["name"] for a in found] == [a.name for a in found]


def test_pool_health_errors_and_scrubs(fleet_at: inventory.Inventory) -> None:
    conn = mirror.connect(fleet_at.mirror)
    now = time.time()

    def pool_alerts(node: str) -> list[tuple[str, str, str | None, str | None]]:
        return seen(alerts.evaluate(conn, now=now, nodes=[node]))

    assert pool_alerts("n1") == []
    update(conn, "UPDATE pools SET health = 'DEGRADED', checksum_errors = 3 WHERE node = 'n1'")
    found = alerts.evaluate(conn, now=now, nodes=["n1"])
    assert seen(found) == [("critical", "XfleetPoolDegraded", "n1", "tank"),
                           ("warning", "XfleetPoolErrors", "n1", "tank")]
    assert found[0].summary == "pool n1:tank is DEGRADED"
    assert found[0].hint.startswith("zpool status -v tank on n1")
    assert "3 read/write/checksum error(s) and 0 file(s)" in found[1].summary
    update(conn, "UPDATE pools SET health = 'ONLINE', checksum_errors = 0, data_errors = 1 "
           "WHERE node = 'n1'")
    assert pool_alerts("n1") == [("warning", "XfleetPoolErrors", "n1", "tank")]
    update(conn, "UPDATE pools SET data_errors = 0 WHERE node = 'n1'")

    # a scrub that finished 34 days ago is due, 36 days ago overdue (since day 35)
    update(conn, "UPDATE pools SET scan_end = ? WHERE node = 'n1'", now - 34 * DAY)
    assert pool_alerts("n1") == []
    update(conn, "UPDATE pools SET scan_end = ? WHERE node = 'n1'", now - 36 * DAY)
    (scrub,) = alerts.evaluate(conn, now=now, nodes=["n1"])
    assert (scrub.name, scrub.severity) == ("XfleetScrubOverdue", "warning")
    assert scrub.summary == "pool n1:tank was last scrubbed 36d00h ago"
    assert scrub.since == pytest.approx(now - DAY) and scrub.hint.startswith("zpool scrub tank")
    # a scrub running now is not overdue; a resilver, a cancelled scrub or none are no scrub
    update(conn, "UPDATE pools SET scan_state = 'SCANNING', scan_end = NULL WHERE node = 'n1'")
    assert pool_alerts("n1") == []
    for function, state in (("RESILVER", "FINISHED"), ("SCRUB", "CANCELED"), (None, None)):
        update(conn, "UPDATE pools SET scan_function = ?, scan_state = ?, scan_end = ? "
               "WHERE node = 'n1'", function, state, now - DAY)
        (never,) = alerts.evaluate(conn, now=now, nodes=["n1"])
        assert never.summary == "pool n1:tank has no finished scrub on record", function
        assert never.since is None
    # a pool whose health was never read is not judged on scrubs
    update(conn, "UPDATE pools SET health_at = NULL WHERE node = 'n1'")
    assert pool_alerts("n1") == []


def test_a_failing_node_a_stale_mirror_and_an_event_gap(tmp_path: Path, mirror_at: str) -> None:
    inv = build(tmp_path, mirror_at, down=True)
    conn = mirror.connect(inv.mirror, readonly=True)
    now = time.time()
    found = alerts.evaluate(conn, now=now, nodes=["n1", "n4"])
    assert seen(found) == [("critical", "XfleetNodeDown", "n4", None)]
    assert found[0].summary.startswith("xfleet cannot sync n4: ") and "cannot connect" in \
        found[0].summary, found[0]
    assert found[0].hint == "xfleet sync --node n4 (retries and says why it fails)"

    # ten minutes without a sync or a watch: stale, since the lag passed 600 s; a down node
    # says so instead
    last = {r[0]: r[1] for r in conn.execute("SELECT name, last_success FROM nodes")}
    later = seen(alerts.evaluate(conn, now=last["n1"] + 601, nodes=["n1", "n4"]))
    assert later == [("critical", "XfleetNodeDown", "n4", None),
                     ("warning", "XfleetMirrorStale", "n1", None)]
    stale = alerts.evaluate(conn, now=last["n1"] + 700, nodes=["n1"])[0]
    assert stale.since == pytest.approx(last["n1"] + 600)
    assert "last confirmed current 11m40s ago" in stale.summary
    assert alerts.evaluate(conn, now=last["n1"] + 599, nodes=["n1"]) == []

    # the node's event queue cleared under the mirror: a gap, caught up by the next sync
    t = SimTransport(inv.hosts["n2"], state_dir=inv.state_dir)
    t.run(["zfs", "snapshot", "tank/t0000@gap"])
    t.run(["zpool", "events", "-c"])
    assert sync(inv, nodes=["n2"]).ok
    gap_at = conn.execute("SELECT last_gap_at FROM nodes WHERE name = 'n2'").fetchone()[0]
    assert gap_at is not None
    (gap,) = [a for a in alerts.evaluate(conn, now=gap_at + 60, nodes=["n2"])
              if a.name == "XfleetEventGaps"]
    assert (gap.severity, gap.name, gap.node, gap.since) == ("info", "XfleetEventGaps", "n2",
                                                             gap_at)
    assert gap.summary.startswith("the change feed of n2 lost events 1m00s ago: ")
    assert "XfleetEventGaps" not in [a.name for a in alerts.evaluate(conn, now=gap_at + 3601)]


def test_failed_and_stuck_moves_and_a_halted_rollout(fleet_at: inventory.Inventory) -> None:
    inv = fleet_at
    conn = mirror.connect(inv.mirror)
    now = time.time()

    def jobs_at(when: float, nodes: list[str] | None = None) -> list[tuple[str, str | None]]:
        return [(a.name, a.job) for a in alerts.evaluate(conn, now=when, nodes=nodes)
                if a.job is not None]

    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    vols = ["tank/alert/a", "tank/alert/b"]  # names n2 does not have
    t.run(["zfs", "create", "-p", "tank/alert"])
    for v in vols:
        t.run(["zfs", "create", "-s", "-V", "1G", v])
    assert sync(inv, nodes=["n1"]).ok
    first, second = moves.create_many(
        inv, conn, [moves.plan_move(inv, conn, v, "n2", source_node="n1") for v in vols])
    assert jobs_at(now) == []  # planned, nobody took them yet: not stuck
    first.state, first.step, first.error = "failed", "failed in base", "cannot receive\nmore"
    moves.save(conn, first, "failed: cannot receive")
    moves.claim(conn, second)  # this process holds it, beating
    second.state = "catchup"
    moves.save(conn, second)
    assert jobs_at(now + 1) == [("XfleetMoveFailed", f"move {first.id}")]
    failed = alerts.evaluate(conn, now=now + 1, nodes=["n2"])
    failed = [a for a in failed if a.job]
    assert failed[0].summary == (f"move {first.id} of {vols[0]} (n1 -> n2) failed in base: "
                                 "cannot receive")
    assert failed[0].hint == (f"xfleet moves show {first.id}; then xfleet moves resume "
                              f"{first.id} (or xfleet moves abort {first.id} --yes)")
    assert failed[0].node == "n1" and failed[0].severity == "warning"
    # the holder stops beating: stuck once its heartbeat is older than the lease
    beat = conn.execute("SELECT heartbeat FROM moves WHERE id = ?", (second.id,)).fetchone()[0]
    lease = claims.STALE
    assert jobs_at(beat + lease - 1) == [("XfleetMoveFailed", f"move {first.id}")]
    late = [a for a in alerts.evaluate(conn, now=beat + lease + 5) if a.name == "XfleetMoveStuck"]
    assert [(a.job, a.since) for a in late] == [(f"move {second.id}", beat + lease)]
    assert late[0].summary.startswith(f"move {second.id} of {vols[1]} (n1 -> n2) in catchup: "
                                      "no heartbeat for 2m")
    assert late[0].hint.startswith(f"xfleet moves resume {second.id}")
    assert jobs_at(now, nodes=["n3"]) == []  # moves between n1 and n2 only

    rid = rollout.create(inv.mirror, "2.0.0", ["n1", "n2"], {}, rollout.Options())
    assert jobs_at(now, nodes=["n3"]) == []  # staging
    rollout.set_state(conn, rid, "paused", "1 node(s) failed in batch 1")
    (halted,) = [a for a in alerts.evaluate(conn, now=now, nodes=["n3"]) if a.job]
    assert (halted.name, halted.severity, halted.node, halted.job) == (
        "XfleetRolloutHalted", "warning", None, f"rollout {rid}")
    assert halted.summary == f"rollout {rid} to 2.0.0 is paused: 1 node(s) failed in batch 1"
    assert halted.hint.startswith(f"xfleet rollouts show {rid}")
    # node alerts come before the fleet's, within a severity
    order = [a.job for a in alerts.evaluate(conn, now=now + 1) if a.severity == "warning"]
    assert order.index(f"move {first.id}") < order.index(f"rollout {rid}")


def test_replicas_over_their_rpo_and_failed(fleet_at: inventory.Inventory) -> None:
    """Per policy and target node, as the rules: one alert for a policy's replicas on a node,
    whatever their number; never-sent replicas are over their RPO, promoted ones not counted."""
    conn = mirror.connect(fleet_at.mirror)
    now = time.time()
    with mirror.transaction(conn, "test: replicas"):
        _add(conn, "tank/ok", as_of=now - 60)  # policy db to n2, rpo 1h
        _add(conn, "tank/late", as_of=now - 7200)
        _add(conn, "tank/never", state="new")
        _add(conn, "tank/failed", as_of=now - 120, state="failed")
        _add(conn, "tank/was", as_of=now - 99999, state="promoted")
        _add(conn, "tank/dr", "n3", as_of=now - 10, rpo=86400)  # db to n3: within its rpo
        _add(conn, "tank/web", "n3", state="new", policy="web")

    def replica_alerts(nodes: list[str] | None = None) -> list[alerts.Alert]:
        return [a for a in alerts.evaluate(conn, now=now, nodes=nodes)
                if a.name.startswith("XfleetReplica")]

    found = replica_alerts()
    assert seen(found) == [("warning", "XfleetReplicaFailed", "n2", "policy db"),
                           ("warning", "XfleetReplicaOverRPO", "n2", "policy db"),
                           ("warning", "XfleetReplicaOverRPO", "n3", "policy web")], found
    failed, over, web = found
    assert failed.summary == "1 replica(s) of policy db on n2 failed in their last round"
    assert failed.hint.startswith("xfleet replicate status") and failed.since is None
    assert over.summary == ("2 of 4 replica(s) of policy db on n2 are over their RPO of 1h00m "
                            "(1 never sent; the most behind is 2h00m old)")
    assert over.since == pytest.approx(now - 3600)  # when tank/late passed its RPO
    assert "xfleet replicate status" in over.hint
    assert web.summary == "1 of 1 replica(s) of policy web on n3 are over their RPO of 1h00m " \
        "(1 never sent)"
    assert web.since is None  # never sent: the mirror does not say since when
    assert seen(replica_alerts(["n3"])) == [("warning", "XfleetReplicaOverRPO", "n3",
                                             "policy web")]
    assert replica_alerts(["n1"]) == []  # replicas from n1 alert on their target node
    # sent and caught up: no alert
    update(conn, "UPDATE replicas SET state = 'idle', as_of = ? WHERE state != 'promoted'",
           now - 30)
    assert replica_alerts() == []


def test_forecasts_that_fill_a_pool_within_two_weeks(fleet_at: inventory.Inventory) -> None:
    conn = mirror.connect(fleet_at.mirror, readonly=True)
    forecasts = [Forecast("n1", "tank", {80: 3.0, 90: 9.5, 100: 20.0}),
                 Forecast("n2", "tank", {80: 1.0, 90: 14.0}),  # not under 14 days
                 Forecast("n3", "tank", {80: None, 90: None, 100: None})]  # not growing
    found = alerts.evaluate(conn, now=time.time(), forecasts=forecasts, nodes=["n1", "n2"])
    filling = [a for a in found if a.name == "XfleetPoolFillingUp"]
    assert seen(filling) == [("warning", "XfleetPoolFillingUp", "n1", "tank")]
    assert filling[0].summary == "pool n1:tank reaches 90% full in 9.5 days at its trend"
    assert alerts.evaluate(conn, now=time.time(), forecasts=forecasts, nodes=["n3"])[0].name \
        == "XfleetPoolCapacityCritical"


def test_a_bounded_number_of_queries_none_on_datasets(tmp_path: Path) -> None:
    inv = build(tmp_path, str(tmp_path / "mirror.db"))
    conn = mirror.connect(inv.mirror, readonly=True)
    statements: list[str] = []
    assert hasattr(conn, "set_trace_callback")
    conn.set_trace_callback(statements.append)
    alerts.evaluate(conn, now=time.time())
    # nodes, pools, moves (failed or stuck), moves not ended (XfleetMoveIOHeld), rollouts,
    # snapshot runs, replicas
    assert len(statements) == 7, statements
    assert not [s for s in statements if "datasets" in s], statements


def test_a_failed_snapshot_run_is_an_alert_until_it_is_resumed(
        fleet_at: inventory.Inventory) -> None:
    """XfleetSnapshotRunFailed, one per failed run (it stays failed until `--resume`), with
    where it stopped; done and running runs are none; the runs concern policies, so any node
    filter shows them."""
    conn = mirror.connect(fleet_at.mirror)
    now = time.time()
    rows = [("failed", "taking: n2 refused: out of space", 40, 0),
            ("done", None, 80, 12), ("running", "pruning", 80, 3)]
    for state, step, taken, pruned in rows:
        conn.execute("INSERT INTO snapshot_runs (policy, policy_digest, mode, at, names, "
                     "max_prune, state, step, taken, pruned, created_at, updated_at) VALUES "
                     "('/etc/xfleet/snapshots.yaml', 'd', 'run', ?, '{}', 100, ?, ?, ?, ?, ?, "
                     "?)", (now - 600, state, step, taken, pruned, now - 600, now - 300))
    failed_id = conn.execute("SELECT id FROM snapshot_runs WHERE state = 'failed'").fetchone()[0]

    def runs(nodes: list[str] | None = None) -> list[alerts.Alert]:
        return [a for a in alerts.evaluate(conn, now=now, nodes=nodes)
                if a.name == "XfleetSnapshotRunFailed"]

    (a,) = runs()
    assert (a.severity, a.node, a.job, a.since) == ("warning", None,
                                                    f"snapshot run {failed_id}", now - 300)
    assert a.summary == (f"snapshot run {failed_id} (policies /etc/xfleet/snapshots.yaml) "
                         "failed taking: n2 refused: out of space after 40 taken, 0 pruned")
    assert a.hint.endswith(f"xfleet snapshots run --resume {failed_id}")
    assert [x.job for x in runs(nodes=["n3"])] == [f"snapshot run {failed_id}"]
    conn.execute("UPDATE snapshot_runs SET state = 'done' WHERE id = ?", (failed_id,))
    assert runs() == []  # resumed to its end
    conn.close()


def test_a_move_that_died_in_a_live_switch_says_the_hosts_io_is_held(
        fleet_at: inventory.Inventory) -> None:
    """XfleetMoveStuck of a move whose process died between the hold and the release of a live
    cutover (live_state.switching, not switched) says the hosts' I/O is held; a stuck move
    that was not switching does not."""
    conn = mirror.connect(fleet_at.mirror)
    now = time.time()
    ids = [move_row(conn, "n1", "n2", "cutover", 4242, now - 3600) for _ in range(2)]
    conn.execute("UPDATE moves SET options = ? WHERE id = ?",
                 ('{"live": true, "live_state": {"prepared": true, "switching": true}}', ids[0]))
    conn.execute("UPDATE moves SET options = ? WHERE id = ?",
                 ('{"live": true, "live_state": {"prepared": true}}', ids[1]))
    stuck = {a.job: a.summary for a in alerts.evaluate(conn, now=now)
             if a.name == "XfleetMoveStuck"}
    conn.close()
    assert stuck[f"move {ids[0]}"].endswith(
        "it died in a live switch: the hosts' I/O is held until it is resumed"), stuck
    assert "live switch" not in stuck[f"move {ids[1]}"], stuck


def test_a_move_dead_in_a_live_switch_is_critical_within_a_minute(
        fleet_at: inventory.Inventory) -> None:
    """XfleetMoveIOHeld: a move in a live switch whose process stopped beating 60 s ago (not
    the lease), or which no process holds any more (it failed without a path back); not one
    whose process beats, nor one that switched, nor one that never began its switch."""
    conn = mirror.connect(fleet_at.mirror)
    now = time.time()
    switching = '{"live": true, "live_state": {"prepared": true, "switching": true}}'
    rows = {
        "dead": (move_row(conn, "n1", "n2", "cutover", 4242, now - 90), switching),
        "alive": (move_row(conn, "n1", "n2", "cutover", 4242, now - 5), switching),
        "failed": (move_row(conn, "n2", "n1", "failed", None, now - 5), switching),
        "switched": (move_row(conn, "n1", "n2", "cutover", 4242, now - 90),
                     '{"live": true, "live_state": {"switched": true, "held": 1.2}}'),
        "before": (move_row(conn, "n1", "n2", "cutover", 4242, now - 90),
                   '{"live": true, "live_state": {"prepared": true}}'),
    }
    for mid, opts in rows.values():
        conn.execute("UPDATE moves SET options = ? WHERE id = ?", (opts, mid))
    held = {str(a.job): a for a in alerts.evaluate(conn, now=now)
            if a.name == "XfleetMoveIOHeld"}
    only_n3 = [a.job for a in alerts.evaluate(conn, now=now, nodes=["n3"])
               if a.name == "XfleetMoveIOHeld"]
    assert [h.id for h in alerts.io_held(conn, now)] == [rows["dead"][0], rows["failed"][0]]
    conn.close()
    assert sorted(held) == sorted(f"move {rows[k][0]}" for k in ("dead", "failed")), held
    dead = held[f"move {rows['dead'][0]}"]
    assert dead.severity == "critical" and "the hosts' I/O is held" in dead.summary
    assert dead.summary.endswith("(pid 4242 on elsewhere) stopped beating 1m30s ago"), \
        dead.summary
    assert dead.hint.startswith(f"xfleet moves resume {rows['dead'][0]}")
    assert "no process holds it (failed)" in held[f"move {rows['failed'][0]}"].summary
    assert only_n3 == []
