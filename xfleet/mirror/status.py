"""What a mirror is, cheaply: its engine, schema version, row counts, size, open jobs and the
last sync of every node (`xfleet mirror status`); and bringing a mirror to this xfleet's
schema (`xfleet mirror init`, `xfleet mirror migrate`).

`peek` opens a mirror of any version without migrating it (store.connect refuses an older one
read-only, and would migrate it read-write): status must show an old or a newer mirror as it
is. Counting is cheap on a mirror of millions of rows: `datasets` is the sum of the per-node
`nodes.datasets` figures the syncs keep (every other table is counted exactly), and each
figure says how it was obtained.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xfleet.core.errors import MirrorError
from xfleet.mirror import jobs
from xfleet.mirror.backend import Connection, Location, PgUrl, location
from xfleet.mirror.schema import MIGRATIONS, SCHEMA_VERSION
from xfleet.mirror.store import connect, explain, has_table, is_postgres, schema_version

# How a count was obtained (the `counted` of a TableCount).
EXACT = "exact"
NODE_SUMS = "sum of nodes.datasets"


def schema_tables() -> tuple[str, ...]:
    """Every table the schema creates, in the order its migrations create them."""
    found = re.findall(r"\bCREATE TABLE (\w+)", "\n".join(MIGRATIONS[v] for v in
                                                          sorted(MIGRATIONS)))
    return tuple(dict.fromkeys(found))


def engine(where: Location) -> str:
    """'sqlite' or 'postgresql'."""
    return "postgresql" if isinstance(where, PgUrl) else "sqlite"


@contextmanager
def peek(where: str | Location) -> Iterator[Connection | None]:
    """A read-only connection to the mirror at `where` whatever its schema version (None: no
    SQLite file there yet). Nothing is created or migrated."""
    loc = location(where)
    if isinstance(loc, PgUrl):
        from xfleet.mirror import postgres  # lazy: psycopg loads only for PostgreSQL mirrors

        conn: Connection = postgres.connect(loc, readonly=True)
    else:
        if not loc.exists():
            yield None
            return
        try:
            lite = sqlite3.connect(f"{loc.resolve().as_uri()}?mode=ro", uri=True,
                                   check_same_thread=False)
            lite.row_factory = sqlite3.Row
            lite.execute("PRAGMA query_only = ON")
            lite.execute("PRAGMA schema_version").fetchone()  # a non-database fails here
        except sqlite3.Error as exc:
            raise explain(exc, loc) from None
        conn = lite
    try:
        yield conn
    finally:
        conn.close()


def version_at(where: str | Location) -> int | None:
    """The schema version of the mirror at `where` (0: an empty database; None: no file)."""
    with peek(where) as conn:
        return None if conn is None else schema_version(conn)


@dataclass(frozen=True)
class Prepared:
    """What `prepare` did: the schema version before (None: nothing was there) and after."""

    location: str
    engine: str
    before: int | None
    after: int

    @property
    def created(self) -> bool:
        return not self.before

    @property
    def migrated(self) -> bool:
        return bool(self.before) and self.after != self.before

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location, "engine": self.engine, "before": self.before,
                "after": self.after, "created": self.created, "migrated": self.migrated}


def prepare(where: str | Location, *, create: bool) -> Prepared:
    """Bring the mirror at `where` to this xfleet's schema: create it (`create`: a missing
    SQLite file or an empty database; else that is refused), or migrate an older one. A newer
    mirror is refused; a current one is left as it is."""
    loc = location(where)
    before = version_at(loc)
    if before is not None and before > SCHEMA_VERSION:
        raise MirrorError(
            f"the mirror {loc} has schema version {before}, newer than this xfleet "
            f"({SCHEMA_VERSION}): it cannot be migrated back",
            hint="upgrade xfleet, or point --mirror at another mirror")
    if not create and not before:
        raise MirrorError(f"there is no mirror at {loc} to migrate",
                          hint="'xfleet mirror init' creates one (and 'xfleet sync' fills it)")
    conn = connect(loc)  # creates and migrates
    try:
        after = schema_version(conn)
    finally:
        conn.close()
    return Prepared(str(loc), engine(loc), before, after)


@dataclass(frozen=True)
class TableCount:
    table: str
    rows: int | None  # None: the table does not exist (an older schema)
    counted: str  # EXACT or NODE_SUMS


@dataclass
class Status:
    """What `xfleet mirror status` shows (docs/mirror.md, "Moving between engines")."""

    engine: str
    location: str
    schema_version: int
    xfleet_schema_version: int
    size_bytes: int | None
    tables: list[TableCount] = field(default_factory=list)
    open_jobs: dict[str, int] = field(default_factory=dict)
    nodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> str:
        """'current', 'older: run xfleet mirror migrate', 'newer than this xfleet', 'empty'."""
        if self.schema_version == self.xfleet_schema_version:
            return "current"
        if self.schema_version == 0:
            return "empty: run xfleet mirror init"
        if self.schema_version < self.xfleet_schema_version:
            return "older: run xfleet mirror migrate"
        return "newer than this xfleet: upgrade xfleet"

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["state"] = self.state
        return doc


def count_rows(conn: Connection, table: str) -> TableCount:
    """The rows of `table`, cheaply (see the module's docstring)."""
    if not has_table(conn, table):
        return TableCount(table, None, EXACT)
    if table == "datasets" and has_table(conn, "nodes"):
        n = conn.execute("SELECT coalesce(sum(datasets), 0) FROM nodes").fetchone()[0]
        return TableCount(table, int(n), NODE_SUMS)
    return TableCount(table, int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]),
                      EXACT)


def size_bytes(conn: Connection, where: Location) -> int | None:
    """The mirror's size on disk: the SQLite file with its WAL, or pg_database_size."""
    if is_postgres(conn):
        return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
    assert isinstance(where, Path)
    total = 0
    for p in (where, Path(f"{where}-wal")):
        try:
            total += os.stat(p).st_size
        except FileNotFoundError:
            continue
    return total


def open_jobs(conn: Connection, kinds: Iterable[jobs.JobKind]) -> dict[str, int]:
    """Jobs not finished (in one of their kind's open states), per job table."""
    out: dict[str, int] = {}
    for kind in sorted(kinds, key=lambda k: k.table):
        if not has_table(conn, kind.table):
            continue
        states = sorted(kind.open_states)
        marks = ", ".join("?" for _ in states)
        out[kind.table] = int(conn.execute(
            f"SELECT count(*) FROM {kind.table} WHERE state IN ({marks})", states).fetchone()[0])
    return out


def last_syncs(conn: Connection) -> list[dict[str, Any]]:
    """Per node: the last sync attempt and success, stale or not, and its datasets."""
    if not has_table(conn, "nodes"):
        return []
    return [dict(zip(("node", "last_attempt", "last_success", "stale", "datasets",
                      "last_error"), tuple(r), strict=True))
            for r in conn.execute("SELECT name, last_attempt, last_success, stale, datasets, "
                                  "last_error FROM nodes ORDER BY name")]


def gather(where: str | Location, kinds: Iterable[jobs.JobKind] | None = None) -> Status:
    """The status of the mirror at `where` (any schema version). `kinds`: the job kinds whose
    open jobs are counted (default: every kind registered, jobs.KINDS)."""
    loc = location(where)
    with peek(loc) as conn:
        if conn is None:
            raise MirrorError(f"the mirror {loc} does not exist yet",
                              hint="'xfleet mirror init' creates it, 'xfleet sync' fills it")
        status = Status(engine(loc), str(loc), schema_version(conn), SCHEMA_VERSION,
                        size_bytes(conn, loc))
        status.tables = [count_rows(conn, t) for t in schema_tables()]
        status.open_jobs = open_jobs(conn, jobs.KINDS.values() if kinds is None else kinds)
        status.nodes = last_syncs(conn)
    return status
