"""The read-only JSON API, `/api/v1/...` (docs/serve.md, "API").

Every answer is read from the mirror with the queries behind the CLI (xfleet.mirror.query,
xfleet.mirror.paging, xfleet.mirror.jobs), so `GET /api/v1/datasets?where=used>10G` answers what
`xfleet ls --where 'used>10G' --json` prints, a page at a time. A bad parameter gets a 400 with
the CLI's own message and hint.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from xfleet.core.errors import UsageError
from xfleet.mirror import jobs, query
from xfleet.mirror.backend import Connection
from xfleet.mirror.paging import Filter, Pager, Sort
from xfleet.ops import alerts, capacity

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
JOB_TABLES = {"moves": "moves", "rollouts": "rollouts"}


class NotFound(UsageError):
    """The thing asked for is not in the mirror (HTTP 404)."""


Params = dict[str, list[str]]


def _one(params: Params, name: str) -> str | None:
    values = params.get(name) or []
    if len(values) > 1:
        raise UsageError(f"parameter {name!r} given {len(values)} times",
                         hint=f"give {name} once")
    return values[0] if values else None


def _int(params: Params, name: str, default: int, low: int, high: int) -> int:
    raw = _one(params, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a whole number",
                         hint=f"e.g. {name}={default}") from None
    if not low <= value <= high:
        raise UsageError(f"{name}={value} is out of range", hint=f"{low} to {high}")
    return value


def _bool(params: Params, name: str) -> bool:
    raw = _one(params, name)
    if raw is None:
        return False
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise UsageError(f"{name}={raw!r} is not true or false", hint=f"{name}=true")


def encode_cursor(key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(text: str, width: int) -> tuple[Any, ...]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError):
        key = None
    if not isinstance(key, list) or len(key) != width or \
            not all(isinstance(v, str | int | float) or v is None for v in key):
        raise UsageError("the 'after' cursor is not one this API gave out",
                         hint="pass the 'next' value of the previous page unchanged, with the "
                         "same sort")
    return tuple(key)


def datasets(conn: Connection, params: Params, *, tenant_property: str) -> dict[str, Any]:
    """A page of datasets: the filters of `xfleet ls` (node, pool, type, tenant, label, origin,
    name, where), `sort` (`-used`: descending), `limit`, and `after` (the previous page's
    `next`). Keyset paging: a page deep in a million rows costs what the first one does."""
    columns = tuple(c.strip() for c in (_one(params, "columns") or "").split(",") if c.strip()) \
        or query.DEFAULT_LS_COLUMNS
    for c in columns:
        query.resolve_column(c, tenant_property=tenant_property)  # unknown: UsageError
    sel = query.Selection(
        nodes=params.get("node", []), pools=params.get("pool", []),
        types=params.get("type", []), tenants=params.get("tenant", []),
        labels=params.get("label", []), origin=_one(params, "origin"),
        pattern=_one(params, "name"), where=params.get("where", []),
        tenant_property=tenant_property)
    clause, args = sel.compile()
    spec = _one(params, "sort") or "node"
    desc = spec.startswith("-") or _bool(params, "desc")
    sort = Sort(spec.lstrip("-"), desc)
    limit = _int(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    after_text = _one(params, "after")
    after = decode_cursor(after_text, len(sort.key)) if after_text else None
    pager = Pager(conn, sort=sort, filter=Filter(clause=clause, params=tuple(args)),
                  columns=[c for c in columns if c != "user_properties"] or ["name"])
    rows = pager.after(after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [{c: r.get(c) for c in columns} for r in rows]
    if "user_properties" in columns and rows:
        extra = {r["id"]: r for r in conn.execute(
            f"SELECT id, user_properties FROM datasets WHERE id IN "
            f"({', '.join('?' for _ in rows)})", [r["id"] for r in rows])}
        for item, r in zip(items, rows, strict=True):
            item["user_properties"] = extra[r["id"]][1]
    return {"items": items, "next": encode_cursor(pager.key_of(rows[-1])) if more else None,
            "sort": ("-" if sort.desc else "") + sort.column, "limit": limit}


def dataset(conn: Connection, node: str, name: str) -> dict[str, Any]:
    try:
        d = query.show(conn, name, node)
    except UsageError as exc:
        if exc.message.startswith("no dataset"):
            raise NotFound(exc.message, hint=exc.hint) from None
        raise
    return asdict(d)


def nodes(conn: Connection, names: Sequence[str], now: float) -> list[dict[str, Any]]:
    rows = query.status(conn, names, now)
    labels = {r[0]: r[1] for r in conn.execute("SELECT name, labels FROM nodes")}
    for r in rows:
        raw = labels.get(r["node"])
        r["labels"] = json.loads(raw) if isinstance(raw, str) else {}
    return rows


def pools(conn: Connection, names: Sequence[str], now: float) -> list[dict[str, Any]]:
    rows = query.stats(conn, names)
    by_pool = {(f.node, f.pool): f for f in capacity.forecasts(conn, now=now, nodes=names)}
    for r in rows:
        f = by_pool.get((r["node"], r["pool"]))
        if f is not None:
            r["forecast"] = {
                "days": f.days, "growth_per_day": f.growth_per_day,
                "growth_low": f.growth_low, "growth_high": f.growth_high,
                "days_until": {str(k): v for k, v in f.days_until.items()},
                "overcommit_ratio": f.overcommit_ratio, "if_filled_ratio": f.if_filled_ratio,
            }
    return rows


def job_rows(conn: Connection, table: str, params: Params) -> list[dict[str, Any]]:
    kind = jobs.KINDS[table]
    limit = _int(params, "limit", 100, 1, MAX_LIMIT)
    state = _one(params, "state")
    if state is None:
        return [dict(r) for r in jobs.rows(conn, kind, open_only=_bool(params, "open"),
                                           limit=limit)]
    return [dict(r) for r in conn.execute(
        f"SELECT * FROM {kind.table} WHERE state = ? ORDER BY id DESC LIMIT ?", (state, limit))]


def alert_list(conn: Connection, names: Sequence[str], now: float) -> list[dict[str, Any]]:
    found = alerts.evaluate(conn, now=now,
                            forecasts=capacity.forecasts(conn, now=now, nodes=names))
    keep = set(names)
    return [asdict(a) for a in found if a.node is None or a.node in keep]
