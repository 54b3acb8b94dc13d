"""`/metrics` (xfleet/serve/metrics.py) from a real `xfleet serve`: the figures are the
mirror's, and the series do not grow with the datasets; the standing replicas' series are
`xfleet replicate status`'s summary per policy and target node, and do not grow with the
replicas."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from unit.ops.moves.conftest import make_fleet
from unit.ops.replicate.conftest import replica, run_round
from unit.ops.replicate.test_journal import _add
from unit.serve.servekit import select, serve, synced_fleet
from xfleet import mirror
from xfleet.core.errors import UsageError
from xfleet.fleet import inventory
from xfleet.mirror import claims
from xfleet.mirror.backend import location
from xfleet.ops import alerts, moves
from xfleet.ops.replicate.journal import STATES
from xfleet.ops.replicate.status import summary
from xfleet.ops.sync import sync
from xfleet.serve.metrics import MirrorCollector, VolumeMetrics
from xfleet.serve.readers import Readers
from xfleet.sim import SimTransport

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(mirror_at: str, now: float) -> Samples:
    """One collection of the exporter's MirrorCollector on the mirror at `mirror_at`, its clock
    at `now`: every sample by (name, sorted labels)."""
    readers = Readers(location(mirror_at))
    reg = CollectorRegistry()
    reg.register(MirrorCollector(readers.read, clock=lambda: now))
    try:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(generate_latest(reg).decode())
                for s in fam.samples}
    finally:
        readers.close()


def test_metrics_are_the_mirror_s_figures(tmp_path: Path, mirror_at: str) -> None:
    inv = synced_fleet(tmp_path, mirror_at, n1=300, n2=200)
    with serve(inv, "--no-watch", mirror=mirror_at) as s:
        m = s.metrics()
        for node, pool, size, alloc, vols, snaps, volsize, synced in select(
                mirror_at, "SELECT node, name, size, allocated, volumes, snapshots, volsize, "
                "synced_at FROM pools"):
            lv = (("node", node), ("pool", pool))
            assert m[("xfleet_pool_size_bytes", lv)] == size
            assert m[("xfleet_pool_allocated_bytes", lv)] == alloc
            assert m[("xfleet_pool_capacity_ratio", lv)] == pytest.approx(alloc / size)
            assert m[("xfleet_pool_datasets", (*lv, ("type", "volume")))] == vols
            assert m[("xfleet_pool_datasets", (*lv, ("type", "snapshot")))] == snaps
            assert m[("xfleet_pool_volsize_bytes", lv)] == volsize
            assert m[("xfleet_pool_overcommit_ratio", lv)] == pytest.approx(volsize / size)
            assert m[("xfleet_pool_synced_timestamp_seconds", lv)] == pytest.approx(synced)
        for node, count, last in select(mirror_at,
                                        "SELECT name, datasets, last_success FROM nodes"):
            nl = (("node", node),)
            assert m[("xfleet_node_datasets", nl)] == count == select(
                mirror_at, "SELECT count(*) FROM datasets WHERE node = ?", (node,))[0][0]
            assert m[("xfleet_node_up", nl)] == 1
            assert m[("xfleet_node_last_sync_timestamp_seconds", nl)] == pytest.approx(last)
            assert m[("xfleet_node_watch_following", nl)] == 0
        engine = "sqlite" if "://" not in mirror_at else "postgresql"
        info = [k for k in m if k[0] == "xfleet_serve_info"]
        assert info and ("engine", engine) in info[0][1]
        assert ("process_resident_memory_bytes", ()) in m


def test_scrape_series_do_not_grow_with_the_datasets(tmp_path: Path) -> None:
    """Bounded cardinality: 10x the volumes, the same series; per-volume series only when
    asked for, capped."""
    counts = []
    for n in (100, 1000):
        db = str(tmp_path / f"m{n}.db")
        inv = synced_fleet(tmp_path / str(n), db, n1=n, n2=n)
        with serve(inv, "--no-watch", mirror=db) as s:
            counts.append({k for k in s.metrics() if k[0].startswith("xfleet_")
                           and not k[0].startswith("xfleet_serve_collect")})
    assert {k[0] for k in counts[0]} == {k[0] for k in counts[1]}
    assert len(counts[0]) == len(counts[1])
    db = str(tmp_path / "m1000.db")
    with serve(tmp_path / "1000" / "fleet.yaml", "--no-watch", "--volume-metrics", "top:5",
               mirror=db) as s:
        m = s.metrics()
    for node in ("n1", "n2"):
        got = sorted((k[1] for k in m if k[0] == "xfleet_volume_used_bytes"
                      and ("node", node) in k[1]), key=lambda lv: dict(lv)["volume"])
        top = select(db, "SELECT name FROM datasets WHERE node = ? AND type = 'volume' "
                     "ORDER BY used DESC LIMIT 5", (node,))
        assert sorted(dict(lv)["volume"] for lv in got) == sorted(r[0] for r in top)


def test_volume_metrics_options() -> None:
    v = VolumeMetrics.parse(["top:20", "tenant:acme", "tenant:b"], cap=50)
    assert (v.top, v.tenants, v.cap, v.enabled) == (20, ("acme", "b"), 50, True)
    assert not VolumeMetrics.parse([]).enabled
    for bad in ("top", "top:x", "top:0", "tenant:", "all"):
        with pytest.raises(UsageError, match="volume-metrics"):
            VolumeMetrics.parse([bad])


def test_job_states_and_stalled_jobs(tmp_path: Path, mirror_at: str) -> None:
    """xfleet_jobs counts each kind's jobs by state; xfleet_jobs_stalled the claimed ones whose
    holder stopped beating (the same test as the alert XfleetMoveStuck: jobs.stalled)."""
    inv_path = synced_fleet(tmp_path, mirror_at, n1=20, n2=20)
    inv = inventory.load(inv_path)
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    t.run(["zfs", "create", "-p", "tank/m"])
    for v in ("tank/m/a", "tank/m/b"):
        t.run(["zfs", "create", "-s", "-V", "1G", v])
    assert sync(inv, mirror_at, ["n1"]).ok
    conn = mirror.connect(mirror_at)
    try:
        first, second = moves.create_many(inv, conn, [
            moves.plan_move(inv, conn, v, "n2", source_node="n1")
            for v in ("tank/m/a", "tank/m/b")])
        first.state, first.error = "failed", "cannot receive"
        moves.save(conn, first, "failed: cannot receive")
        moves.claim(conn, second)  # this process holds it, and then stops beating
        second.state = "catchup"
        second.options["live_state"] = {"prepared": True, "switching": True}  # mid-switch
        moves.save(conn, second)
        beat = conn.execute("SELECT heartbeat FROM moves WHERE id = ?",
                            (second.id,)).fetchone()[0]
    finally:
        conn.close()

    m = scrape(mirror_at, beat + 1)
    assert m[("xfleet_jobs", (("kind", "move"), ("state", "failed")))] == 1
    assert m[("xfleet_jobs", (("kind", "move"), ("state", "catchup")))] == 1
    assert m[("xfleet_jobs_stalled", (("kind", "move"),))] == 0
    assert m[("xfleet_moves_io_held", ())] == 0  # its process beat a second ago
    # a minute without a beat in a live switch: the hosts' I/O is held (well before the lease)
    assert scrape(mirror_at, beat + alerts.IO_HELD_AFTER + 1)[("xfleet_moves_io_held", ())] == 1
    late = scrape(mirror_at, beat + claims.STALE + 5)
    assert late[("xfleet_jobs_stalled", (("kind", "move"),))] == 1
    assert late[("xfleet_jobs_stalled", (("kind", "rollout"),))] == 0
    # the snapshot runs are a kind of their own; standing replicas are no jobs (xfleet_replicas)
    assert late[("xfleet_jobs_stalled", (("kind", "snapshot"),))] == 0
    assert not [k for k in late if k[0].startswith("xfleet_jobs") and ("kind", "replica")
                in k[1]]


def test_replica_series_are_the_status_summary(tmp_path: Path, mirror_at: str) -> None:
    """A replication round on the simulated fleet (n1:tank/app/db to n2, rpo 1h), and beside
    it rows of the other states: the series per (policy, target node) are `xfleet replicate
    status`'s summary and the counts by state; a promoted replica is counted by state only."""
    inv, _, _ = make_fleet(tmp_path, mirror_at)
    res = run_round(inv)
    assert (res.replicas, res.failed, len(res.sent)) == (1, [], 1)
    sent = replica(inv)
    assert sent.state == "idle" and sent.as_of is not None and sent.last_round_at is not None
    base = sent.as_of  # the simulator's clock, not the wall clock
    conn = mirror.connect(mirror_at)
    try:
        with mirror.transaction(conn, "test: replicas in the other states"):
            _add(conn, "tank/app/new", state="new", policy="app")
            _add(conn, "tank/app/bad", as_of=base - 600, state="failed", policy="app")
            _add(conn, "tank/app/was", as_of=base - 99999, state="promoted", policy="app")
            _add(conn, "tank/db/x", "n3", as_of=base - 60, rpo=86400, policy="db")
        groups = {(g["policy"], g["target_node"]): g for g in summary(conn, base + 60)}
    finally:
        conn.close()

    m = scrape(mirror_at, base + 60)
    app, db = (("policy", "app"), ("target_node", "n2")), (("policy", "db"),
                                                             ("target_node", "n3"))
    by_state = {(dict(k[1])["policy"], dict(k[1])["state"]): v for k, v in m.items()
                if k[0] == "xfleet_replicas"}
    assert by_state == {
        **{("app", s): 0.0 for s in STATES}, ("app", "idle"): 1, ("app", "new"): 1,
        ("app", "failed"): 1, ("app", "promoted"): 1,
        **{("db", s): 0.0 for s in STATES}, ("db", "idle"): 1}
    assert m[("xfleet_replicas_over_rpo", app)] == 1  # the one never sent
    assert m[("xfleet_replicas_never_sent", app)] == 1
    assert m[("xfleet_replica_lag_max_seconds", app)] == pytest.approx(660)  # not promoted
    assert m[("xfleet_replica_rpo_seconds", app)] == 3600
    assert m[("xfleet_replica_last_round_timestamp_seconds", app)] == pytest.approx(
        sent.last_round_at)
    assert m[("xfleet_replicas_over_rpo", db)] == m[("xfleet_replicas_never_sent", db)] == 0
    assert m[("xfleet_replica_lag_max_seconds", db)] == pytest.approx(120)
    assert m[("xfleet_replica_rpo_seconds", db)] == 86400
    assert ("xfleet_replica_last_round_timestamp_seconds", db) not in m  # no round yet
    for (policy, target), g in groups.items():
        lv = (("policy", policy), ("target_node", target))
        assert m[("xfleet_replicas_over_rpo", lv)] == g["over_rpo"]
        assert m[("xfleet_replicas_never_sent", lv)] == g["never"]
        assert m[("xfleet_replicas", tuple(sorted((*lv, ("state", "failed")))))] == \
            g["failed"]
        assert sum(v for (p, s), v in by_state.items() if p == policy and s != "promoted") \
            == g["replicas"]
    # an hour later every standing replica of `app` is over its RPO
    late = scrape(mirror_at, base + 3601)
    assert late[("xfleet_replicas_over_rpo", app)] == 3
    assert late[("xfleet_replicas_over_rpo", db)] == 0


def test_replica_series_do_not_grow_with_the_replicas(tmp_path: Path) -> None:
    """Bounded cardinality: 10 then 1,010 replicas over two policies and two target nodes, in
    every state: the same 4 x 11 series (per policy and target node, never per volume)."""
    db = str(tmp_path / "mirror.db")
    conn = mirror.connect(db)
    now = time.time()

    def add(first: int, n: int) -> None:
        with mirror.transaction(conn, "test: many replicas"):
            for i in range(first, first + n):
                state = STATES[i % len(STATES)]
                conn.execute(
                    "INSERT INTO replicas (policy, source_node, volume, target_node, "
                    "target_volume, rpo, state, as_of, last_round_at, created_at, updated_at) "
                    "VALUES (?, 'n1', ?, ?, ?, 3600, ?, ?, ?, ?, ?)",
                    (("db", "web")[i % 2], f"tank/v{i:05d}", ("n2", "n3")[i // 2 % 2],
                     f"tank/v{i:05d}", state, None if state == "new" else now - 60 * i,
                     None if state == "new" else now - 60 * i, now, now))

    seen = []
    try:
        for first, n in ((0, 10), (10, 1000)):
            add(first, n)
            seen.append({k for k in scrape(db, now) if k[0].startswith("xfleet_replica")})
    finally:
        conn.close()
    assert seen[0] == seen[1]
    assert len(seen[1]) == 4 * (len(STATES) + 5), sorted(seen[1])
