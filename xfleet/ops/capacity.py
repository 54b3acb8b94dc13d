"""Capacity: the daily history of every pool's allocation and of each tenant's volumes, the
growth trend with its 95 % interval, days until 80 %, 90 % and 100 %, and the overcommit of
thin volumes; per pool and per tenant (`xfleet report capacity`, the service's metrics).
docs/capacity.md explains each figure and its maths.

- `record_daily` (called at the end of every sync): today's `capacity_daily` rows from the
  `pools` summary (no scan), and, at most once an hour per pool, today's `tenant_daily` rows
  (one grouped read of a node's volumes).
- `forecasts`: one query over `pools` and the history's per-pool sums, whatever the number of
  datasets: what a Prometheus scrape can afford. Its `if_filled` is the estimate from the
  pools' sums (`fill_estimate`).
- `build`: the report; adds the exact `if_filled` (one grouped read of the volumes,
  `fill_exact`), the history for the charts and, by tenant, each tenant's figures.

The trend is the least-squares line of `allocated` against time (days) over the last N days;
its slope's 95 % interval uses Student's t with n - 2 degrees of freedom (`t975`).
"""

from __future__ import annotations

import datetime as dt
import html
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from xfleet import mirror
from xfleet.core.errors import MirrorError, UsageError
from xfleet.mirror.backend import Connection
from xfleet.ops.charts import (
    CSS,
    Band,
    Bar,
    Series,
    bar_chart,
    cards,
    fmt_bytes,
    html_table,
    line_chart,
)

DAY = 86400.0
THRESHOLDS = (80, 90, 100)
# tenant rows of a pool are rewritten when today's are older than this (each rewrite reads
# the node's volumes once): the day keeps figures at most an hour older than its last sync
TENANT_EVERY = 3600.0
BYS = ("pool", "tenant")

# Student's t, 97.5 % quantile (two-sided 95 %), for 1..9 degrees of freedom; from 10 on the
# Cornish-Fisher expansion below is within 2e-5 of the exact value
_T975 = (12.7062047, 4.3026527, 3.1824463, 2.7764451, 2.5705818, 2.4469119, 2.3646243,
         2.3060041, 2.2621572)
Z975 = 1.959963984540054


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with `df` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError("t975 needs at least one degree of freedom")
    if df <= len(_T975):
        return _T975[df - 1]
    z, v = Z975, float(df)
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    g4 = (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160
    return z + g1 / v + g2 / v ** 2 + g3 / v ** 3 + g4 / v ** 4


# ---------------------------------------------------------------------------------------------
# the trend: least squares and the slope's interval


@dataclass(frozen=True)
class Fit:
    """y = intercept + slope * x over n points; the slope's 95 % interval is slope ± half."""

    n: int
    slope: float
    intercept: float
    half: float

    @property
    def low(self) -> float:
        return self.slope - self.half

    @property
    def high(self) -> float:
        return self.slope + self.half


def fit_sums(n: int, sx: float, sy: float, sxx: float, sxy: float, syy: float) -> Fit | None:
    """The least-squares line from the sums of x, y, x², xy and y² over n points; None under 3
    points (no interval) or when every x is the same."""
    if n < 3:
        return None
    mx, my = sx / n, sy / n
    qxx = sxx - sx * mx
    qxy = sxy - sx * my
    qyy = syy - sy * my
    if qxx <= 1e-12 * max(1.0, abs(sxx)):
        return None
    slope = qxy / qxx
    sse = max(0.0, qyy - slope * qxy)  # (rounding may leave a tiny negative)
    se = math.sqrt(sse / (n - 2) / qxx)
    return Fit(n, slope, my - slope * mx, t975(n - 2) * se)


def fit(points: Sequence[tuple[float, float]]) -> Fit | None:
    """The least-squares line through (x, y) points (see fit_sums); centred first, so large
    x and y lose no precision."""
    n = len(points)
    if n < 3:
        return None
    cx = sum(x for x, _ in points) / n
    cy = sum(y for _, y in points) / n
    xs = [x - cx for x, _ in points]
    ys = [y - cy for _, y in points]
    f = fit_sums(n, sum(xs), sum(ys), sum(x * x for x in xs),
                 sum(x * y for x, y in zip(xs, ys, strict=True)), sum(y * y for y in ys))
    if f is None:
        return None
    return replace(f, intercept=f.intercept + cy - f.slope * cx)


def days_until(current: int | None, size: int | None, rate: float | None,
               percent: int) -> float | None:
    """Days until `current` bytes reach `percent` % of `size` growing `rate` bytes a day: 0
    when already there; None when not growing (rate <= 0) or unknown."""
    if current is None or not size or rate is None:
        return None
    target = size * percent / 100
    if current >= target:
        return 0.0
    if rate <= 0:
        return None
    return (target - current) / rate


# ---------------------------------------------------------------------------------------------
# the daily history


def day_of(t: float) -> str:
    """The UTC day of unix time t: 'YYYY-MM-DD' (the key of the daily tables)."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d")


def window(now: float, days: int) -> tuple[str, str]:
    """The first and last day of the `days` days ending on now's day."""
    return day_of(now - (days - 1) * DAY), day_of(now)


def _in(column: str, values: Sequence[str]) -> str:
    """`column IN (?, ...)` for a node filter, TRUE without one."""
    return f"{column} IN ({', '.join('?' for _ in values)})" if values else "TRUE"


# the pools of nodes whose last sync failed are not recorded: a missing day leaves a gap the
# trend skips (x is time), where repeating stale figures would bend it
_LIVE = "NOT EXISTS (SELECT 1 FROM nodes n WHERE n.name = p.node AND n.stale <> 0)"


def record_daily(conn: Connection, now: float | None = None, *, tenants: bool = False) -> int:
    """Upsert today's `capacity_daily` rows from the pools summary (no scan of datasets), and
    rewrite today's `tenant_daily` rows of each pool whose rows are missing or older than
    TENANT_EVERY (with `tenants`: whatever their age): one grouped read of the node's volumes
    by (pool, tenant), then a short write. Pools of nodes marked stale are skipped. Returns the
    number of pool rows written."""
    now = time.time() if now is None else now
    day = day_of(now)
    with mirror.transaction(conn, "today's capacity figures"):
        # (the WHERE also keeps SQLite's parser from reading ON CONFLICT as a join's ON)
        n = conn.execute(
            "INSERT INTO capacity_daily (day, node, pool, size, allocated, free, volumes, "
            "volsize, used, logicalused, at) SELECT ?, p.node, p.name, p.size, p.allocated, "
            "p.free, coalesce(p.volumes, 0), coalesce(p.volsize, 0), coalesce(p.used, 0), "
            f"coalesce(p.logicalused, 0), ? FROM pools p WHERE {_LIVE} "
            "ON CONFLICT (day, node, pool) DO UPDATE SET size = excluded.size, "
            "allocated = excluded.allocated, free = excluded.free, "
            "volumes = excluded.volumes, volsize = excluded.volsize, used = excluded.used, "
            "logicalused = excluded.logicalused, at = excluded.at", (day, now)).rowcount
    due: dict[str, set[str]] = {}
    for node, pool in conn.execute(
            "SELECT p.node, p.name FROM pools p WHERE " + _LIVE + " AND ((p.volumes > 0 AND "
            "NOT EXISTS (SELECT 1 FROM tenant_daily t WHERE t.day = ? AND t.node = p.node AND "
            "t.pool = p.name AND t.at > ?)) OR (p.volumes = 0 AND EXISTS (SELECT 1 FROM "
            "tenant_daily t WHERE t.day = ? AND t.node = p.node AND t.pool = p.name))) "
            "ORDER BY p.node, p.name",
            (day, now if tenants else now - TENANT_EVERY, day)).fetchall():
        due.setdefault(node, set()).add(pool)
    for node, pools in due.items():
        _record_tenants(conn, day, now, node, pools)
    return max(n, 0)


def _record_tenants(conn: Connection, day: str, now: float, node: str,
                    pools: set[str]) -> None:
    rows = [(day, node, pool, tenant, n, volsize, used, logical, now)
            for pool, tenant, n, volsize, used, logical in conn.execute(
                "SELECT pool, coalesce(tenant, '-'), count(*), coalesce(sum(volsize), 0), "
                "coalesce(sum(used), 0), coalesce(sum(logicalused), 0) FROM datasets "
                "WHERE node = ? AND type = 'volume' GROUP BY pool, coalesce(tenant, '-')",
                (node,)) if pool in pools]
    with mirror.transaction(conn, "today's tenant figures"):
        conn.executemany("DELETE FROM tenant_daily WHERE day = ? AND node = ? AND pool = ?",
                         [(day, node, p) for p in sorted(pools)])
        conn.executemany(
            "INSERT INTO tenant_daily (day, node, pool, tenant, volumes, volsize, used, "
            "logicalused, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


# ---------------------------------------------------------------------------------------------
# forecasts: what the metrics read on every scrape


@dataclass(frozen=True)
class Forecast:
    """One pool: its figures now, its growth trend over `days` days of history and when it
    reaches 80, 90 and 100 % of its size at that trend (and at the interval's ends: `_low`
    is at the fastest growth, `_high` at the slowest); 0: there already; None: not growing
    (at that end) or under 3 days of history. `if_filled`: allocated bytes if every volume
    filled up to its volsize (from `forecasts`: the estimate from the pools' sums; from
    `build`: exact)."""

    node: str
    pool: str
    size: int | None
    allocated: int | None
    days: int                      # days of history used
    growth_per_day: float | None   # bytes/day (slope)
    growth_low: float | None
    growth_high: float | None      # 95 % interval of the slope
    days_until: dict[int, float | None]   # {80: d, 90: d, 100: d}
    days_until_low: dict[int, float | None]
    days_until_high: dict[int, float | None]
    volsize: int
    overcommit_ratio: float | None
    if_filled: int | None
    if_filled_ratio: float | None


def fill_estimate(allocated: int | None, volsize: int, used: int,
                  usedbyrefreservation: int) -> int | None:
    """allocated + what the volumes may still write, from the pool's sums alone: each volume
    may grow to its volsize; what it occupies now is used - usedbyrefreservation (its data
    and snapshots); thick volumes' unused reservations (usedbyrefreservation) at least."""
    if allocated is None:
        return None
    return allocated + max(usedbyrefreservation, volsize - (used - usedbyrefreservation))


def _ratio(n: float | None, size: int | None) -> float | None:
    return None if n is None or not size else n / size


def _forecast(node: str, pool: str, size: int | None, allocated: int | None, volsize: int,
              if_filled: int | None, n: int, f: Fit | None) -> Forecast:
    rate = f.slope if f is not None else None
    low = f.low if f is not None else None
    high = f.high if f is not None else None
    return Forecast(
        node=node, pool=pool, size=size, allocated=allocated, days=n,
        growth_per_day=rate, growth_low=low, growth_high=high,
        days_until={p: days_until(allocated, size, rate, p) for p in THRESHOLDS},
        days_until_low={p: days_until(allocated, size, high, p) for p in THRESHOLDS},
        days_until_high={p: days_until(allocated, size, low, p) for p in THRESHOLDS},
        volsize=volsize, overcommit_ratio=_ratio(volsize, size), if_filled=if_filled,
        if_filled_ratio=_ratio(if_filled, size))


def forecasts(conn: Connection, *, now: float | None = None, days: int = 30,
              nodes: Sequence[str] = ()) -> list[Forecast]:
    """Every pool's Forecast (of `nodes`, or all), ordered by node and pool: one query over
    `pools` and the per-pool sums of the last `days` days of `capacity_daily`, whatever the
    number of datasets. x is time in days before now, y the allocation less today's (small
    numbers: the sums lose no precision)."""
    now = time.time() if now is None else now
    first, last = window(now, days)
    sql = f"""
        SELECT p.node, p.name, p.size, p.allocated, p.volsize, p.used, p.usedbyrefreservation,
               h.n, h.sx, h.sy, h.sxx, h.sxy, h.syy
        FROM pools p LEFT JOIN (
            SELECT c.node, c.pool, count(*) AS n, sum(c.x) AS sx, sum(c.y) AS sy,
                   sum(c.x * c.x) AS sxx, sum(c.x * c.y) AS sxy, sum(c.y * c.y) AS syy
            FROM (SELECT k.node, k.pool, (k.at - ?) / {DAY!r} AS x,
                         (k.allocated - coalesce(q.allocated, 0)) * 1.0 AS y
                  FROM capacity_daily k JOIN pools q ON q.node = k.node AND q.name = k.pool
                  WHERE k.day >= ? AND k.day <= ? AND k.allocated IS NOT NULL
                  AND {_in('k.node', nodes)}) c
            GROUP BY c.node, c.pool) h ON h.node = p.node AND h.pool = p.name
        WHERE {_in('p.node', nodes)}
        ORDER BY p.node, p.name"""
    out = []
    for (node, pool, size, allocated, volsize, used, ubr, n, sx, sy, sxx, sxy,
         syy) in conn.execute(sql, (now, first, last, *nodes, *nodes)).fetchall():
        f = fit_sums(int(n), float(sx), float(sy), float(sxx), float(sxy), float(syy)) \
            if n else None
        out.append(_forecast(node, pool, size, allocated, volsize or 0,
                             fill_estimate(allocated, volsize or 0, used or 0, ubr or 0),
                             int(n or 0), f))
    return out


def fill_exact(conn: Connection, nodes: Sequence[str] = ()) -> dict[tuple[str, str], int]:
    """Per (node, pool): the bytes its volumes may still write if each filled to its volsize,
    exactly: the sum over volumes of max(volsize - referenced, usedbyrefreservation, 0). One
    grouped read of the volumes (a report's cost, not a scrape's)."""
    grow = ("CASE WHEN coalesce(usedbyrefreservation, 0) >= coalesce(volsize, 0) - "
            "coalesce(referenced, 0) THEN coalesce(usedbyrefreservation, 0) "
            "ELSE coalesce(volsize, 0) - coalesce(referenced, 0) END")
    return {(node, pool): int(g or 0) for node, pool, g in conn.execute(
        f"SELECT node, pool, sum(CASE WHEN ({grow}) > 0 THEN {grow} ELSE 0 END) FROM datasets "
        f"WHERE type = 'volume' AND {_in('node', nodes)} GROUP BY node, pool", tuple(nodes))}


# ---------------------------------------------------------------------------------------------
# tenants


@dataclass(frozen=True)
class TenantForecast:
    """One tenant over the selected pools: its volumes now, and the trend of their `used`
    (summed over pools per day, from tenant_daily) with the slope's 95 % interval."""

    tenant: str
    pools: int
    volumes: int
    volsize: int
    used: int
    logicalused: int
    days: int
    growth_per_day: float | None
    growth_low: float | None
    growth_high: float | None


def tenant_forecasts(conn: Connection, *, now: float | None = None, days: int = 30,
                     nodes: Sequence[str] = ()) -> list[TenantForecast]:
    """Every tenant with volumes (tenant '-': volumes without one): its figures now (one
    grouped read of the volumes) and its trend (sums over tenant_daily, one row a tenant)."""
    now = time.time() if now is None else now
    first, last = window(now, days)
    trend: dict[str, tuple[int, Fit | None]] = {}
    # per tenant and day: x (days before now) and y (used, less the tenant's mean: small
    # numbers, and a flat tenant's slope exactly 0), then the sums per tenant
    for tenant, n, sx, sy, sxx, sxy, syy in conn.execute(
            "SELECT t.tenant, count(*), sum(t.x), sum(t.y), sum(t.x * t.x), sum(t.x * t.y), "
            "sum(t.y * t.y) FROM (SELECT d.tenant, d.x, d.y - avg(d.y) OVER (PARTITION BY "
            f"d.tenant) AS y FROM (SELECT tenant, (max(at) - ?) / {DAY!r} AS x, "
            "sum(used) * 1.0 AS y FROM tenant_daily WHERE day >= ? AND day <= ? AND "
            f"{_in('node', nodes)} GROUP BY tenant, day) d) t GROUP BY t.tenant",
            (now, first, last, *nodes)):
        trend[tenant] = (int(n), fit_sums(int(n), float(sx), float(sy), float(sxx),
                                          float(sxy), float(syy)))
    out = []
    for tenant, pools, n, volsize, used, logical in conn.execute(
            "SELECT coalesce(tenant, '-'), count(DISTINCT node || '/' || pool), count(*), "
            "coalesce(sum(volsize), 0), coalesce(sum(used), 0), coalesce(sum(logicalused), 0) "
            f"FROM datasets WHERE type = 'volume' AND {_in('node', nodes)} "
            "GROUP BY coalesce(tenant, '-')", tuple(nodes)):
        days, f = trend.get(tenant, (0, None))
        out.append(TenantForecast(
            tenant=tenant, pools=pools, volumes=n, volsize=volsize, used=used,
            logicalused=logical, days=days,
            growth_per_day=f.slope if f else None, growth_low=f.low if f else None,
            growth_high=f.high if f else None))
    return out


# ---------------------------------------------------------------------------------------------
# the report


NOTES = [
    "growth: least-squares slope of allocated over the daily history, with its 95 % interval "
    "(Student's t); days to 80/90/100 %: (threshold - allocated now) / growth, (earliest.."
    "latest) at the interval's ends; '-': not growing, or under 3 days of history.",
    "overcommit: sum of volsize / size (above 1.00x the volumes promise more than the pool "
    "has). if filled: allocated + what every volume may still write (volsize - referenced; "
    "a thick volume's unused reservation), incompressible: an upper bound with compression.",
]
TENANT_NOTES = [
    "growth: least-squares slope of the tenant's used (summed over its pools, per day) over "
    "the daily history, with its 95 % interval (Student's t); used counts snapshots and "
    "thick volumes' reservations; volumes, volsize and used are now's.",
]


@dataclass
class CapacityReport:
    by: str
    days: int
    nodes: tuple[str, ...]
    pools: list[Forecast]
    tenants: list[TenantForecast]
    history: dict[str, list[tuple[str, float, int]]]   # 'node/pool' -> [(day, at, allocated)]
    total: dict[str, Any]
    generated_at: float = field(default_factory=time.time)
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """The rows (pools or tenants) as flat dicts: CSV and JSON."""
        if self.by == "tenant":
            return [asdict(t) for t in self.tenants]
        return [pool_row(f) for f in self.pools]

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, "days": self.days, "nodes": list(self.nodes),
                "generated_at": self.generated_at, "total": self.total, "rows": self.rows(),
                "history": {k: [{"day": d, "at": at, "allocated": a} for d, at, a in v]
                            for k, v in self.history.items()},
                "notes": self.notes}


POOL_COLUMNS: tuple[str, ...] = (
    "node", "pool", "size", "allocated", "capacity", "volsize", "overcommit_ratio",
    "if_filled", "if_filled_ratio", "days", "growth_per_day", "growth_low", "growth_high",
    *(f"days_until_{p}{s}" for p in THRESHOLDS for s in ("", "_low", "_high")),
)
TENANT_COLUMNS: tuple[str, ...] = (
    "tenant", "pools", "volumes", "volsize", "used", "logicalused", "days", "growth_per_day",
    "growth_low", "growth_high",
)


def pool_row(f: Forecast) -> dict[str, Any]:
    """A Forecast as one flat row (POOL_COLUMNS)."""
    out: dict[str, Any] = {
        "node": f.node, "pool": f.pool, "size": f.size, "allocated": f.allocated,
        "capacity": _ratio(f.allocated, f.size), "volsize": f.volsize,
        "overcommit_ratio": f.overcommit_ratio, "if_filled": f.if_filled,
        "if_filled_ratio": f.if_filled_ratio, "days": f.days,
        "growth_per_day": f.growth_per_day, "growth_low": f.growth_low,
        "growth_high": f.growth_high}
    for p in THRESHOLDS:
        out[f"days_until_{p}"] = f.days_until[p]
        out[f"days_until_{p}_low"] = f.days_until_low[p]
        out[f"days_until_{p}_high"] = f.days_until_high[p]
    return out


def _urgency(f: Forecast) -> tuple[float, float, str, str]:
    d = f.days_until[90]
    return (math.inf if d is None else d, -(_ratio(f.allocated, f.size) or 0.0), f.node, f.pool)


def _sum_interval(items: Sequence[tuple[float | None, float | None]]) -> tuple[
        float | None, float | None, float | None]:
    """A sum of slopes and its interval, the errors taken as independent: (sum, low, high)."""
    known = [(g, h) for g, h in items if g is not None and h is not None]
    if not known:
        return None, None, None
    total = sum(g for g, _ in known)
    half = math.sqrt(sum((h - g) ** 2 for g, h in known))
    return total, total - half, total + half


def build(conn: Connection, *, by: str = "pool", days: int = 30, nodes: Sequence[str] = (),
          now: float | None = None, limit: int | None = None) -> CapacityReport:
    """The capacity report of the selected nodes' pools (or tenants, `by="tenant"`): pools
    ordered by the days until 90 % (soonest first), tenants by growth (fastest first); at most
    `limit` rows (the total counts every row). Raises MirrorError for a mirror without pools
    and UsageError for nodes it does not have."""
    if by not in BYS:
        raise UsageError(f"cannot group capacity by {by!r}", hint="one of pool, tenant")
    if days < 3:
        raise UsageError(f"--days {days}: a trend needs at least 3 days")
    now = time.time() if now is None else now
    nodes = tuple(dict.fromkeys(nodes))
    known = {r[0] for r in conn.execute("SELECT DISTINCT node FROM pools")}
    if not known:
        raise MirrorError("the mirror has no pools yet: nothing to report",
                          hint="run 'xfleet sync' first (or 'xfleet demo')")
    unknown = [n for n in nodes if n not in known]
    if unknown:
        raise UsageError(f"no pools of node {', '.join(map(repr, unknown))} in the mirror",
                         hint=f"nodes in the mirror: {', '.join(sorted(known)[:20])}")
    exact = fill_exact(conn, nodes)
    pools = []
    for f in forecasts(conn, now=now, days=days, nodes=nodes):
        filled = None if f.allocated is None else \
            f.allocated + exact.get((f.node, f.pool), 0)
        pools.append(replace(f, if_filled=filled, if_filled_ratio=_ratio(filled, f.size)))
    pools.sort(key=_urgency)
    first, last = window(now, days)
    history: dict[str, list[tuple[str, float, int]]] = {}
    for node, pool, day, at, allocated in conn.execute(
            "SELECT node, pool, day, at, allocated FROM capacity_daily WHERE day >= ? AND "
            f"day <= ? AND allocated IS NOT NULL AND {_in('node', nodes)} "
            "ORDER BY node, pool, day", (first, last, *nodes)):
        history.setdefault(f"{node}/{pool}", []).append((day, at, allocated))
    size = sum(f.size or 0 for f in pools)
    allocated = sum(f.allocated or 0 for f in pools)
    volsize = sum(f.volsize for f in pools)
    filled = sum(f.if_filled or 0 for f in pools)
    growth, low, high = _sum_interval([(f.growth_per_day, f.growth_high) for f in pools])
    total: dict[str, Any] = {
        "pools": len(pools), "size": size, "allocated": allocated,
        "capacity": _ratio(allocated, size), "volsize": volsize,
        "overcommit_ratio": _ratio(volsize, size), "if_filled": filled,
        "if_filled_ratio": _ratio(filled, size), "growth_per_day": growth,
        "growth_low": low, "growth_high": high,
        "growing": sum(1 for f in pools if (f.growth_per_day or 0) > 0),
        "no_trend": sum(1 for f in pools if f.growth_per_day is None)}
    tenants: list[TenantForecast] = []
    if by == "tenant":
        tenants = tenant_forecasts(conn, now=now, days=days, nodes=nodes)
        tenants.sort(key=lambda t: (-(t.growth_per_day if t.growth_per_day is not None
                                      else -math.inf), -t.used, t.tenant))
        tg, tl, th = _sum_interval([(t.growth_per_day, t.growth_high) for t in tenants])
        total.update(tenants=len(tenants), volumes=sum(t.volumes for t in tenants),
                     used=sum(t.used for t in tenants),
                     logicalused=sum(t.logicalused for t in tenants),
                     tenant_volsize=sum(t.volsize for t in tenants), tenant_growth_per_day=tg,
                     tenant_growth_low=tl, tenant_growth_high=th)
    notes = list(TENANT_NOTES if by == "tenant" else NOTES)
    if total["no_trend"] and by == "pool":
        notes.append(f"{total['no_trend']} of {len(pools)} pools have under 3 days of history "
                     f"in the last {days} days: no trend yet (each sync records the day).")
    if limit:
        pools, tenants = pools[:limit], tenants[:limit]
    shown = {f"{f.node}/{f.pool}" for f in pools}
    history = {k: v for k, v in history.items() if k in shown}
    return CapacityReport(by, days, nodes, pools, tenants, history, total, generated_at=now,
                          notes=notes)


# ---------------------------------------------------------------------------------------------
# rendering: the terminal table and the HTML page


def fmt_days(d: float | None) -> str:
    if d is None:
        return "-"
    if d == 0:
        return "reached"
    return f"{d:.1f}" if d < 10 else f"{d:,.0f}"


def fmt_days_interval(d: float | None, low: float | None, high: float | None) -> str:
    """'12 (9..31)'; '∞' for an interval end that never comes (no growth at that end)."""
    if d is None or d == 0:
        return fmt_days(d)
    return f"{fmt_days(d)} ({fmt_days(low)}..{'∞' if high is None else fmt_days(high)})"


def fmt_rate(g: float | None, low: float | None = None, high: float | None = None) -> str:
    if g is None:
        return "-"
    text = f"{'+' if g >= 0 else ''}{fmt_bytes(g)}/d"
    if low is not None and high is not None:
        text += f" ({fmt_bytes(low)}..{fmt_bytes(high)})"
    return text


def fmt_pct(r: float | None) -> str:
    return "-" if r is None else f"{r * 100:.0f}%"


POOL_TABLE = ("node", "pool", "size", "allocated (cap)", "volsize (overcommit)", "if filled",
              "growth/day (95%)", "days to 80%", "days to 90%", "days to full")
TENANT_TABLE = ("tenant", "pools", "volumes", "volsize", "used", "logicalused",
                "growth/day (95%)", "days")


def table_columns(rep: CapacityReport) -> tuple[str, ...]:
    return TENANT_TABLE if rep.by == "tenant" else POOL_TABLE


def csv_columns(rep: CapacityReport) -> tuple[str, ...]:
    return TENANT_COLUMNS if rep.by == "tenant" else POOL_COLUMNS


def table_rows(rep: CapacityReport) -> list[dict[str, Any]]:
    """Rows for a terminal table, then TOTAL: intervals folded in, figures for people except
    the byte columns the table formats itself (size, volsize, used, logicalused: ints)."""
    t = rep.total
    if rep.by == "tenant":
        rows: list[dict[str, Any]] = [{
            "tenant": x.tenant, "pools": f"{x.pools:,}", "volumes": f"{x.volumes:,}",
            "volsize": x.volsize, "used": x.used, "logicalused": x.logicalused,
            "growth/day (95%)": fmt_rate(x.growth_per_day, x.growth_low, x.growth_high),
            "days": f"{x.days}"} for x in rep.tenants]
        rows.append({"tenant": "TOTAL", "pools": "", "volumes": f"{t['volumes']:,}",
                     "volsize": t["tenant_volsize"], "used": t["used"],
                     "logicalused": t["logicalused"],
                     "growth/day (95%)": fmt_rate(t["tenant_growth_per_day"],
                                                  t["tenant_growth_low"],
                                                  t["tenant_growth_high"]), "days": ""})
        return rows
    rows = [{
        "node": f.node, "pool": f.pool, "size": f.size,
        "allocated (cap)": f"{fmt_bytes(f.allocated)} ({fmt_pct(_ratio(f.allocated, f.size))})",
        "volsize (overcommit)": f"{fmt_bytes(f.volsize)} ({_fmt_x(f.overcommit_ratio)})",
        "if filled": f"{fmt_bytes(f.if_filled)} ({fmt_pct(f.if_filled_ratio)})",
        "growth/day (95%)": fmt_rate(f.growth_per_day, f.growth_low, f.growth_high),
        **{label: fmt_days_interval(f.days_until[p], f.days_until_low[p], f.days_until_high[p])
           for label, p in (("days to 80%", 80), ("days to 90%", 90), ("days to full", 100))},
    } for f in rep.pools]
    rows.append({
        "node": "TOTAL", "pool": f"{t['pools']:,}", "size": t["size"],
        "allocated (cap)": f"{fmt_bytes(t['allocated'])} ({fmt_pct(t['capacity'])})",
        "volsize (overcommit)": f"{fmt_bytes(t['volsize'])} ({_fmt_x(t['overcommit_ratio'])})",
        "if filled": f"{fmt_bytes(t['if_filled'])} ({fmt_pct(t['if_filled_ratio'])})",
        "growth/day (95%)": fmt_rate(t["growth_per_day"], t["growth_low"], t["growth_high"]),
        "days to 80%": "", "days to 90%": "", "days to full": ""})
    return rows


def _fmt_x(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _day_label(now: float, x: float) -> str:
    return day_of(now + x * DAY)


def _when_90(f: Forecast) -> str:
    d = f.days_until[90]
    if d is None:
        return "no date for 90 % (not growing, or under 3 days of history)"
    return "90 % reached" if d == 0 else f"90 % in {fmt_days(d)} days"


def _pool_chart(rep: CapacityReport, f: Forecast) -> str:
    """The pool's allocation over the history, its least-squares line, and the projection
    from now at the trend with the interval's fan, against 80, 90 and 100 % of its size."""
    now = rep.generated_at
    pts = [((at - now) / DAY, float(a)) for _, at, a in rep.history.get(f"{f.node}/{f.pool}", [])]
    tips = [f"{d}: {fmt_bytes(a)}" for d, _, a in rep.history.get(f"{f.node}/{f.pool}", [])]
    series = [Series("allocated", pts, "#1565c0", dots=True, tips=tips)]
    bands = []
    size = float(f.size or 0)
    first = pts[0][0] if pts else 0.0
    horizon = max(7.0, round(-first))  # as far ahead as the history goes back
    line = fit(pts)
    if line is not None and pts:
        x0 = pts[0][0]
        series.append(Series("least squares", [(x0, line.intercept + line.slope * x0),
                                               (0.0, line.intercept)], "#757575", dash=True))
    if f.growth_per_day is not None and f.allocated is not None:
        a = float(f.allocated)
        series.append(Series("trend from now", [(0.0, a), (horizon, a + f.growth_per_day *
                                                           horizon)], "#ef6c00", dash=True))
        if f.growth_low is not None and f.growth_high is not None:
            bands.append(Band("95 % interval", [(0.0, a, a), (horizon, a + f.growth_low *
                                                              horizon,
                                                              a + f.growth_high * horizon)],
                              "#ef6c00"))
    ticks = [(first, _day_label(now, first)), (0.0, "now")]
    if f.growth_per_day is not None:
        ticks.append((horizon, f"+{horizon:.0f} d"))
    return line_chart(
        f"{f.node}/{f.pool}: allocated {fmt_bytes(f.allocated)} of {fmt_bytes(f.size)}, "
        f"growth {fmt_rate(f.growth_per_day)}, {_when_90(f)}",
        series, bands=bands, hlines=[(size * p / 100, f"{p} %") for p in THRESHOLDS],
        x_labels=ticks, y_max=size * 1.05 if size else None, height=220)


def render_html(rep: CapacityReport, *, charts: int = 12) -> str:
    """A self-contained HTML page (inline CSS and SVG, no scripts, no external assets): the
    figures, days until 90 % and overcommit per pool, the allocation history and trend of
    the `charts` pools nearest 90 %, by tenant the growth, then the table and how to read it."""
    e = html.escape
    t = rep.total
    when = dt.datetime.fromtimestamp(rep.generated_at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    soonest = next((f for f in rep.pools if f.days_until[90] is not None), None)
    figures = [
        ("pools", f"{t['pools']:,}"), ("size", fmt_bytes(t["size"])),
        ("allocated", f"{fmt_bytes(t['allocated'])} ({fmt_pct(t['capacity'])})"),
        ("volsize (overcommit)", f"{fmt_bytes(t['volsize'])} ({_fmt_x(t['overcommit_ratio'])})"),
        ("if every volume filled", f"{fmt_bytes(t['if_filled'])} "
                                   f"({fmt_pct(t['if_filled_ratio'])})"),
        ("growth / day (95%)", fmt_rate(t["growth_per_day"], t["growth_low"],
                                        t["growth_high"])),
        ("soonest 90 %", "-" if soonest is None else
         f"{soonest.node}/{soonest.pool}: {fmt_days(soonest.days_until[90])} d"),
    ]
    until: list[Bar] = [
        (f"{f.node}/{f.pool} ({fmt_days(f.days_until_low[90])}.."
         f"{'∞' if f.days_until_high[90] is None else fmt_days(f.days_until_high[90])})",
         float(d), None, None)
        for f in rep.pools if (d := f.days_until[90]) is not None]
    over = sorted((f for f in rep.pools if f.overcommit_ratio is not None),
                  key=lambda f: -(f.if_filled_ratio or 0))
    over_items: list[Bar] = [(f"{f.node}/{f.pool}", float(f.overcommit_ratio or 0),
                              float(f.if_filled_ratio or 0), None) for f in over]
    parts = [
        "<h2>Days until 90 % (soonest first)</h2>"
        + bar_chart("Days until 90 % at the trend (earliest..latest at the 95 % interval)",
                    until[:30], color="#c62828", value_fmt=lambda d: f"{fmt_days(d)} d"),
        "<h2>Overcommit</h2>"
        + bar_chart("Sum of volsize / size, and allocated if every volume filled / size",
                    over_items[:30], color="#6a1b9a", alt="#ef9a9a", value_fmt=_fmt_x,
                    legend=("volsize / size", "if filled / size")),
    ]
    if rep.by == "tenant":
        grow: list[Bar] = [(x.tenant, float(x.growth_per_day or 0), None, None)
                           for x in rep.tenants if (x.growth_per_day or 0) > 0]
        use: list[Bar] = [(x.tenant, float(x.used), float(x.volsize), None)
                          for x in rep.tenants]
        parts += [
            "<h2>Tenants</h2>"
            + bar_chart("Growth of used per day, by tenant (fastest first)", grow[:30],
                        color="#ef6c00", value_fmt=lambda g: f"{fmt_bytes(g)}/d"),
            bar_chart("Used now vs volsize, by tenant", use[:30], color="#2e7d32",
                      legend=("used", "volsize")),
        ]
    shown = rep.pools[:charts]
    parts.append(f"<h2>Allocation history and trend ({len(shown)} of {t['pools']:,} pools, "
                 "nearest 90 % first)</h2>" + "\n".join(_pool_chart(rep, f) for f in shown))
    head = table_columns(rep)
    rows = table_rows(rep)
    cells = [[fmt_bytes(v) if isinstance(v, int) else str(v) for v in (r[h] for h in head)]
             for r in rows]
    parts.append("<h2>Table</h2>" + html_table(
        [h.upper() for h in head], cells[:-1], cells[-1],
        text_columns=1 if rep.by == "tenant" else 2))
    scope = ", ".join(rep.nodes) if rep.nodes else "all nodes"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>xfleet capacity report</title><style>{CSS}</style></head>
<body>
<h1>Capacity report</h1>
<div class="meta">generated {e(when)} · {e(scope)} · by {e(rep.by)} · trend over the last
{rep.days} days</div>
{cards(figures)}
{''.join(parts)}
<h2>How to read this</h2>
<ul class="notes">{''.join(f'<li>{e(n)}</li>' for n in rep.notes)}</ul>
</body></html>
"""
