"""Reading the mirror: the queries behind `xfleet ls`, `show`, `stats` and `sql`.

Everything here is a bounded SQL query over indexed columns: nothing loads the fleet into
Python. Results are dicts (for --json) streamed from the cursor.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xfleet.core import zfs
from xfleet.core.errors import UsageError
from xfleet.core.names import validate_dataset
from xfleet.core.units import format_age, parse_size
from xfleet.mirror.backend import Connection, DatabaseError, ProgrammingError
from xfleet.mirror.store import rollback

# Kinds of columns, from the ZFS property kinds in xfleet.core.zfs plus the mirror's own columns.
INT_COLUMNS = frozenset({"createtxg", "creation"})  # integers that are not byte counts
SIZE_COLUMNS = zfs.INT_COLUMNS - INT_COLUMNS  # bytes: accept 10G, 1.5T
RATIO_COLUMNS = zfs.RATIO_COLUMNS
TEXT_COLUMNS = zfs.TEXT_COLUMNS | {"node", "pool", "tenant"}
COLUMNS: tuple[str, ...] = (
    "node", "pool", "name", "type", "guid", "createtxg", "origin", "creation", "volsize",
    "volblocksize", "used", "referenced", "logicalused", "logicalreferenced", "usedbysnapshots",
    "usedbyrefreservation", "refreservation", "written", "compression", "compressratio",
    "refcompressratio", "tenant", "user_properties", "synced_at",
)
DEFAULT_LS_COLUMNS: tuple[str, ...] = (
    "node", "name", "type", "volsize", "used", "referenced", "compression", "compressratio",
    "tenant",
)
TYPE_ALIASES = {
    "volume": "volume", "volumes": "volume", "vol": "volume", "vols": "volume", "zvol": "volume",
    "snapshot": "snapshot", "snapshots": "snapshot", "snap": "snapshot", "snaps": "snapshot",
    "filesystem": "filesystem", "filesystems": "filesystem", "fs": "filesystem",
    "bookmark": "bookmark", "bookmarks": "bookmark",
    "clone": "clone", "clones": "clone",
}
_WHERE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_:.\-]*)\s*(>=|<=|!=|=|>|<|~)\s*(.*?)\s*$")


def resolve_column(name: str, *, tenant_property: str = "xfleet:tenant") -> str:
    """The mirror column a user's column name means (any case; the tenant property is
    `tenant`), or a UsageError naming the columns there are: for `--columns`, `--sort`,
    `--where` and the API's `columns`."""
    col = name.strip().lower()
    if col == tenant_property:
        return "tenant"
    if col not in COLUMNS:
        close = difflib.get_close_matches(col, COLUMNS, n=1)
        raise UsageError(
            f"unknown column {name!r}",
            hint=(f"did you mean {close[0]!r}? " if close else "")
            + f"columns: {', '.join(COLUMNS)}",
        )
    return col


_column = resolve_column  # the old private name, still used by xfleet/cli/query.py


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: Any

    def sql(self) -> tuple[str, list[Any]]:
        if self.value is None:
            if self.op == "=":
                return f"{self.column} IS NULL", []
            if self.op == "!=":
                return f"{self.column} IS NOT NULL", []
            raise UsageError(f"'{self.column}{self.op}none' compares with nothing",
                             hint="use = or != with none")
        if self.op == "~":
            return f"glob(?, {self.column})", [self.value]
        return f"{self.column} {self.op} ?", [self.value]


def parse_where(expr: str, *, tenant_property: str = "xfleet:tenant") -> Condition:
    """'used>10G', 'compression=off', 'compressratio<1.2', 'name~*db*', 'origin=none'."""
    m = _WHERE.match(expr)
    if not m:
        raise UsageError(
            f"cannot read the condition {expr!r}",
            hint="write COLUMN OP VALUE, with OP one of = != > >= < <= ~ (glob), "
            "e.g. 'used>10G', 'compression=off', 'name~*prod*'",
        )
    col = resolve_column(m.group(1), tenant_property=tenant_property)
    op, raw = m.group(2), m.group(3)
    if raw.lower() in ("none", "-", "null"):
        return Condition(col, op, None)
    if op == "~":
        if col not in TEXT_COLUMNS:
            raise UsageError(f"'~' (glob) works on text columns, not {col!r}")
        return Condition(col, op, raw)
    value: Any = raw
    try:
        if col in SIZE_COLUMNS:
            value = parse_size(raw)
        elif col in INT_COLUMNS:
            value = int(raw)
            if not -(2**63) <= value < 2**63:
                raise ValueError("out of range")
        elif col in RATIO_COLUMNS:
            value = float(raw.rstrip("xX"))
            if not math.isfinite(value):
                raise ValueError("not finite")
    except (ValueError, UsageError):
        raise UsageError(
            f"{raw!r} is not a valid value for {col!r} in {expr!r}",
            hint="sizes like 10G or 512M; ratios like 1.5; counts as integers",
        ) from None
    if col == "type":
        value = TYPE_ALIASES.get(raw.lower(), raw.lower())
    return Condition(col, op, value)


@dataclass
class Selection:
    """What `xfleet ls` asks for. Every filter is AND-ed."""

    nodes: Sequence[str] = ()
    pools: Sequence[str] = ()
    types: Sequence[str] = ()
    tenants: Sequence[str] = ()
    labels: Sequence[str] = ()  # node labels, "key=value"
    origin: str | None = None  # clones of this snapshot (or of any snapshot of this dataset)
    pattern: str | None = None  # glob if it has * ? [, else substring of name
    where: Sequence[str] = ()
    sort: str | None = None
    desc: bool = False
    limit: int | None = None
    columns: Sequence[str] = DEFAULT_LS_COLUMNS
    tenant_property: str = "xfleet:tenant"
    conditions: list[Condition] = field(default_factory=list)

    def compile(self) -> tuple[str, list[Any]]:
        """The WHERE clause and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []

        def any_of(col: str, values: Sequence[Any]) -> None:
            if len(values) == 1:
                clauses.append(f"{col} = ?")
            else:
                clauses.append(f"{col} IN ({', '.join('?' for _ in values)})")
            params.extend(values)

        if self.nodes:
            any_of("node", list(self.nodes))
        if self.pools:
            any_of("pool", list(self.pools))
        if self.types:
            kinds = []
            for t in self.types:
                k = TYPE_ALIASES.get(t.lower())
                if k is None:
                    raise UsageError(f"unknown type {t!r}",
                                     hint="types: volume, snapshot, filesystem, bookmark, clone")
                kinds.append(k)
            plain = [k for k in kinds if k != "clone"]
            if "clone" in kinds and not plain:
                clauses.append("origin IS NOT NULL")
            elif "clone" in kinds:
                any_of("type", plain)
                clauses[-1] = f"({clauses[-1]} OR origin IS NOT NULL)"
            else:
                any_of("type", plain)
        if self.tenants:
            any_of("tenant", list(self.tenants))
        for label in self.labels:
            key, sep, val = label.partition("=")
            if not sep or not key:
                raise UsageError(f"label filter {label!r} is not KEY=VALUE",
                                 hint="e.g. --label zone=eu-1")
            clauses.append(
                "node IN (SELECT name FROM nodes WHERE json_extract(labels, ?) = ?)"
            )
            params.extend([f'$."{key}"', val])
        if self.origin:
            validate_dataset(self.origin)
            if "@" in self.origin:
                clauses.append("origin = ?")
                params.append(self.origin)
            else:
                clauses.append("origin >= ? AND origin < ?")
                params.extend([self.origin + "@", self.origin + "A"])  # 'A' follows '@'
        if self.pattern:
            if any(c in self.pattern for c in "*?["):
                clauses.append("glob(?, name)")
            else:
                clauses.append("instr(name, ?) > 0")
            params.append(self.pattern)
        conds = list(self.conditions) + [
            parse_where(w, tenant_property=self.tenant_property) for w in self.where
        ]
        for c in conds:
            sql, p = c.sql()
            clauses.append(sql)
            params.extend(p)
        return (" AND ".join(clauses) if clauses else "TRUE"), params

    def order_by(self) -> str:
        if not self.sort:
            return "node, name"
        spec = self.sort
        desc = self.desc
        if spec.startswith("-"):
            spec, desc = spec[1:], not desc
        if ":" in spec and spec.rsplit(":", 1)[1] in ("asc", "desc"):
            spec, direction = spec.rsplit(":", 1)
            desc = direction == "desc"
        col = resolve_column(spec, tenant_property=self.tenant_property)
        return f"{col} {'DESC' if desc else 'ASC'}"

    def sql(self) -> tuple[str, list[Any]]:
        where, params = self.compile()
        cols = [resolve_column(c, tenant_property=self.tenant_property) for c in self.columns]
        sql = f"SELECT {', '.join(cols)} FROM datasets WHERE {where} ORDER BY {self.order_by()}"
        if self.limit is not None:
            if self.limit < 0:
                raise UsageError("--limit must be zero or more")
            sql += f" LIMIT {int(self.limit)}"
        return sql, params


def ls(conn: Connection, sel: Selection) -> Iterator[dict[str, Any]]:
    """Rows matching `sel`, streamed from the cursor."""
    sql, params = sel.sql()
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    for row in cur:
        yield dict(zip(names, row, strict=True))


def count(conn: Connection, sel: Selection, cap: int = 100_000) -> tuple[int, bool]:
    """How many rows match, counting at most `cap` (returns (n, capped))."""
    where, params = sel.compile()
    n = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM datasets WHERE {where} LIMIT {cap + 1}) AS hit",
        params
    ).fetchone()[0]
    return (cap, True) if n > cap else (n, False)


# ---------------------------------------------------------------------------------------------
# show


@dataclass
class Detail:
    row: dict[str, Any]
    node: dict[str, Any]
    snapshots: list[dict[str, Any]]
    clones: list[dict[str, Any]]
    origin_chain: list[dict[str, Any]]
    children: int
    pool: dict[str, Any] | None = None  # a pool's root dataset: its health (pool_health)


def _row(conn: Connection, sql: str, params: Sequence[Any]) -> dict[str, Any] | None:
    cur = conn.execute(sql, params)
    r = cur.fetchone()
    return None if r is None else dict(zip([d[0] for d in cur.description], r, strict=True))


def find(conn: Connection, name: str, node: str | None = None) -> dict[str, Any]:
    validate_dataset(name, allow_bookmark=True)
    if node:
        row = _row(conn, "SELECT * FROM datasets WHERE node = ? AND name = ?", (node, name))
        if row is None:
            raise UsageError(f"no dataset {name!r} on node {node!r} in the mirror",
                             hint="check the name with 'xfleet ls', or run 'xfleet sync'")
        return row
    cur = conn.execute("SELECT * FROM datasets WHERE name = ? ORDER BY node LIMIT 10", (name,))
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    if not rows:
        like = conn.execute(
            "SELECT name FROM datasets WHERE glob(?, name) LIMIT 3", (f"*{name.split('/')[-1]}*",)
        ).fetchall()
        raise UsageError(
            f"no dataset named {name!r} in the mirror",
            hint=(f"similar: {', '.join(r[0] for r in like)}" if like else
                  "check the name with 'xfleet ls', or run 'xfleet sync'"),
        )
    if len(rows) > 1:
        where = ", ".join(r["node"] for r in rows) + (", ..." if len(rows) == 10 else "")
        raise UsageError(f"{name!r} exists on several nodes: {where}",
                         hint="say which with --node NODE")
    return rows[0]


def show(conn: Connection, name: str, node: str | None = None) -> Detail:
    row = find(conn, name, node)
    n = row["node"]
    base = row["name"].split("@", 1)[0]
    q = "SELECT * FROM datasets WHERE node = ? AND name > ? AND name < ? ORDER BY createtxg"
    snaps = [dict(r) for r in conn.execute(q, (n, base + "@", base + "A"))] \
        if "@" not in row["name"] else []
    if "@" in row["name"]:
        clone_rows = conn.execute(
            "SELECT * FROM datasets WHERE origin = ? ORDER BY node, name", (row["name"],)
        )
    else:
        clone_rows = conn.execute(
            "SELECT * FROM datasets WHERE origin >= ? AND origin < ? ORDER BY origin, name",
            (base + "@", base + "A"),
        )
    clones = [dict(r) for r in clone_rows if r["node"] == n]
    chain: list[dict[str, Any]] = []
    origin = row["origin"]
    seen: set[str] = set()
    while origin and origin not in seen and len(chain) < 64:
        seen.add(origin)
        snap = _row(conn, "SELECT * FROM datasets WHERE node = ? AND name = ?", (n, origin))
        parent = _row(conn, "SELECT * FROM datasets WHERE node = ? AND name = ?",
                      (n, origin.split("@", 1)[0]))
        chain.append({"snapshot": origin, "dataset": origin.split("@", 1)[0],
                      "present": snap is not None,
                      "createtxg": snap["createtxg"] if snap else None})
        origin = parent["origin"] if parent else None
    children = conn.execute(
        "SELECT count(*) FROM datasets WHERE node = ? AND name > ? AND name < ? "
        "AND type != 'snapshot'", (n, base + "/", base + "0"),  # '0' follows '/'
    ).fetchone()[0]
    node_row = _row(conn, "SELECT * FROM nodes WHERE name = ?", (n,)) or {"name": n}
    for key in ("labels", "groups"):
        if isinstance(node_row.get(key), str):
            node_row[key] = json.loads(node_row[key])
    if row.get("user_properties"):
        row["user_properties"] = json.loads(row["user_properties"])
    return Detail(row=row, node=node_row, snapshots=snaps, clones=clones,
                  origin_chain=chain, children=children,
                  pool=pool_health(conn, n, row["name"]) if row["name"] == row["pool"] else None)


# ---------------------------------------------------------------------------------------------
# pool health (`zpool status`, kept by every sync: docs/sync.md)

HEALTH_FIELDS = ("health", "status", "action", "scan_function", "scan_state", "scan_start",
                 "scan_end", "scan_errors", "read_errors", "write_errors", "checksum_errors",
                 "data_errors", "health_at")


def pool_errors(pool: dict[str, Any]) -> int | None:
    """Read, write and checksum errors of a pool's leaf vdevs plus its data errors (None:
    its health was never read)."""
    if pool.get("health_at") is None:
        return None
    return sum(pool.get(k) or 0 for k in ("read_errors", "write_errors", "checksum_errors",
                                          "data_errors"))


def health_summary(pool: dict[str, Any]) -> str:
    """A pool's state with its errors, as one word or two: `ONLINE`, `DEGRADED 3 err`."""
    errors = pool_errors(pool)
    health = pool.get("health") or "-"
    return f"{health} {errors} err" if errors else health


def last_scrub(pool: dict[str, Any]) -> float | None:
    """When the pool's last scrub finished, if its last scan was that scrub."""
    if pool.get("scan_function") == "SCRUB" and pool.get("scan_state") == "FINISHED":
        end = pool.get("scan_end")
        return float(end) if end is not None else None
    return None


def scan_summary(pool: dict[str, Any], now: float) -> str | None:
    """The pool's last or running scan in a few words: `scrub 3d02h ago`, `resilver running
    12m05s`, `scrub paused`, `scrub canceled 2h10m ago`, `none` (never scanned); None: its
    health was never read."""
    if pool.get("health_at") is None:
        return None
    fn, state = pool.get("scan_function"), pool.get("scan_state")
    if not fn:
        return "none"
    word = str(fn).lower()
    start, end = pool.get("scan_start"), pool.get("scan_end")
    if state == "SCANNING":
        return f"{word} running" + (f" {format_age(now - start)}" if start else "")
    if state == "PAUSED":
        return f"{word} paused"
    ago = f" {format_age(now - end)} ago" if end is not None else ""
    if state == "CANCELED":
        return f"{word} canceled{ago}"
    errors = pool.get("scan_errors")
    return f"{word}{ago}" + (f", {errors} errors" if errors else "")


def pool_health(conn: Connection, node: str, pool: str) -> dict[str, Any] | None:
    """A pool's health as the last sync read it, with its vdev tree (`vdevs`, depth first);
    None when the mirror has no such pool."""
    row = _row(conn, f"SELECT {', '.join(HEALTH_FIELDS)} FROM pools WHERE node = ? AND "
               "name = ?", (node, pool))
    if row is None:
        return None
    cur = conn.execute(
        "SELECT position, parent, depth, name, vdev_type, path, state, read_errors, "
        "write_errors, checksum_errors, slow_ios FROM vdevs WHERE node = ? AND pool = ? "
        "ORDER BY position", (node, pool))
    cols = [d[0] for d in cur.description]
    row["vdevs"] = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    row["errors"] = pool_errors(row)
    row["last_scrub"] = last_scrub(row)
    return {"node": node, "pool": pool, **row}


# ---------------------------------------------------------------------------------------------
# stats


def stats(conn: Connection, nodes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Per node and pool: counts by type, logical vs physical bytes of volumes, capacity,
    health (state, error counters and their sum `errors`, the last scan, `last_scrub`), and
    how fresh the mirror's data is. Reads the per-pool summary a sync stores in `pools` (no
    scan of `datasets`)."""
    where = ""
    params: list[Any] = []
    if nodes:
        where = f"WHERE p.node IN ({', '.join('?' for _ in nodes)})"
        params = list(nodes)
    cur = conn.execute(
        f"""
        SELECT p.node, p.name AS pool, p.health, p.volumes, p.filesystems, p.snapshots,
               p.bookmarks, p.clones, p.volsize, p.logicalused, p.used,
               p.usedbyrefreservation, p.size, p.allocated, p.free, p.capacity,
               p.fragmentation, p.read_errors, p.write_errors, p.checksum_errors,
               p.data_errors, p.scan_function, p.scan_state, p.scan_start, p.scan_end,
               p.scan_errors, p.health_at, n.stale, n.last_success, n.last_error, n.watch_pid,
               n.watch_heartbeat, n.watch_state
        FROM pools p LEFT JOIN nodes n ON n.name = p.node {where}
        ORDER BY p.node, p.name
        """,
        params,
    )
    cols = [d[0] for d in cur.description]
    now = time.time()
    out: list[dict[str, Any]] = []
    for r in cur:
        d = dict(zip(cols, r, strict=True))
        # achieved compression of what is allocated (a refreservation is not data)
        alloc = (d["used"] or 0) - (d.pop("usedbyrefreservation") or 0)
        d["compressratio"] = round(d["logicalused"] / alloc, 2) if alloc > 0 else None
        d["stale"] = bool(d["stale"])
        d["age_seconds"] = round(now - d["last_success"], 1) if d["last_success"] else None
        d["errors"] = pool_errors(d)
        d["last_scrub"] = last_scrub(d)
        out.append(d)
    return out


# ---------------------------------------------------------------------------------------------
# read-only SQL and saved queries


# A watch that has not reported for this long is not live any more.
WATCH_STALE_AFTER = 15.0


def watch_live(node: dict[str, Any], now: float) -> bool:
    """Whether a watch process reports for this `nodes` row (its heartbeat is recent)."""
    return (node.get("watch_pid") is not None and node.get("watch_heartbeat") is not None
            and now - node["watch_heartbeat"] < WATCH_STALE_AFTER)


def confirmed_at(node: dict[str, Any], now: float) -> float | None:
    """When the mirror was last confirmed current for this `nodes` row: a live, following
    watch's heartbeat, else the last successful sync (None: never)."""
    if watch_live(node, now) and node.get("watch_state") == "following":
        return float(node["watch_heartbeat"])
    last: float | None = node.get("last_success")
    return last


def status(conn: Connection, nodes: Sequence[str], now: float) -> list[dict[str, Any]]:
    """Per node: how fresh its rows are. `lag_seconds` is the time since the mirror was last
    confirmed current for the node (by a live watch's heartbeat, else by its last successful
    sync); `space_due` counts rows whose space figures await a refresh (index range counts)."""
    out: list[dict[str, Any]] = []
    for name in nodes:
        r = conn.execute("SELECT * FROM nodes WHERE name = ?", (name,)).fetchone()
        if r is None:
            out.append({"node": name, "state": "never synced", "watch": None,
                        "lag_seconds": None, "last_eid": None, "last_change_age": None,
                        "last_full_age": None, "last_incremental_age": None,
                        "last_reconcile_age": None, "last_refresh_age": None, "space_due": 0,
                        "gaps": 0, "last_gap": None, "last_gap_age": None, "stale": False,
                        "last_error": None, "datasets": 0})
            continue
        d = dict(r)

        def age(col: str, d: dict[str, Any] = d) -> float | None:
            return None if d.get(col) is None else round(now - d[col], 3)

        live = watch_live(d, now)
        confirmed = confirmed_at(d, now)
        due = 0
        for p in conn.execute("SELECT name, space_dirty_since FROM pools WHERE node = ? AND "
                              "space_dirty_since IS NOT NULL", (name,)):
            due += conn.execute(
                "SELECT count(*) FROM datasets WHERE node = ? AND pool = ? AND synced_at < ?",
                (name, p[0], p[1])).fetchone()[0]
        state = "stale" if d["stale"] else ("watched" if live else "ok")
        out.append({
            "node": name, "state": state,
            "watch": f"{d['watch_state']} (pid {d['watch_pid']} on {d['watch_host']})"
            if live else None,
            "lag_seconds": None if confirmed is None else round(now - confirmed, 3),
            "last_eid": d.get("last_eid"), "last_change_age": age("last_change_at"),
            "last_full_age": age("last_full"), "last_incremental_age": age("last_incremental"),
            "last_reconcile_age": age("last_reconcile"), "last_refresh_age": age("last_refresh"),
            "space_due": due, "gaps": d.get("gaps") or 0, "last_gap": d.get("last_gap"),
            "last_gap_age": age("last_gap_at"), "stale": bool(d["stale"]),
            "last_error": d.get("last_error"), "datasets": d.get("datasets") or 0,
        })
    return out


# What a user's SQL (`xfleet sql`, playbook `query`, `assert` and `when`) may do on the mirror:
# read. The connection is read-only already (mode=ro, query_only); the authorizer also refuses
# what a read-only connection still allows: ATTACH (which creates the file it names), VACUUM
# INTO (an ATTACH inside), pragmas that set or change something.
_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                 sqlite3.SQLITE_RECURSIVE}
_INFO_PRAGMAS = {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
                 "foreign_key_list", "table_list", "function_list", "pragma_list",
                 "collation_list", "compile_options", "database_list"}
_VALUE_PRAGMAS = {"user_version", "schema_version", "data_version", "page_count", "page_size",
                  "freelist_count", "encoding", "application_id"}
REFUSED = ("xfleet runs read-only SQL on the mirror: ATTACH, VACUUM, writes and pragmas that "
           "set something are refused")


def _authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None,
               _trigger: str | None) -> int:
    if action in _READ_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg1 is not None:
        name = arg1.lower()
        if name in _INFO_PRAGMAS or (name in _VALUE_PRAGMAS and arg2 is None):
            return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def read_only(conn: Connection) -> Connection:
    """Guard a (read-only) mirror connection for SQL a user wrote: reading only. SQLite: an
    authorizer. PostgreSQL: the connection's transactions are read-only, and `run_sql` runs the
    one statement it allows inside BEGIN READ ONLY (docs/team.md adds a read-only role)."""
    if isinstance(conn, sqlite3.Connection):
        conn.set_authorizer(_authorize)
        # text that is not UTF-8 (a value written by another tool) is shown, not an error
        conn.text_factory = lambda b: b.decode("utf-8", "replace")
    return conn


_COMMENT_OR_QUOTED = re.compile(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/)", re.S)


def one_statement(sql: str) -> bool:
    """True when `sql` is one statement (a `;` only at its end), outside quotes and comments."""
    code = "".join(p for i, p in enumerate(_COMMENT_OR_QUOTED.split(sql)) if i % 2 == 0)
    return not code.strip().rstrip(";").count(";")


_NAMED_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def named_parameters(sql: str) -> list[str]:
    """The `:name` parameters of `sql` (outside quotes and comments; `::` casts are not)."""
    code = "".join(p for i, p in enumerate(_COMMENT_OR_QUOTED.split(sql)) if i % 2 == 0)
    return list(dict.fromkeys(_NAMED_PARAM.findall(code)))


def run_sql(
    conn: Connection, sql: str, params: dict[str, Any] | None = None
) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
    """Run SQL on a read-only connection (guarded by `read_only`); returns (column names,
    row iterator). One statement only, on either engine. A `:name` parameter not given is
    NULL (so a saved query's `coalesce(:limit, 20)` has its default)."""
    read_only(conn)
    pg = not isinstance(conn, sqlite3.Connection)
    if not one_statement(sql):
        raise UsageError(f"refused: {REFUSED}: one statement at a time",
                         hint="xfleet sql is for SELECT queries (docs/mirror.md)")
    bound = {**{name: None for name in named_parameters(sql)}, **(params or {})}
    if pg:
        conn.execute("BEGIN READ ONLY")
    try:
        cur = conn.execute(sql, bound)
    except (sqlite3.ProgrammingError, ProgrammingError) as exc:
        if pg:
            rollback(conn)
        raise UsageError(f"SQL error: {exc}",
                         hint="named parameters are passed with --param NAME=VALUE") from None
    except (sqlite3.DatabaseError, DatabaseError) as exc:
        if pg:
            rollback(conn)
        msg = str(exc)
        if "not authorized" in msg or "authorization denied" in msg:
            raise UsageError(f"refused: {REFUSED}",
                             hint="xfleet sql is for SELECT queries (docs/mirror.md)") from None
        if ("readonly" in msg or "read-only" in msg or "query_only" in msg.replace(" ", "_")
                or getattr(exc, "sqlstate", None) == "25006"):
            raise UsageError(f"the mirror is opened read-only here: {msg}",
                             hint="xfleet sql is for SELECT queries") from None
        raise UsageError(f"SQL error: {msg}", hint="tables: see docs/mirror.md") from None
    names = [d[0] for d in cur.description] if cur.description else []
    return names, iter(cur)


@dataclass
class SavedQuery:
    name: str
    description: str
    sql: str
    path: Path


def saved_queries(dirs: Sequence[Path]) -> dict[str, SavedQuery]:
    out: dict[str, SavedQuery] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.sql")):
            text = f.read_text()
            desc = " ".join(
                line[2:].strip() for line in text.splitlines() if line.startswith("--")
            ).strip()
            out.setdefault(f.stem, SavedQuery(f.stem, desc, text, f))
    return out
