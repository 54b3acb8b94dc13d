"""The compression cost report: what compression saves now, what a policy could save, in bytes
and money, grouped by node, pool, tenant, node label, compression or volume.

Everything is aggregated in SQL over the mirror (one grouped query; nothing but the groups is
loaded into Python). Columns kept apart (docs/compression.md explains each):

- logical / physical / ratio / saved: achieved now. physical = used - usedbyrefreservation
  (bytes allocated for the data and its snapshots); a thick volume's `used` also holds its
  refreservation, which compression never shrinks (`thick` columns).
- possible: estimated bytes a policy change would free on the volumes' current data
  (referenced - logicalreferenced / estimated ratio), with a 95 % interval; only after the
  change is applied AND the data rewritten. Volumes with their own sampled estimate use it;
  others use the mean of the sampled volumes for the same setting (`estimated` says how many
  had their own); volumes whose setting was never sampled are not counted (`unestimated`).
- rewrite: volumes whose setting was already changed (audit) but whose data still has the old
  ratio: only a rewrite (a move without send -c) gets them the savings.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xfleet import mirror
from xfleet.core.errors import UsageError
from xfleet.mirror.backend import Connection
from xfleet.ops.charts import CSS as _CSS
from xfleet.ops.charts import bar_chart as _bar_chart
from xfleet.ops.charts import fmt_bytes as fmt_bytes  # (re-exported: the CLI's sizes)
from xfleet.ops.compression import Policy, canonical_sql, validate_compression

if TYPE_CHECKING:
    from xfleet.fleet.inventory import Inventory

GIB = 1 << 30
GROUPINGS = ("node", "pool", "tenant", "compression", "volume", "label:KEY")
# `saved_money` and `possible_money` are in `currency` (the inventory's): a column of every row,
# so a CSV row says what its money is, and scripts keep their field names whatever the currency
COLUMNS: tuple[str, ...] = (
    "group", "volumes", "logical", "physical", "ratio", "saved", "saved_money", "thick",
    "thick_reserved", "possible", "possible_low", "possible_high", "possible_money",
    "currency", "possible_volumes", "estimated", "unestimated", "rewrite_volumes",
    "rewrite_logical", "rewrite_gain",
)
Z95 = 1.96


@dataclass
class Report:
    by: str
    price_per_gb_month: float
    rows: list[dict[str, Any]]
    total: dict[str, Any]
    top: list[dict[str, Any]]
    trend: list[dict[str, Any]]
    policy: str | None
    generated_at: float = field(default_factory=time.time)
    notes: list[str] = field(default_factory=list)
    currency: str = "USD"

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, "price_per_gb_month": self.price_per_gb_month,
                "currency": self.currency, "policy": self.policy, "generated_at": self.generated_at,
                "total": self.total, "rows": self.rows, "top": self.top, "trend": self.trend,
                "notes": self.notes}


NOTES = [
    "money = bytes / 2^30 x price per GB-month (GiB, as clouds bill 'GB'), in the inventory's "
    "currency.",
    "physical = used - usedbyrefreservation: what the data and its snapshots occupy; a thick "
    "volume (refreservation) keeps its reservation whatever compression saves, so its savings "
    "do not show in `used` or in the pool's free space unless the reservation is lowered.",
    "possible = estimated from sampled blocks (xfleet compression estimate); it needs the "
    "policy applied AND the data rewritten: a new setting only affects data written afterwards.",
    "rewrite = volumes whose setting already changed but whose data keeps its old compression "
    "until rewritten (a move without send -c); snapshots keep old blocks until destroyed.",
]


def _group_sql(by: str, inventory: Inventory | None) -> tuple[str, list[Any]]:
    if by == "node":
        return "d.node", []
    if by == "pool":
        return "d.node || '/' || d.pool", []
    if by == "tenant":
        return "coalesce(d.tenant, '-')", []
    if by == "compression":
        return "coalesce(d.compression, '-')", []
    if by == "volume":
        return "d.node || ':' || d.name", []
    if by.startswith("label:") and len(by) > 6:
        key = by[6:]
        if inventory is not None:
            pairs = [(h.name, h.labels.get(key, "-")) for h in inventory.hosts.values()]
            if not pairs:
                return "'-'", []
            return ("CASE d.node " + " ".join("WHEN ? THEN ?" for _ in pairs) + " ELSE '-' END",
                    [x for p in pairs for x in p])
        if '"' in key:
            raise UsageError(f"label name {key!r} may not contain '\"'")
        return ("coalesce((SELECT json_extract(labels, ?) FROM nodes WHERE name = d.node), '-')",
                [f'$."{key}"'])
    raise UsageError(f"cannot group by {by!r}", hint=f"one of {', '.join(GROUPINGS)}")


def _fallbacks(conn: Connection) -> dict[str, tuple[float, float, float]]:
    """Per change of setting ('lz4>zstd-3'), over the volumes sampled with both: mean and
    variance of physical(new) / physical(current) = ratio(current) / ratio(new), and the 95 %
    half-width of that mean (shared by every volume it is applied to). Applied to a
    volume without its own estimate as a factor on its `referenced`: how much one setting
    gains over another varies less between volumes than absolute ratios do."""

    out = {}
    for cur, new, n, mean, mean2 in conn.execute(
            "SELECT c.algorithm, x.algorithm, count(*), avg(c.ratio / x.ratio), "
            "avg((c.ratio / x.ratio) * (c.ratio / x.ratio)) FROM compression_estimates x "
            "JOIN compression_estimates c ON c.node = x.node AND c.name = x.name "
            "AND c.algorithm <> x.algorithm WHERE x.ratio > 0 AND c.ratio > 0 "
            "GROUP BY c.algorithm, x.algorithm"):
        try:
            validate_compression(cur)
            validate_compression(new)
        except UsageError:
            continue  # not one of ours: never inlined into SQL
        var = max(0.0, mean2 - mean * mean) * n / (n - 1) if n > 1 else (mean / 2) ** 2
        out[f"{cur}>{new}"] = (float(mean), float(var), Z95 * math.sqrt(var / n))
    return out


def build(conn: Connection, *, by: str = "node", policy: Policy | None = None,
          inventory: Inventory | None = None, price_per_gb_month: float = 0.08,
          where: str = "TRUE", params: Sequence[Any] = (), limit: int | None = None,
          top: int = 15, tenant_property: str = "xfleet:tenant",
          currency: str | None = None) -> Report:
    """The report of the volumes matching `where`, grouped `by`; money at `price_per_gb_month`
    in `currency` (default: the inventory's, else USD)."""
    if currency is None:
        currency = inventory.currency if inventory is not None else "USD"
    grp, gparams = _group_sql(by, inventory)
    if policy is not None:
        desired, _, dparams = policy.compile(inventory, tenant_property)
        dparams = dparams[:len(dparams) // 2]  # the desired expression's parameters only
    else:
        desired, dparams = "NULL", []
    fb = _fallbacks(conn)
    # the fallback figures are inlined as literals: validated setting names and floats
    pair = f"({canonical_sql('v.compression')} || '>' || {canonical_sql('v.new')})"
    fb_m = ("CASE " + pair + " " + " ".join(
        f"WHEN '{k}' THEN {m!r}" for k, (m, _, _) in fb.items()) + " END") if fb else "NULL"
    fb_var = ("CASE " + pair + " " + " ".join(
        f"WHEN '{k}' THEN {v!r}" for k, (_, v, _) in fb.items()) + " END") if fb else "NULL"
    fb_se = ("CASE " + pair + " " + " ".join(
        f"WHEN '{k}' THEN {se!r}" for k, (_, _, se) in fb.items()) + " END") if fb else "NULL"
    changed = f"(v.new IS NOT NULL AND {canonical_sql('v.compression')} IS DISTINCT FROM " \
              f"{canonical_sql('v.new')})"
    # bytes a rewrite with the new setting frees: the volume's own estimate, else the
    # fallback factor; and the squared half-width of its 95 % interval
    gain = ("CASE WHEN e.ratio > 0 THEN v.referenced - v.logicalreferenced / e.ratio "
            f"ELSE v.referenced * (1 - {fb_m}) END")
    own = "(v.logicalreferenced * (1.0 / e.ratio_low - 1.0 / e.ratio_high) / 2)"
    # `* 1.0` first: a square of bytes overflows a 64-bit integer (PostgreSQL refuses it)
    half2 = (f"CASE WHEN e.ratio > 0 THEN {own} * {own} ELSE v.referenced * 1.0 * "
             f"v.referenced * {fb_var} * {Z95 * Z95!r} END")
    rewrite = ("(EXISTS (SELECT 1 FROM compression_changes c WHERE c.node = v.node AND "
               "c.name = v.name AND c.state = 'done' AND "
               f"{canonical_sql('c.new')} = {canonical_sql('v.compression')}) AND "
               "(e2.ratio_low IS NULL OR coalesce(v.refcompressratio, 1) < e2.ratio_low))")
    sql = f"""
        SELECT grp, count(*), coalesce(sum(v.logicalused), 0),
          coalesce(sum(v.used - coalesce(v.usedbyrefreservation, 0)), 0),
          sum(CASE WHEN coalesce(v.refreservation, 0) > 0 THEN 1 ELSE 0 END),
          coalesce(sum(coalesce(v.usedbyrefreservation, 0)), 0),
          sum(CASE WHEN {changed} THEN {gain} END),
          sum(CASE WHEN {changed} THEN {half2} END),
          sum(CASE WHEN {changed} AND coalesce(e.ratio, 0) <= 0 THEN v.referenced * {fb_se} END),
          sum(CASE WHEN {changed} THEN 1 ELSE 0 END),
          sum(CASE WHEN {changed} AND e.ratio > 0 THEN 1 ELSE 0 END),
          sum(CASE WHEN {changed} AND ({gain}) IS NULL THEN 1 ELSE 0 END),
          sum(CASE WHEN {rewrite} THEN 1 ELSE 0 END),
          coalesce(sum(CASE WHEN {rewrite} THEN v.logicalreferenced END), 0),
          sum(CASE WHEN {rewrite} AND e2.ratio > 0 THEN
              v.referenced - v.logicalreferenced / e2.ratio END)
        FROM (SELECT d.*, {grp} AS grp, {desired} AS new FROM datasets d
              WHERE d.type = 'volume' AND ({where})) v
        LEFT JOIN compression_estimates e ON e.node = v.node AND e.name = v.name
             AND e.algorithm = {canonical_sql('v.new')}
        LEFT JOIN compression_estimates e2 ON e2.node = v.node AND e2.name = v.name
             AND e2.algorithm = {canonical_sql('v.compression')}
        GROUP BY grp"""
    rows_raw = conn.execute(sql, [*gparams, *dparams, *params]).fetchall()
    rows = [_row(r, price_per_gb_month, policy is not None) for r in rows_raw]
    rows.sort(key=lambda r: (-(r["saved"] or 0), r["group"]))
    total = _total(rows, price_per_gb_month, policy is not None)
    for r in [*rows, total]:
        r["currency"] = currency
    if limit:
        rows = rows[:limit]
    top_rows = _top(conn, desired, dparams, where, params, policy is not None, top)
    notes = list(NOTES)
    if policy is None:
        notes.append("no policy given: the 'possible' columns are empty (pass --policy or set "
                     "compression_policy in the inventory).")
    elif total["unestimated"]:
        notes.append(f"{total['unestimated']:,} volumes that the policy changes have no "
                     "estimate for their new setting and are not counted in 'possible': run "
                     "xfleet compression estimate.")
    return Report(by, price_per_gb_month, rows, total, top_rows, trend(conn),
                  str(policy.path) if policy is not None and policy.path else None, notes=notes,
                  currency=currency)


def _money(n: float | None, price: float) -> float | None:
    return None if n is None else round(n / GIB * price, 2)


def _row(r: Sequence[Any], price: float, with_policy: bool) -> dict[str, Any]:
    (grp, n, logical, physical, thick, reserved, possible, var, corr, pvols, est, unest, rw,
     rw_l, rw_gain) = r
    out: dict[str, Any] = {
        "group": grp, "volumes": n, "logical": logical, "physical": physical,
        "ratio": round(logical / physical, 2) if physical else None,
        "saved": logical - physical, "saved_money": _money(logical - physical, price),
        "thick": thick, "thick_reserved": reserved,
        "possible": None, "possible_low": None, "possible_high": None, "possible_money": None,
        "possible_volumes": pvols, "estimated": est, "unestimated": unest,
        "rewrite_volumes": rw, "rewrite_logical": rw_l,
        "rewrite_gain": int(rw_gain) if rw_gain is not None else None,
        "_var": float(var or 0.0), "_corr": float(corr or 0.0),
    }
    if with_policy:
        p = int(possible or 0)
        h = math.sqrt(out["_var"] + out["_corr"] ** 2)
        out.update(possible=p, possible_low=int(p - h), possible_high=int(p + h),
                   possible_money=_money(p, price))
    return out


def _total(rows: list[dict[str, Any]], price: float, with_policy: bool) -> dict[str, Any]:
    t: dict[str, Any] = {"group": "TOTAL"}
    for c in ("volumes", "logical", "physical", "thick", "thick_reserved", "possible_volumes",
              "estimated", "unestimated", "rewrite_volumes", "rewrite_logical"):
        t[c] = sum(r[c] or 0 for r in rows)
    t["ratio"] = round(t["logical"] / t["physical"], 2) if t["physical"] else None
    t["saved"] = t["logical"] - t["physical"]
    t["saved_money"] = _money(t["saved"], price)
    gains = [r["rewrite_gain"] for r in rows if r["rewrite_gain"] is not None]
    t["rewrite_gain"] = sum(gains) if gains else None
    if with_policy:
        p = sum(r["possible"] or 0 for r in rows)
        # volumes' own errors are independent; the error of a fallback mean is shared
        h = math.sqrt(sum(r["_var"] for r in rows) + sum(r["_corr"] for r in rows) ** 2)
        t.update(possible=p, possible_low=int(p - h), possible_high=int(p + h),
                 possible_money=_money(p, price))
    else:
        t.update(possible=None, possible_low=None, possible_high=None, possible_money=None)
    for r in rows:
        r.pop("_var", None)
        r.pop("_corr", None)
    return t


def _top(conn: Connection, desired: str, dparams: list[Any], where: str,
         params: Sequence[Any], with_policy: bool,
         limit: int) -> list[dict[str, Any]]:
    """The volumes with the most to gain from the policy (their own estimates only)."""
    if not with_policy or limit <= 0:
        return []
    sql = (f"SELECT v.node, v.name, v.compression, v.new, v.referenced, v.logicalreferenced, "
           "e.ratio, e.ratio_low, e.ratio_high, "
           "v.referenced - v.logicalreferenced / e.ratio AS potential FROM ("
           f"SELECT d.*, {desired} AS new FROM datasets d WHERE d.type = 'volume' AND "
           f"({where})) v JOIN compression_estimates e ON e.node = v.node AND "
           f"e.name = v.name AND e.algorithm = {canonical_sql('v.new')} "
           f"WHERE v.new IS NOT NULL AND {canonical_sql('v.compression')} IS DISTINCT FROM "
           f"{canonical_sql('v.new')} AND e.ratio > 0 ORDER BY potential DESC NULLS LAST LIMIT ?")
    cur = conn.execute(sql, (*dparams, *params, limit))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur]


# ---------------------------------------------------------------------------------------------
# daily totals (the trend)


def record_daily(conn: Connection, now: float | None = None) -> int:
    """Upsert today's per-pool volume totals (from the pools summary: no scan of datasets).
    Returns the number of pool rows written."""
    now = now or time.time()
    day = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d")
    mirror.begin(conn, "today's compression totals")
    try:
        # `WHERE TRUE`: SQLite's parser needs it between INSERT ... SELECT and ON CONFLICT
        n = conn.execute(
            "INSERT INTO compression_daily (day, node, pool, volumes, logicalused, used, "
            "usedbyrefreservation, at) SELECT ?, node, name, coalesce(volumes, 0), "
            "coalesce(logicalused, 0), coalesce(used, 0), coalesce(usedbyrefreservation, 0), "
            "? FROM pools WHERE TRUE ON CONFLICT (day, node, pool) DO UPDATE SET "
            "volumes = excluded.volumes, logicalused = excluded.logicalused, "
            "used = excluded.used, usedbyrefreservation = excluded.usedbyrefreservation, "
            "at = excluded.at", (day, now)).rowcount
        conn.execute("COMMIT")
    except BaseException:
        mirror.rollback(conn)
        raise
    return n


def trend(conn: Connection, days: int = 90) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT day, sum(volumes), sum(logicalused), sum(used - usedbyrefreservation) "
        "FROM compression_daily GROUP BY day ORDER BY day DESC LIMIT ?", (days,)).fetchall()
    return [{"day": d, "volumes": n, "logical": lg, "physical": ph,
             "ratio": round(lg / ph, 2) if ph else None, "saved": lg - ph}
            for d, n, lg, ph in reversed(rows)]


# ---------------------------------------------------------------------------------------------
# rendering


def table_columns(rep: Report) -> list[str]:
    """The terminal table's headers: the money columns name the currency."""
    return [_money_head(c, rep.currency) for c in TABLE_COLUMNS]


def _money_head(column: str, currency: str) -> str:
    return column.replace("/month", f" {currency}/month") if column.endswith("/month") \
        else column


def table_rows(rep: Report) -> list[dict[str, Any]]:
    """Rows for a terminal table (keys: `table_columns`): sizes readable, the interval folded
    into one column."""
    out = []
    for r in [*rep.rows, rep.total]:
        possible = "-" if r["possible"] is None else (
            f"{fmt_bytes(r['possible'])} ({fmt_bytes(r['possible_low'])}.."
            f"{fmt_bytes(r['possible_high'])})")
        out.append({
            "group": r["group"], "volumes": f"{r['volumes']:,}",
            "logical": r["logical"], "physical": r["physical"],
            "ratio": "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
            "saved": fmt_bytes(r["saved"]), "saved/month": _fmt_money(r["saved_money"]),
            "thick": f"{r['thick']:,}",
            "possible by policy (95%)": possible,
            "possible/month": _fmt_money(r["possible_money"]),
            "needs rewrite": f"{r['rewrite_volumes']:,} ({fmt_bytes(r['rewrite_logical'])})",
        })
    return [{_money_head(k, rep.currency): v for k, v in r.items()} for r in out]


TABLE_COLUMNS = ("group", "volumes", "logical", "physical", "ratio", "saved", "saved/month",
                 "thick", "possible by policy (95%)", "possible/month", "needs rewrite")


def _fmt_money(v: float | None, currency: str | None = None) -> str:
    if v is None:
        return "-"
    return f"{v:,.2f} {currency}" if currency else f"{v:,.2f}"


def csv_rows(rep: Report) -> list[dict[str, Any]]:
    return [*rep.rows, rep.total]


def _trend_chart(points: list[dict[str, Any]], width: int = 1100, height: int = 200) -> str:
    if not points:
        return '<p class="empty">trend: no daily totals yet (each report run records one)</p>'
    vals = [p["saved"] for p in points]
    vmax = max(max(vals), 1)
    left, right, top, bottom = 80, 20, 30, 30
    pw, ph = width - left - right, height - top - bottom
    n = len(points)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (pw * i / (n - 1) if n > 1 else pw / 2)
        return x, top + ph - v / vmax * ph

    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in enumerate(vals)))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'role="img" aria-label="saved bytes per day">',
           '<text x="10" y="16" class="t">Saved by compression, per day (logical - '
           'physical)</text>',
           f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#999"/>',
           f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{fmt_bytes(vmax)}</text>',
           f'<text x="{left - 6}" y="{top + ph}" text-anchor="end">0</text>',
           f'<polyline points="{pts}" fill="none" stroke="#2e7d32" stroke-width="2"/>']
    for i, p in enumerate(points):
        x, y = xy(i, p["saved"])
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#2e7d32"><title>'
                   f'{p["day"]}: {fmt_bytes(p["saved"])} saved, ratio {p["ratio"]}'
                   '</title></circle>')
        if i in (0, n - 1) or n <= 8:
            out.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">'
                       f'{p["day"]}</text>')
    out.append("</svg>")
    return "\n".join(out)


def render_html(rep: Report) -> str:
    """A self-contained HTML page (inline CSS and SVG, no scripts, no external assets)."""
    e = html.escape
    t = rep.total
    when = dt.datetime.fromtimestamp(rep.generated_at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cards = [
        ("volumes", f"{t['volumes']:,}"), ("logical", fmt_bytes(t["logical"])),
        ("physical", fmt_bytes(t["physical"])),
        ("achieved ratio", "-" if t["ratio"] is None else f"{t['ratio']:.2f}x"),
        ("saved now / month",
         f"{fmt_bytes(t['saved'])} / {_fmt_money(t['saved_money'], rep.currency)}"),
        ("possible by policy (95%)", "-" if t["possible"] is None else
         f"{fmt_bytes(t['possible'])} ({fmt_bytes(t['possible_low'])}.."
         f"{fmt_bytes(t['possible_high'])})"),
        ("possible / month", _fmt_money(t["possible_money"], rep.currency)),
        ("needs rewrite", f"{t['rewrite_volumes']:,} volumes"),
    ]
    chart_items = [(str(r["group"]), float(r["saved"]),
                    None if r["possible"] is None else float(r["possible"]),
                    None if r["possible"] is None else
                    float(r["possible_high"] - r["possible"]))
                   for r in rep.rows[:30]]
    top_items = [(f"{r['node']}:{r['name']} {r['compression']}->{r['new']}",
                  float(r["potential"]), None, None) for r in rep.top]
    head = [_money_head(h, rep.currency) for h in (
        "group", "volumes", "logical", "physical", "ratio", "saved", "saved/month", "thick",
        "possible (95%)", "possible/month", "estimated/changed", "needs rewrite")]
    body = []
    for r in [*rep.rows, rep.total]:
        cells = [e(str(r["group"])), f"{r['volumes']:,}", fmt_bytes(r["logical"]),
                 fmt_bytes(r["physical"]), "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
                 fmt_bytes(r["saved"]), _fmt_money(r["saved_money"]), f"{r['thick']:,}",
                 "-" if r["possible"] is None else
                 f"{fmt_bytes(r['possible'])} ({fmt_bytes(r['possible_low'])}.."
                 f"{fmt_bytes(r['possible_high'])})",
                 _fmt_money(r["possible_money"]),
                 f"{r['estimated']:,}/{r['possible_volumes']:,}",
                 f"{r['rewrite_volumes']:,} ({fmt_bytes(r['rewrite_logical'])})"]
        tag = "th" if r is rep.total else "td"
        body.append("<tr>" + "".join(
            f'<{tag} class="{"" if i == 0 else "n"}">{c}</{tag}>'
            for i, c in enumerate(cells)) + "</tr>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>xfleet compression report</title><style>{_CSS}</style></head>
<body>
<h1>Compression cost report</h1>
<div class="meta">generated {e(when)} · grouped by {e(rep.by)} · price
{rep.price_per_gb_month:g} {e(rep.currency)} per GB-month · policy {e(rep.policy or 'none')}</div>
<div class="cards">{''.join(f'<div class="card"><b>{e(v)}</b><span>{e(k)}</span></div>'
                            for k, v in cards)}</div>
<h2>Savings by {e(rep.by)}</h2>
{_bar_chart(f"Saved now vs possible by policy, by {rep.by}", chart_items,
            legend=("saved now", "possible by policy (95%)"))}
<h2>Top volumes by potential</h2>
{_bar_chart("Estimated bytes a policy change + rewrite would free", top_items,
            color="#1565c0")}
<h2>Trend</h2>
{_trend_chart(rep.trend)}
<h2>Table</h2>
<table><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>
{''.join(body)}</table>
<h2>How to read this</h2>
<ul class="notes">{''.join(f'<li>{e(n)}</li>' for n in rep.notes)}</ul>
</body></html>
"""
