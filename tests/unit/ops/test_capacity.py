"""The capacity history, trend and forecasts (xfleet/ops/capacity.py), on both engines: the
maths against a hand-computed example, the daily history recorded at chosen times from a
simulated fleet whose pools grow (by new volumes, and by a growing base fleet: the simulator has
no data path), tenant figures against the mirror's own sums, the once-an-hour tenant rewrite,
and a bounded number of queries for `forecasts` whatever the number of volumes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import write_sim_inventory

from xfleet import mirror
from xfleet.core.errors import MirrorError, UsageError
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.mirror.backend import Connection
from xfleet.ops import capacity
from xfleet.ops.sync import sync

DAY = 86400.0
GIB = 1 << 30
# 2031-01-01 12:00 UTC: the recorded days lie far from the real clock's (each sync also
# records the real day, outside the windows these tests read)
BASE = 1_924_992_000 + 12 * 3600


# ---------------------------------------------------------------------------------------------
# the maths


def test_t_quantiles_match_the_tables() -> None:
    # Student's t, 97.5 %: standard tables (df 1, 2, 3, 10, 30, 120), and the normal limit
    for df, want in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (9, 2.2622), (10, 2.2281),
                     (30, 2.0423), (60, 2.0003), (120, 1.9799), (10**6, 1.9600)):
        assert capacity.t975(df) == pytest.approx(want, abs=1e-4), df
    qs = [capacity.t975(df) for df in range(1, 400)]
    assert all(a > b for a, b in zip(qs, qs[1:], strict=False))  # decreasing, no seam at 10
    with pytest.raises(ValueError):
        capacity.t975(0)


# by hand: x = 0..4, y = 100, 110, 125, 130, 145 -> x̄ = 2, ȳ = 122, Sxx = 10, Sxy = 110,
# slope 11, intercept 100; residuals 0, -1, 3, -3, 1 -> SSE 20, s² = 20/3,
# SE(slope) = sqrt(s² / Sxx) = sqrt(2/3); t(0.975, 3 df) = 3.1824463
HAND = [(0.0, 100.0), (1.0, 110.0), (2.0, 125.0), (3.0, 130.0), (4.0, 145.0)]
HALF = 3.1824463 * math.sqrt(2 / 3)


def test_least_squares_and_interval_against_a_hand_computed_example() -> None:
    f = capacity.fit(HAND)
    assert f is not None and f.n == 5
    assert f.slope == pytest.approx(11.0) and f.intercept == pytest.approx(100.0)
    assert f.half == pytest.approx(HALF, rel=1e-7)
    assert f.low == pytest.approx(11 - HALF) and f.high == pytest.approx(11 + HALF)
    # the same from the sums (what the SQL computes), and with large x and y (bytes, days
    # since 1970): centring keeps the precision
    sums = capacity.fit_sums(5, 10.0, 610.0, 30.0, 1330.0, 75650.0)
    assert sums is not None and sums.slope == pytest.approx(11.0)
    assert sums.half == pytest.approx(HALF, rel=1e-9)
    big = capacity.fit([(20_000 + x, 1e13 + y * GIB) for x, y in HAND])
    assert big is not None
    assert big.slope == pytest.approx(11 * GIB, rel=1e-9)
    assert big.half == pytest.approx(HALF * GIB, rel=1e-6)
    # a straight line: no doubt about the slope
    line = capacity.fit([(x, 5 + 2 * x) for x in range(6)])
    assert line is not None and line.slope == pytest.approx(2.0) and line.half < 1e-9
    # under 3 points, or every point on the same day: no trend
    assert capacity.fit(HAND[:2]) is None and capacity.fit([(1.0, 1.0)] * 4) is None


def test_days_until() -> None:
    assert capacity.days_until(145, 200, 11.0, 80) == pytest.approx(15 / 11)
    assert capacity.days_until(145, 200, 11.0, 100) == pytest.approx(5.0)
    assert capacity.days_until(170, 200, 11.0, 80) == 0.0  # already there
    assert capacity.days_until(145, 200, 0.0, 90) is None  # not growing
    assert capacity.days_until(145, 200, -3.0, 90) is None
    assert capacity.days_until(145, None, 11.0, 90) is None
    assert capacity.days_until(None, 200, 11.0, 90) is None


# ---------------------------------------------------------------------------------------------
# forecasts from a history written by hand


def _pool(conn: Connection, node: str, pool: str, size: int, allocated: int, *,
          volsize: int = 0, used: int = 0, ubr: int = 0,
          history: Sequence[tuple[float, int]] = ()) -> None:
    with mirror.transaction(conn, "test: a pool and its history"):
        conn.execute("INSERT INTO pools (node, name, size, allocated, free, volumes, volsize, "
                     "used, usedbyrefreservation, synced_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?, "
                     "?, ?)", (node, pool, size, allocated, size - allocated, volsize, used,
                               ubr, BASE))
        conn.executemany(
            "INSERT INTO capacity_daily (day, node, pool, size, allocated, free, volumes, "
            "volsize, used, logicalused, at) VALUES (?, ?, ?, ?, ?, ?, 1, 0, 0, 0, ?)",
            [(capacity.day_of(at), node, pool, size, a, size - a, at) for at, a in history])


@pytest.fixture
def hand(mirror_at: str) -> Connection:
    """Pools with hand-made histories, the last day at BASE + 4 days:
    - n1/tank: HAND in GiB (size 200 GiB, 145 GiB allocated now), volumes promise 400 GiB;
    - n1/cold: shrinking; n2/tank: two days only; n2/full: at 95 %, growing 1 GiB a day."""
    conn = mirror.connect(mirror_at)
    _pool(conn, "n1", "tank", 200 * GIB, 145 * GIB, volsize=400 * GIB, used=150 * GIB,
          ubr=30 * GIB, history=[(BASE + x * DAY, int(y) * GIB) for x, y in HAND])
    _pool(conn, "n1", "cold", 100 * GIB, 40 * GIB,
          history=[(BASE + x * DAY, (50 - 2 * x) * GIB) for x in range(5)])
    _pool(conn, "n2", "tank", 100 * GIB, 10 * GIB,
          history=[(BASE + x * DAY, (8 + x) * GIB) for x in (3, 4)])
    _pool(conn, "n2", "full", 100 * GIB, 95 * GIB,
          history=[(BASE + x * DAY, (91 + x) * GIB) for x in range(5)])
    return conn


def test_forecasts_from_a_hand_made_history(hand: Connection) -> None:
    now = BASE + 4 * DAY
    got = {(f.node, f.pool): f for f in capacity.forecasts(hand, now=now)}
    assert list(got) == [("n1", "cold"), ("n1", "tank"), ("n2", "full"), ("n2", "tank")]
    f = got["n1", "tank"]
    assert (f.size, f.allocated, f.days) == (200 * GIB, 145 * GIB, 5)
    assert f.growth_per_day == pytest.approx(11 * GIB)
    assert f.growth_low == pytest.approx((11 - HALF) * GIB)
    assert f.growth_high == pytest.approx((11 + HALF) * GIB)
    # from today's 145 GiB: 80 % = 160 GiB in 15/11 days, 90 % in 35/11, full in 55/11
    assert f.days_until == {80: pytest.approx(15 / 11), 90: pytest.approx(35 / 11),
                            100: pytest.approx(5.0)}
    assert f.days_until_low[90] == pytest.approx(35 / (11 + HALF))  # at the fastest growth
    assert f.days_until_high[90] == pytest.approx(35 / (11 - HALF))  # at the slowest
    assert f.volsize == 400 * GIB and f.overcommit_ratio == pytest.approx(2.0)
    # the estimate from the pool's sums: volsize - (used - usedbyrefreservation) = 280 GiB
    assert f.if_filled == (145 + 280) * GIB and f.if_filled_ratio == pytest.approx(425 / 200)
    cold = got["n1", "cold"]
    assert cold.growth_per_day == pytest.approx(-2 * GIB)
    assert set(cold.days_until.values()) == {None}  # shrinking: never
    assert got["n2", "tank"].days == 2 and got["n2", "tank"].growth_per_day is None
    assert set(got["n2", "tank"].days_until.values()) == {None}  # too little history
    full = got["n2", "full"]
    assert full.days_until == {80: 0.0, 90: 0.0, 100: pytest.approx(5.0)}
    assert full.days_until_high[100] == pytest.approx(5.0)  # a straight line: no doubt
    # the window: the last 3 days only (125, 130, 145: slope 10 GiB)
    last3 = capacity.forecasts(hand, now=now, days=3, nodes=["n1"])
    assert [(f.pool, f.days) for f in last3] == [("cold", 3), ("tank", 3)]
    assert last3[1].growth_per_day == pytest.approx(10 * GIB)
    # a day later with no new row: the same history, the line's x shifted (same slope)
    later = {f.pool: f for f in capacity.forecasts(hand, now=now + DAY, nodes=["n1"])}
    assert later["tank"].growth_per_day == pytest.approx(11 * GIB)
    assert capacity.forecasts(hand, now=now, nodes=["nope"]) == []


def test_a_pool_without_history_has_figures_but_no_trend(mirror_at: str) -> None:
    conn = mirror.connect(mirror_at)
    _pool(conn, "n1", "tank", 100 * GIB, 50 * GIB, volsize=30 * GIB, used=60 * GIB,
          ubr=40 * GIB)
    (f,) = capacity.forecasts(conn, now=BASE)
    assert f.days == 0 and f.growth_per_day is None and f.growth_low is None
    assert set(f.days_until.values()) == {None}
    assert f.overcommit_ratio == pytest.approx(0.3)
    # thick volumes' unused reservations at least (volsize - (used - ubr) = 10 GiB < 40)
    assert f.if_filled == 90 * GIB


# ---------------------------------------------------------------------------------------------
# the history recorded from a simulated fleet


def _inventory(tmp_path: Path, mirror_at: str, nodes: dict[str, dict[str, Any]]
               ) -> inventory.Inventory:
    path = write_sim_inventory(tmp_path / "fleet.yaml", nodes)
    text = path.read_text()
    path.write_text(text.replace("mirror: mirror.db\n", f"mirror: {mirror_at}\n"))
    return inventory.load(path)


def _volume_sums(conn: Connection) -> dict[tuple[str, str, str], tuple[int, ...]]:
    """What `xfleet sql` gives: per (node, pool, tenant), the volumes' count and sums."""
    return {(n, p, t): (c, v, u, lg) for n, p, t, c, v, u, lg in conn.execute(
        "SELECT node, pool, coalesce(tenant, '-'), count(*), sum(volsize), sum(used), "
        "sum(logicalused) FROM datasets WHERE type = 'volume' GROUP BY node, pool, "
        "coalesce(tenant, '-')")}


def _tenant_rows(conn: Connection, day: str) -> dict[tuple[str, str, str], tuple[int, ...]]:
    return {(n, p, t): (c, v, u, lg) for n, p, t, c, v, u, lg in conn.execute(
        "SELECT node, pool, tenant, volumes, volsize, used, logicalused FROM tenant_daily "
        "WHERE day = ?", (day,))}


def test_record_daily_on_a_fleet_whose_pools_grow(tmp_path: Path, mirror_at: str) -> None:
    """Each day 20 thin volumes appear on every node (the simulator's allocation grows by
    their metadata, 56K each): a straight line of allocated; the tenants' figures are the
    mirror's own sums; the tenant rows are rewritten once an hour, the pool rows every time."""
    inv = _inventory(tmp_path, mirror_at, {"n1": {"seed": 3, "volumes": 120},
                                           "n2": {"seed": 4, "volumes": 80}})
    conn = mirror.connect(mirror_at)
    seen: dict[str, list[tuple[float, int]]] = {"n1": [], "n2": []}
    with Connections(inv.hosts, state_dir=inv.state_dir) as cs:
        for day in range(5):
            for node in inv.hosts:
                t = cs.get(node)
                t.run(["zfs", "create", "-p", "tank/t0001/grow"])
                for i in range(20):
                    t.run(["zfs", "create", "-s", "-V", "10G", f"tank/t0001/grow/v{day}-{i}"])
            assert sync(inv, connections=cs).ok
            at = BASE + day * DAY + 300 * day  # syncs at slightly different times of day
            assert capacity.record_daily(conn, now=at) == 2
            for node, allocated in conn.execute("SELECT node, allocated FROM pools"):
                seen[node].append((at, allocated))
    days = [r[0] for r in conn.execute(
        "SELECT DISTINCT day FROM capacity_daily WHERE day >= '2031' ORDER BY day")]
    assert days == ["2031-01-01", "2031-01-02", "2031-01-03", "2031-01-04", "2031-01-05"]
    rows = {(r[0], r[1]): r[2:] for r in conn.execute(
        "SELECT day, node, allocated, size, volsize, volumes FROM capacity_daily")}
    for node, points in seen.items():
        assert [rows[capacity.day_of(at), node][0] for at, _ in points] == \
            [a for _, a in points]
    now = BASE + 4 * DAY + 1200
    by_node = {f.node: f for f in capacity.forecasts(conn, now=now)}
    for node, f in by_node.items():
        assert f.days == 5 and f.growth_per_day is not None
        # 20 x 56K of data and metadata a sync, and the pool's 1/512 on top of it; a sync
        # every 1 day and 300 s
        assert f.growth_per_day == pytest.approx(20 * 57344 * 513 / 512 / (1 + 300 / DAY),
                                                 abs=64)
        assert f.growth_high is not None and f.growth_low is not None
        assert f.growth_high - f.growth_low < 64  # one byte of rounding a day, no more
        want = capacity.fit([((at - now) / DAY, a) for at, a in seen[node]])
        assert want is not None and f.growth_per_day == pytest.approx(want.slope, rel=1e-9)
        assert f.days_until[90] == pytest.approx(
            (0.9 * (f.size or 0) - (f.allocated or 0)) / f.growth_per_day)
        assert f.volsize == rows["2031-01-05", node][2]
    # tenant rows: the mirror's own sums over volumes, the growing tenant among them
    last = "2031-01-05"
    assert _tenant_rows(conn, last) == _volume_sums(conn)
    assert _tenant_rows(conn, last)["n1", "tank", "t0001"][0] >= 100
    # within the hour: pool rows updated, tenant rows kept; after it, rewritten
    with Connections(inv.hosts, state_dir=inv.state_dir) as cs:
        cs.get("n1").run(["zfs", "create", "-s", "-V", "1G", "tank/t0002/late"])
        assert sync(inv, connections=cs).ok
    before = _tenant_rows(conn, last)
    assert capacity.record_daily(conn, now=BASE + 4 * DAY + 1200 + 1800) == 2
    assert _tenant_rows(conn, last) == before != _volume_sums(conn)
    n1_volumes = conn.execute("SELECT volumes FROM capacity_daily WHERE day = ? AND "
                              "node = 'n1'", (last,)).fetchone()[0]
    assert n1_volumes == conn.execute("SELECT volumes FROM pools WHERE node = 'n1'"
                                      ).fetchone()[0]
    capacity.record_daily(conn, now=BASE + 4 * DAY + 1200 + 3700)
    assert _tenant_rows(conn, last) == _volume_sums(conn)
    # per tenant: the trend of used over the same days (t0001 grows, by 20 new volumes a
    # day on each node), its figures now the sums over the volumes
    tenants = {t.tenant: t for t in capacity.tenant_forecasts(conn, now=now + 3700)}
    sums = _volume_sums(conn)
    for name, tf in tenants.items():
        mine = [v for k, v in sums.items() if k[2] == name]
        assert (tf.volumes, tf.volsize, tf.used, tf.logicalused) == tuple(
            sum(v[i] for v in mine) for i in range(4)), name
        assert tf.pools == len(mine) and tf.days == 5
    assert (tenants["t0001"].growth_per_day or 0) > 0
    daily = [(at, sum(u for k, (_, _, u, _) in _tenant_rows(conn, capacity.day_of(at)).items()
                      if k[2] == "t0001")) for at, _ in seen["n1"]]
    daily[-1] = (BASE + 4 * DAY + 1200 + 3700, daily[-1][1])  # the last rewrite's time
    want = capacity.fit([((at - now - 3700) / DAY, u) for at, u in daily])
    assert want is not None
    assert tenants["t0001"].growth_per_day == pytest.approx(want.slope, rel=1e-9)


def test_record_daily_rewrites_the_tenants_at_once_when_asked(tmp_path: Path) -> None:
    """`tenants=True` (the demo's last day): today's tenant rows are the mirror's sums now,
    however recent they were."""
    db = str(tmp_path / "m.db")
    inv = _inventory(tmp_path, db, {"n1": {"seed": 3, "volumes": 40}})
    conn = mirror.connect(db)
    with Connections(inv.hosts, state_dir=inv.state_dir) as cs:
        assert sync(inv, connections=cs).ok
        capacity.record_daily(conn, now=BASE)
        cs.get("n1").run(["zfs", "create", "-V", "1G", "tank/t0000/new"])  # thick: used grows
        assert sync(inv, connections=cs).ok
    day = capacity.day_of(BASE)
    before = _tenant_rows(conn, day)
    capacity.record_daily(conn, now=BASE + 60)
    assert _tenant_rows(conn, day) == before != _volume_sums(conn)
    capacity.record_daily(conn, now=BASE + 120, tenants=True)
    assert _tenant_rows(conn, day) == _volume_sums(conn)
    conn.close()


def test_a_noisy_history_and_a_node_whose_sync_failed(tmp_path: Path, mirror_at: str) -> None:
    """A base fleet growing day by day (more volumes each day, full syncs): a noisy line whose
    slope and interval are those of the recorded points; a stale node's pools are not
    recorded (a gap, not a repeated day)."""
    conn = mirror.connect(mirror_at)
    points: list[tuple[float, int]] = []
    for day in range(7):
        inv = _inventory(tmp_path, mirror_at, {
            "n1": {"seed": 3, "volumes": 100 + 10 * day, "tenants": 4, "pool_size": "10T"},
            "n2": {"seed": 5, "volumes": 30, "pool_size": "10T"}})
        assert sync(inv, full=True).ok
        if day == 6:
            with mirror.transaction(conn, "test: n2's last sync failed"):
                conn.execute("UPDATE nodes SET stale = 1 WHERE name = 'n2'")
        at = BASE + day * DAY
        assert capacity.record_daily(conn, now=at) == (1 if day == 6 else 2)
        points.append((at, conn.execute("SELECT allocated FROM pools WHERE node = 'n1'"
                                        ).fetchone()[0]))
    assert conn.execute("SELECT count(*) FROM capacity_daily WHERE node = 'n2' AND "
                        "day >= '2031'").fetchone()[0] == 6
    now = BASE + 6 * DAY
    f1, f2 = capacity.forecasts(conn, now=now)
    want = capacity.fit([((at - now) / DAY, a) for at, a in points])
    assert want is not None and want.half > 0
    assert f1.growth_per_day == pytest.approx(want.slope, rel=1e-9)
    assert f1.growth_low == pytest.approx(want.low, rel=1e-9)
    assert f1.growth_high == pytest.approx(want.high, rel=1e-9)
    assert (f1.growth_per_day or 0) > 0 and f1.days == 7
    # n2 never changed: flat, not growing (its stale day is missing, not repeated)
    assert f2.days == 6 and f2.growth_per_day == pytest.approx(0.0, abs=1e-3)
    assert set(f2.days_until.values()) == {None}


# ---------------------------------------------------------------------------------------------
# the report


@pytest.fixture
def grown(tmp_path: Path, mirror_at: str) -> tuple[inventory.Inventory, Connection]:
    """n1 (200 volumes, some thick) and n2 (100), 4 recorded days, n1 growing."""
    inv = _inventory(tmp_path, mirror_at, {"n1": {"seed": 1, "volumes": 200},
                                           "n2": {"seed": 2, "volumes": 100}})
    conn = mirror.connect(mirror_at)
    with Connections(inv.hosts, state_dir=inv.state_dir) as cs:
        for day in range(4):
            cs.get("n1").run(["zfs", "create", "-s", "-V", "10G", f"tank/t0003/new{day}"])
            assert sync(inv, connections=cs).ok
            capacity.record_daily(conn, now=BASE + day * DAY)
    return inv, conn


def test_the_report_by_pool_and_by_tenant(grown: tuple[inventory.Inventory, Connection]
                                          ) -> None:
    _, conn = grown
    now = BASE + 3 * DAY
    rep = capacity.build(conn, now=now)
    assert [f.node for f in rep.pools] == ["n1", "n2"]  # n1 grows: it has a date with 90 %
    # the exact if-filled figure: per volume max(volsize - referenced, its unused
    # reservation, 0), summed in Python from the volumes
    grow: dict[str, int] = {"n1": 0, "n2": 0}
    for node, volsize, ref, ubr in conn.execute(
            "SELECT node, volsize, referenced, coalesce(usedbyrefreservation, 0) FROM datasets "
            "WHERE type = 'volume'"):
        grow[node] += max(volsize - ref, ubr, 0)
    for f in rep.pools:
        assert f.if_filled == (f.allocated or 0) + grow[f.node]
        estimate = next(e for e in capacity.forecasts(conn, now=now) if e.node == f.node)
        # the scrape's estimate from the pools' sums is close to it (snapshots, clones)
        assert estimate.if_filled == pytest.approx(f.if_filled, rel=0.05)
    t = rep.total
    assert t["pools"] == 2 and t["size"] == sum(f.size or 0 for f in rep.pools)
    assert t["if_filled"] == sum(f.if_filled or 0 for f in rep.pools)
    assert t["growth_per_day"] == pytest.approx(sum(f.growth_per_day or 0 for f in rep.pools))
    assert set(rep.history) == {"n1/tank", "n2/tank"} and len(rep.history["n1/tank"]) == 4
    rows = rep.rows()
    assert list(rows[0]) == list(capacity.POOL_COLUMNS)
    assert rows[0]["days_until_90"] == rep.pools[0].days_until[90]
    doc = rep.to_dict()
    assert doc["by"] == "pool" and len(doc["history"]["n1/tank"]) == 4
    one = capacity.build(conn, now=now, nodes=["n2"])
    assert [f.node for f in one.pools] == ["n2"] and set(one.history) == {"n2/tank"}
    assert capacity.build(conn, now=now, limit=1).total["pools"] == 2
    # by tenant: the sums over the volumes, fastest growing first
    by = capacity.build(conn, by="tenant", now=now)
    sums = {t: (n, v, u) for t, n, v, u in conn.execute(
        "SELECT coalesce(tenant, '-'), count(*), sum(volsize), sum(used) FROM datasets "
        "WHERE type = 'volume' GROUP BY coalesce(tenant, '-')")}
    assert {x.tenant: (x.volumes, x.volsize, x.used) for x in by.tenants} == sums
    assert by.tenants[0].tenant == "t0003" and (by.tenants[0].growth_per_day or 0) > 0
    assert by.total["volumes"] == sum(n for n, _, _ in sums.values())
    assert list(by.rows()[0]) == list(capacity.TENANT_COLUMNS)
    table = capacity.table_rows(by)
    assert table[-1]["tenant"] == "TOTAL" and set(table[0]) == set(capacity.TENANT_TABLE)


def test_report_errors(grown: tuple[inventory.Inventory, Connection], tmp_path: Path) -> None:
    _, conn = grown
    with pytest.raises(UsageError, match="no pools of node 'nope'"):
        capacity.build(conn, nodes=["n1", "nope"])
    with pytest.raises(UsageError, match="cannot group capacity by"):
        capacity.build(conn, by="colour")
    with pytest.raises(UsageError, match="at least 3 days"):
        capacity.build(conn, days=2)
    empty = mirror.connect(tmp_path / "empty.db")
    with pytest.raises(MirrorError, match="no pools yet"):
        capacity.build(empty)


def test_html_is_self_contained(grown: tuple[inventory.Inventory, Connection]) -> None:
    _, conn = grown
    for by in ("pool", "tenant"):
        page = capacity.render_html(capacity.build(conn, by=by, now=BASE + 3 * DAY))
        assert "<script" not in page and "<link" not in page and "<img" not in page
        assert "url(" not in page and "@import" not in page and "src=" not in page
        # days until 90 %, overcommit, one history chart a pool (+ the tenants' two)
        assert page.count("<svg") == (4 if by == "pool" else 6), by
        assert "n1/tank" in page and "TOTAL" in page and "95 % interval" in page


# ---------------------------------------------------------------------------------------------
# cost


def _statements(tmp_path: Path, volumes: int) -> list[str]:
    db = tmp_path / f"v{volumes}.db"
    inv = _inventory(tmp_path / f"v{volumes}", str(db), {"n1": {"seed": 9, "volumes": volumes}})
    assert sync(inv).ok
    conn = mirror.connect(db)
    for day in range(3):
        capacity.record_daily(conn, now=BASE + day * DAY)
    statements: list[str] = []
    assert hasattr(conn, "set_trace_callback")
    conn.set_trace_callback(statements.append)
    (f,) = capacity.forecasts(conn, now=BASE + 2 * DAY)
    conn.set_trace_callback(None)
    assert f.days == 3 and f.if_filled is not None
    return statements


def test_forecasts_cost_the_same_queries_whatever_the_volumes(tmp_path: Path) -> None:
    (tmp_path / "v1000").mkdir()
    (tmp_path / "v10000").mkdir()
    small, large = _statements(tmp_path, 1000), _statements(tmp_path, 10_000)
    assert len(small) == len(large) == 1, large
    assert not [s for s in large if "datasets" in s], large  # the pools' sums only
