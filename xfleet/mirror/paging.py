"""Keyset-paged windowed reads over the mirror's `datasets` table: the core of virtual tables.

A virtual table (the TUI's volumes view, or any script that pages through the fleet) asks for
the rows just after or just before a row it already shows, never for "page 4,000". Every read is
`WHERE <filter> AND <key after the cursor> ORDER BY <key> LIMIT n`, which SQLite answers from an
index on the sort column in time independent of how deep into the table the cursor is.

Ordering rules (the same in both directions, so paging back retraces paging forward):

- the sort key is the sort column followed by `id` as the tie-breaker (sorting by `node` uses
  `(node, name)`, which is unique), so every row has exactly one place;
- NULLs come last whether ascending or descending (a column without a value is rarely what an
  SRE looks for first); rows are split into a non-NULL segment and a NULL segment, each read with
  a row-value comparison that an index on the sort column answers directly.

Counting is capped and time-boxed (`count`), because an exact count of a selective filter over a
million rows is a full scan. Nothing here imports textual or click.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xfleet.core.errors import UsageError
from xfleet.mirror.backend import Connection
from xfleet.mirror.query import COLUMNS, Condition, Selection, parse_where
from xfleet.mirror.store import is_postgres

Row = dict[str, Any]
Key = tuple[Any, ...]

# What the volumes view shows, in order; `id` and `origin` are always fetched as well.
VIEW_COLUMNS: tuple[str, ...] = (
    "node", "name", "type", "volsize", "used", "referenced", "logicalused", "written",
    "compression", "compressratio", "tenant", "creation",
)
SORTABLE: frozenset[str] = frozenset(c for c in COLUMNS if c not in ("user_properties",))
NOT_NULL: frozenset[str] = frozenset({"node", "pool", "name", "type", "id"})

# Indexes that make every VIEW_COLUMNS sort a range read. The mirror (schema v1) has indexes
# only for node/name, type/used, origin and tenant; these are proposed for a schema migration.
PROPOSED_INDEXES: dict[str, str] = {
    c: f"CREATE INDEX IF NOT EXISTS datasets_{c} ON datasets ({c})"
    for c in ("name", "type", "volsize", "used", "referenced", "logicalused", "written",
              "compression", "compressratio", "creation")
}

_OPERATOR = re.compile(r"(>=|<=|!=|=|>|<|~)")


@dataclass(frozen=True)
class Filter:
    """A parsed `/` filter: the text the user typed and the SQL it compiles to."""

    text: str = ""
    clause: str = "TRUE"
    params: tuple[Any, ...] = ()

    @property
    def empty(self) -> bool:
        return self.clause == "TRUE"


def parse_filter(text: str, *, tenant_property: str = "xfleet:tenant") -> Filter:
    """Words AND-ed together: a bare word matches the name (substring, or glob when it has
    `* ? [`); `COLUMN OP VALUE` is a property expression (`used>10G`, `compression=off`,
    `node=n2`, `type=clone`). Raises UsageError with a hint for anything it cannot read."""
    text = text.strip()
    if not text:
        return Filter()
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot read the filter {text!r}: {exc}",
                         hint="close the quote, or drop it") from None
    sel = Selection(columns=("name",), tenant_property=tenant_property)
    conditions: list[Condition] = []
    types: list[str] = []
    for word in words:
        if _OPERATOR.search(word):
            low = word.replace(" ", "").lower()
            if low in ("type=clone", "type=clones"):
                types.append("clone")
                continue
            conditions.append(parse_where(word, tenant_property=tenant_property))
        elif sel.pattern is None:
            sel.pattern = word
        else:
            glob = word if any(c in word for c in "*?[") else f"*{word}*"
            conditions.append(Condition("name", "~", glob))
    sel.conditions = conditions
    sel.types = types
    clause, params = sel.compile()
    return Filter(text=text, clause=clause, params=tuple(params))


@dataclass(frozen=True)
class Sort:
    column: str = "node"
    desc: bool = False

    def __post_init__(self) -> None:
        if self.column not in SORTABLE:
            raise UsageError(f"cannot sort by {self.column!r}",
                             hint=f"sortable: {', '.join(sorted(SORTABLE))}")

    @property
    def key(self) -> tuple[str, ...]:
        """Columns of the (unique) sort key."""
        if self.column == "node":
            return ("node", "name")
        if self.column == "id":
            return ("id",)
        return (self.column, "id")

    @property
    def nullable(self) -> bool:
        return self.column not in NOT_NULL

    def toggled(self) -> Sort:
        return Sort(self.column, not self.desc)


@dataclass(frozen=True)
class _Segment:
    where: str  # extra condition selecting the segment
    key: tuple[str, ...]  # columns compared and ordered on inside the segment
    null: bool  # True for the NULL segment (its rows have no sort value)


@dataclass(frozen=True)
class Count:
    """How many rows match: `n` rows counted; `exact` unless counting stopped early."""

    n: int
    exact: bool = True
    capped: bool = False  # stopped at the cap
    seconds: float = field(default=0.0, compare=False)

    def label(self) -> str:
        if self.exact:
            return f"{self.n:,}"
        return f"≥{self.n:,}"

    def reason(self) -> str:
        if self.exact:
            return ""
        return "capped" if self.capped else "counting stopped: slow filter"


@dataclass
class Pager:
    """Windowed, keyset-paged reads of `datasets` for one sort and one filter."""

    conn: Connection
    sort: Sort = field(default_factory=Sort)
    filter: Filter = field(default_factory=Filter)
    columns: Sequence[str] = VIEW_COLUMNS

    def __post_init__(self) -> None:
        cols = ["id", *self.columns, "origin"]
        for k in self.sort.key:
            if k not in cols:
                cols.append(k)
        self._select = ", ".join(dict.fromkeys(cols))

    # -- the ordering ---------------------------------------------------------------------

    def _segments(self) -> list[_Segment]:
        s = self.sort
        if not s.nullable:
            return [_Segment("TRUE", s.key, False)]
        return [_Segment(f"{s.column} IS NOT NULL", s.key, False),
                _Segment(f"{s.column} IS NULL", ("id",), True)]

    def _segment_of(self, key: Key) -> int:
        return 1 if self.sort.nullable and key[0] is None else 0

    def key_of(self, row: Row) -> Key:
        return tuple(row[c] for c in self.sort.key)

    def _read(self, seg: _Segment, *, forward: bool, bound: Key | None, inclusive: bool,
              limit: int) -> list[Row]:
        desc = self.sort.desc != (not forward)
        where = [f"({self.filter.clause})", seg.where]
        params: list[Any] = list(self.filter.params)
        if bound is not None:
            values = bound[-len(seg.key):] if seg.null else bound
            op = ("<" if desc else ">") + ("=" if inclusive else "")
            if len(seg.key) == 1:
                where.append(f"{seg.key[0]} {op} ?")
            else:
                where.append(f"({', '.join(seg.key)}) {op} ({', '.join('?' for _ in seg.key)})")
            params.extend(values)
        order = ", ".join(f"{c} {'DESC' if desc else 'ASC'}" for c in seg.key)
        sql = (f"SELECT {self._select} FROM datasets WHERE {' AND '.join(where)} "
               f"ORDER BY {order} LIMIT {int(limit)}")
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def sql_plan(self) -> list[str]:
        """The query plan of a forward page read from the start (for tests and docs): SQLite's
        EXPLAIN QUERY PLAN, PostgreSQL's EXPLAIN (COSTS OFF)."""
        seg = self._segments()[0]
        desc = self.sort.desc
        order = ", ".join(f"{c} {'DESC' if desc else 'ASC'}" for c in seg.key)
        explain = "EXPLAIN (COSTS OFF)" if is_postgres(self.conn) else "EXPLAIN QUERY PLAN"
        sql = (f"{explain} SELECT {self._select} FROM datasets "
               f"WHERE ({self.filter.clause}) AND {seg.where} ORDER BY {order} LIMIT 50")
        return [r[-1] for r in self.conn.execute(sql, self.filter.params)]

    # -- windows --------------------------------------------------------------------------

    def first(self, n: int) -> list[Row]:
        """The first `n` rows in display order."""
        return self.after(None, n)

    def last(self, n: int) -> list[Row]:
        """The last `n` rows, in display order."""
        return self.before(None, n)

    def after(self, key: Key | None, n: int, *, inclusive: bool = False) -> list[Row]:
        """Up to `n` rows following the row with sort key `key` (from the start if None)."""
        segs = self._segments()
        start = 0 if key is None else self._segment_of(key)
        out: list[Row] = []
        for i in range(start, len(segs)):
            if len(out) >= n:
                break
            bound = key if i == start else None
            out += self._read(segs[i], forward=True, bound=bound, inclusive=inclusive,
                              limit=n - len(out))
        return out

    def before(self, key: Key | None, n: int) -> list[Row]:
        """Up to `n` rows preceding the row with sort key `key` (from the end if None),
        returned in display order."""
        segs = self._segments()
        start = len(segs) - 1 if key is None else self._segment_of(key)
        out: list[Row] = []
        for i in range(start, -1, -1):
            if len(out) >= n:
                break
            bound = key if i == start else None
            out += self._read(segs[i], forward=False, bound=bound, inclusive=False,
                              limit=n - len(out))
        out.reverse()
        return out

    def around(self, key: Key, n: int) -> list[Row]:
        """Rows from `key` (inclusive) onwards; if fewer than `n` remain, rows before it too.
        Used to re-read a window after the mirror changed without losing the place."""
        rows = self.after(key, n, inclusive=True)
        if len(rows) < n:
            anchor = self.key_of(rows[0]) if rows else key
            rows = self.before(anchor, n - len(rows)) + rows
        return rows

    def position(self, key: Key, *, cap: int = 100_000, budget_s: float = 0.5) -> Count:
        """How many rows precede `key` (its 0-based index), capped and time-boxed like count."""
        rows_before = 0
        segs = self._segments()
        idx = self._segment_of(key)
        deadline = time.perf_counter() + budget_s
        for i in range(idx + 1):
            seg = segs[i]
            where = [f"({self.filter.clause})", seg.where]
            params: list[Any] = list(self.filter.params)
            if i == idx:
                values = key[-len(seg.key):] if seg.null else key
                op = ">" if self.sort.desc else "<"
                where.append(f"({', '.join(seg.key)}) {op} ({', '.join('?' for _ in seg.key)})")
                params.extend(values)
            got = _count_where(self.conn, " AND ".join(where), params, cap - rows_before,
                               deadline)
            rows_before += got.n
            if not got.exact:
                return Count(rows_before, exact=False, capped=got.capped)
        return Count(rows_before)

    def count(self, *, cap: int = 100_000, budget_s: float = 1.0,
              cancelled: Callable[[], bool] | None = None) -> Count:
        """Matching rows: exact when it is cheap, else at least `n` (capped / time-boxed).
        `cancelled` is polled between chunks (a newer filter makes this count moot)."""
        t0 = time.perf_counter()
        c = _count_where(self.conn, self.filter.clause, list(self.filter.params), cap,
                         t0 + budget_s, cancelled)
        return Count(c.n, c.exact, c.capped, time.perf_counter() - t0)


def _count_where(conn: Connection, clause: str, params: Sequence[Any], cap: int,
                 deadline: float, cancelled: Callable[[], bool] | None = None) -> Count:
    """Count rows matching `clause` up to `cap`, giving up at `deadline`.

    A filtered count scans the table in rowid chunks, so running out of time still yields a
    lower bound; an unfiltered count is one scan of the smallest index (~10-30 ms per million
    rows) and is always exact."""
    if clause == "TRUE":
        return Count(conn.execute("SELECT count(*) FROM datasets").fetchone()[0])
    counted = 0
    # Scan in id chunks so a slow filter still yields a lower bound when time runs out.
    lo_hi = conn.execute("SELECT min(id), max(id) FROM datasets").fetchone()
    if lo_hi[0] is None:
        return Count(0)
    lo, hi = int(lo_hi[0]), int(lo_hi[1])
    chunk = 32768
    start = lo
    while start <= hi:
        if time.perf_counter() > deadline or (cancelled is not None and cancelled()):
            return Count(counted, exact=False)
        remaining = cap - counted
        n = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM datasets NOT INDEXED WHERE id >= ? AND id < ? "
            f"AND ({clause}) LIMIT {remaining + 1}) AS chunk",
            [start, start + chunk, *params],
        ).fetchone()[0]
        counted += n
        if counted > cap:
            return Count(cap, exact=False, capped=True)
        start += chunk
    return Count(counted)


def has_index(conn: Connection, column: str) -> bool:
    """Whether an index on `datasets` starts with `column` (so sorting by it is a range read)."""
    if column == "id":
        return True
    # The partial indexes of schema v1 are all `WHERE col IS NOT NULL`, which is exactly the
    # non-NULL segment a sort reads, so they count.
    if is_postgres(conn):
        return conn.execute(
            "SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND "
            "a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass('datasets') AND "
            "a.attname = ? LIMIT 1", (column,)).fetchone() is not None
    for idx in conn.execute("PRAGMA index_list(datasets)").fetchall():
        info = conn.execute(f"PRAGMA index_info({_quote(idx[1])})").fetchall()
        if info and info[0][2] == column:
            return True
    return False


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
