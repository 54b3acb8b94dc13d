"""Copying a whole mirror to another location: SQLite to PostgreSQL and back
(`xfleet mirror copy --to PATH|URL`; docs/mirror.md, "Moving between engines").

Every table of the schema is copied (datasets, pools, nodes, sync runs, every journal and log),
ids included, from one consistent snapshot of the source (a read transaction: SQLite's WAL
snapshot, PostgreSQL's REPEATABLE READ), in batches of BATCH rows, so no table is ever whole in
memory:
- reading: SQLite steps one statement with `fetchmany`; PostgreSQL FETCHes from a server-side
  cursor (DECLARE ... NO SCROLL CURSOR);
- writing: PostgreSQL streams each table with COPY (`PgConnection.copy_rows`) in one
  transaction per table, then moves each identity sequence past the copied ids
  (`setval(pg_get_serial_sequence(...), max(id))`) so later inserts do not collide; SQLite
  inserts with `executemany`, one write transaction per batch.
Rows are read in key order (the primary key, else the insertion order: `rowid`, which is
`ctid` on PostgreSQL), so logs keep their order. The target must be empty (`replace` empties
it first, after `confirm_replace` agreed); the copy ends by counting every table on both sides.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xfleet.core.errors import MirrorError
from xfleet.mirror.backend import Connection, Location, location
from xfleet.mirror.schema import SCHEMA_VERSION
from xfleet.mirror.status import engine, peek, schema_tables
from xfleet.mirror.store import (
    begin,
    connect,
    has_table,
    is_postgres,
    rollback,
    schema_version,
    transaction,
)

BATCH = 10_000  # rows read per fetch and, on SQLite, written per transaction
_CURSOR = "xfleet_copy"  # the server-side cursor reading a PostgreSQL source

# (table, rows copied so far, rows the table has): called after every batch
Progress = Callable[[str, int, int], None]
# called with the target's non-empty tables ({table: rows}) before `replace` empties them;
# raises to refuse
ConfirmReplace = Callable[[dict[str, int]], None]


@dataclass(frozen=True)
class TableCopy:
    """One table's copy: rows in the source's snapshot, rows written, rows in the target."""

    table: str
    source_rows: int
    copied: int
    target_rows: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.source_rows == self.copied == self.target_rows


@dataclass
class CopyReport:
    source: str
    source_engine: str
    target: str
    target_engine: str
    schema_version: int
    replaced: dict[str, int] = field(default_factory=dict)  # rows the target had (replace)
    tables: list[TableCopy] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.copied for t in self.tables)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "source": self.source, "source_engine": self.source_engine,
            "target": self.target, "target_engine": self.target_engine,
            "schema_version": self.schema_version, "rows": self.rows,
            "seconds": round(self.seconds, 3), "replaced": self.replaced,
            "tables": [{"table": t.table, "source_rows": t.source_rows, "copied": t.copied,
                        "target_rows": t.target_rows, "ok": t.ok,
                        "seconds": round(t.seconds, 3)} for t in self.tables],
        }


def nonempty_tables(conn: Connection, tables: Sequence[str]) -> dict[str, int]:
    """The tables among `tables` that have rows, with their counts."""
    out: dict[str, int] = {}
    for t in tables:
        if has_table(conn, t) and conn.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone():
            out[t] = count(conn, t)
    return out


def count(conn: Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def copy_mirror(source: str | Location, target: str | Location, *, replace: bool = False,
                confirm_replace: ConfirmReplace | None = None,
                progress: Progress | None = None, batch: int = BATCH) -> CopyReport:
    """Copy every table of the mirror at `source` to `target` (created with the current
    schema when new) and verify the row counts. Refused when the target has rows, unless
    `replace` (then `confirm_replace`, if given, is asked first)."""
    src_loc, dst_loc = location(source), location(target)
    start = time.monotonic()
    src = connect(src_loc, readonly=True)
    try:
        # refusals before anything is written: opening the target to write would migrate it
        with peek(dst_loc) as probe:
            if probe is not None and _identity(src, src_loc) == _identity(probe, dst_loc):
                raise _same(dst_loc)
            present = {} if probe is None else nonempty_tables(probe, schema_tables())
        if present and not replace:
            raise _not_empty(dst_loc, present)
        dst = connect(dst_loc)
        try:
            if _identity(src, src_loc) == _identity(dst, dst_loc):
                raise _same(dst_loc)
            version = schema_version(dst)
            if schema_version(src) != version or version != SCHEMA_VERSION:
                raise MirrorError(  # connect() migrated both or refused them: a safeguard
                    f"schema versions differ: source {schema_version(src)}, target {version}",
                    hint="run 'xfleet mirror migrate' on both")
            report = CopyReport(str(src_loc), engine(src_loc), str(dst_loc), engine(dst_loc),
                                version)
            tables = schema_tables()
            present = nonempty_tables(dst, tables)
            if present:
                if not replace:  # rows written since the check above
                    raise _not_empty(dst_loc, present)
                if confirm_replace is not None:
                    confirm_replace(present)
                _empty(dst, tables)
                report.replaced = present
            _copy_tables(src, dst, tables, report, progress, batch)
        finally:
            dst.close()
    finally:
        src.close()
    report.seconds = time.monotonic() - start
    if not report.ok:
        bad = "; ".join(f"{t.table}: {t.source_rows} in the source, {t.copied} copied, "
                        f"{t.target_rows} in the target" for t in report.tables if not t.ok)
        raise MirrorError(f"the copy to {dst_loc} does not match its source: {bad}",
                          hint="run the copy again with --replace --yes")
    return report


def _same(where: Location) -> MirrorError:
    return MirrorError(f"the source and the target are the same mirror ({where})",
                       hint="name another file or database with --to")


def _not_empty(where: Location, present: dict[str, int]) -> MirrorError:
    rows = ", ".join(f"{t} ({n:,})" for t, n in present.items())
    return MirrorError(
        f"the target {where} is not empty: {rows}",
        hint="copy to a new file or an empty database ('xfleet mirror init' makes one), or "
        "pass --replace --yes to delete the target's rows first")


def _identity(conn: Connection, where: Location) -> tuple[Any, ...]:
    """What tells two mirrors apart (the same file by two paths, the same database by two
    URLs)."""
    if is_postgres(conn):
        row = conn.execute("SELECT current_database(), pg_postmaster_start_time(), "
                           "inet_server_port(), (SELECT oid FROM pg_database WHERE datname = "
                           "current_database())").fetchone()
        return ("postgresql", *tuple(row))
    assert isinstance(where, Path)
    st = os.stat(where)
    return ("sqlite", st.st_dev, st.st_ino)


def _empty(dst: Connection, tables: Sequence[str]) -> None:
    """Delete every row of the target's tables (one transaction; identities restart)."""
    present = [t for t in tables if has_table(dst, t)]
    with transaction(dst, "the replaced mirror's deletion"):
        if is_postgres(dst):
            dst.execute(f"TRUNCATE {', '.join(present)} RESTART IDENTITY")
        else:
            for t in present:
                dst.execute(f"DELETE FROM {t}")


def _copy_tables(src: Connection, dst: Connection, tables: Sequence[str], report: CopyReport,
                 progress: Progress | None, batch: int) -> None:
    pg_source = is_postgres(src)
    src.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if pg_source else "BEGIN")
    try:
        for table in tables:
            if not has_table(src, table):
                continue
            t0 = time.monotonic()
            total = count(src, table)
            columns = _columns(src, table)
            done = [0]

            def batches(table: str = table, columns: Sequence[str] = columns,
                        total: int = total, done: list[int] = done) -> Iterator[list[Any]]:
                for rows in _read(src, table, columns, batch):
                    yield rows
                    done[0] += len(rows)
                    if progress is not None:
                        progress(table, done[0], total)

            if is_postgres(dst):
                _write_pg(dst, table, columns, batches())
            else:
                _write_sqlite(dst, table, columns, batches())
            report.tables.append(TableCopy(table, total, done[0], count(dst, table),
                                           time.monotonic() - t0))
    finally:
        rollback(src)


def _columns(conn: Connection, table: str) -> list[str]:
    cur = conn.execute(f"SELECT * FROM {table} LIMIT 0")
    return [d[0] for d in cur.description]


def _order(conn: Connection, table: str) -> str:
    """The table's primary key columns (else `rowid`: the insertion order; ctid on PG)."""
    if is_postgres(conn):
        rows = conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(?) AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)", (table,)).fetchall()
    else:
        rows = conn.execute("SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk",
                            (table,)).fetchall()
    return ", ".join(r[0] for r in rows) or "rowid"


def _read(src: Connection, table: str, columns: Sequence[str],
          batch: int) -> Iterator[list[Any]]:
    """The table's rows, `batch` at a time, in key order."""
    select = f"SELECT {', '.join(columns)} FROM {table} ORDER BY {_order(src, table)}"
    if not is_postgres(src):
        cur = src.execute(select)
        while rows := cur.fetchmany(batch):
            yield [tuple(r) for r in rows]
        return
    src.execute(f"DECLARE {_CURSOR} NO SCROLL CURSOR FOR {select}")
    try:
        while rows := src.execute(f"FETCH FORWARD {int(batch)} FROM {_CURSOR}").fetchall():
            yield [tuple(r) for r in rows]
    finally:
        src.execute(f"CLOSE {_CURSOR}")


def _write_sqlite(dst: Connection, table: str, columns: Sequence[str],
                  batches: Iterator[list[Any]]) -> None:
    insert = (f"INSERT INTO {table} ({', '.join(columns)}) "
              f"VALUES ({', '.join('?' for _ in columns)})")
    for rows in batches:
        begin(dst, f"the copy of {table}")
        try:
            dst.executemany(insert, rows)
        except BaseException:
            rollback(dst)
            raise
        dst.execute("COMMIT")


def _write_pg(dst: Connection, table: str, columns: Sequence[str],
              batches: Iterator[list[Any]]) -> None:
    from xfleet.mirror import postgres  # lazy: psycopg loads only for PostgreSQL mirrors

    assert isinstance(dst, postgres.PgConnection)
    with transaction(dst, f"the copy of {table}"):
        dst.copy_rows(table, columns, (row for rows in batches for row in rows))
        if "id" in columns:
            seq = dst.execute("SELECT pg_get_serial_sequence(?, 'id')", (table,)).fetchone()[0]
            if seq is not None:
                dst.execute(f"SELECT setval(?::regclass, max(id)) FROM {table} "
                            "HAVING max(id) IS NOT NULL", (seq,))

