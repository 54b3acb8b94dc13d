"""Opening the mirror and its write transactions, on SQLite or PostgreSQL.

SQLite (a path): WAL mode, so readers never block the writer and the writer never blocks
readers; the schema version is `PRAGMA user_version`. PostgreSQL (a URL, xfleet/mirror/
postgres.py): MVCC gives the same to readers; writers take turns through one advisory lock
(`begin`), as SQLite's writers do through its write lock; the version is in `xfleet_schema`.
Either is migrated forward on open; docs/mirror.md documents every table and column.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xfleet.core.errors import MirrorError
from xfleet.mirror.backend import Connection, Cursor, DatabaseError, Location, PgUrl, location
from xfleet.mirror.schema import MIGRATIONS, SCHEMA_VERSION, split_sql


def connect(where: str | Location, *, readonly: bool = False) -> Connection:
    """Open the mirror. Read-write opens create and migrate it; read-only opens never write
    (and read a mirror on a read-only filesystem too). The engine's own errors (not a database,
    read-only, full disk, cannot connect...) become one clear MirrorError (`explain`)."""
    loc = location(where)
    if isinstance(loc, PgUrl):
        return _connect_pg(loc, readonly)
    return _connect_sqlite(loc, readonly)


def _connect_pg(url: PgUrl, readonly: bool) -> Connection:
    from xfleet.mirror import postgres  # lazy: psycopg loads only for PostgreSQL mirrors

    conn = postgres.connect(url, readonly=readonly)
    try:
        version = schema_version(conn)
        _check_version(conn, version, url, readonly)
        if not readonly and version == SCHEMA_VERSION:
            _ensure_functions(conn)  # a newer xfleet may bring a function the schema lacks
    except BaseException as exc:
        conn.close()
        if isinstance(exc, DatabaseError):
            raise explain(exc, url) from None
        raise
    return conn


def _ensure_functions(conn: Connection) -> None:
    """PostgreSQL: (re)create the SQL functions when the mirror's differ from this xfleet's
    (their digest is the comment on `glob_regex`; one catalog read when they match)."""
    from xfleet.mirror import postgres  # lazy: see _connect_pg

    got = conn.execute("SELECT obj_description(to_regprocedure('glob_regex(text)'), "
                       "'pg_proc')").fetchone()[0]
    if got == postgres.FUNCTIONS_DIGEST:
        return
    with transaction(conn, "the schema's functions"):
        assert isinstance(conn, postgres.PgConnection)
        conn.script(postgres.FUNCTIONS)
        if has_table(conn, "datasets"):
            conn.script(postgres.TRIGGERS)
        conn.script(f"COMMENT ON FUNCTION glob_regex(text) IS '{postgres.FUNCTIONS_DIGEST}'")


def _check_version(conn: Connection, version: int, where: Location, readonly: bool) -> None:
    if version > SCHEMA_VERSION:
        raise MirrorError(
            f"the mirror {where} has schema version {version}, newer than this xfleet "
            f"({SCHEMA_VERSION})",
            hint="upgrade xfleet, or point --mirror at another mirror",
        )
    if version < SCHEMA_VERSION:
        if readonly:
            raise MirrorError(
                f"the mirror {where} has schema version {version}; this xfleet needs "
                f"{SCHEMA_VERSION}",
                hint="run 'xfleet mirror migrate' (or any write command, e.g. 'xfleet sync') "
                "once to migrate it",
            )
        migrate(conn)


def schema_version(conn: Connection) -> int:
    """The mirror's schema version (0: empty)."""
    if not is_postgres(conn):
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    row = conn.execute("SELECT to_regclass('xfleet_schema') IS NOT NULL").fetchone()
    if not row[0]:
        return 0
    got = conn.execute("SELECT max(version) FROM xfleet_schema").fetchone()
    return int(got[0] or 0)


def is_postgres(conn: Connection) -> bool:
    return not isinstance(conn, sqlite3.Connection)


def inserted_id(cur: Cursor) -> int:
    """The id an `INSERT ... RETURNING id` made (both engines). The rows are read to the end:
    SQLite finishes the statement only then, and a COMMIT before that would fail."""
    return int(cur.fetchall()[0][0])


def has_table(conn: Connection, name: str) -> bool:
    """True when the mirror has table `name` (an older schema may not)."""
    if is_postgres(conn):
        return bool(conn.execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0])
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def _connect_sqlite(p: Path, readonly: bool) -> Connection:
    if readonly and not p.exists():
        raise MirrorError(
            f"the mirror {p} does not exist yet",
            hint="run 'xfleet sync' first (or 'xfleet demo' for the simulated fleet)",
        )
    try:
        if not readonly:
            p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MirrorError(f"cannot create the mirror's directory {p.parent}: "
                          f"{exc.strerror or exc}", where=str(p),
                          hint="point --mirror (or the inventory's 'mirror') at a writable "
                          "place") from None
    try:
        conn = _open(p, readonly)
    except sqlite3.Error as exc:
        if not readonly and (_read_only_fs(p) or not os.access(p.parent, os.W_OK)):
            exc = sqlite3.OperationalError(f"attempt to write a readonly database ({exc})")
        raise explain(exc, p) from None
    try:
        _check_version(conn, schema_version(conn), p, readonly)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise explain(exc, p) from None
        raise
    return conn


def _open(p: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        try:
            conn = _open_ro(p, immutable=False)
        except sqlite3.OperationalError as exc:
            # a WAL mirror on a read-only filesystem: SQLite cannot make its -shm file. Nothing
            # can write there either, so reading it as immutable is safe.
            if not _read_only_fs(p) or "unable to open" not in str(exc):
                raise
            conn = _open_ro(p, immutable=True)
    else:
        conn = sqlite3.connect(str(p), timeout=60.0, isolation_level=None,
                               check_same_thread=False)
        try:
            _wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
    conn.execute("PRAGMA cache_size = -65536")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.row_factory = sqlite3.Row
    return conn


def _open_ro(p: Path, *, immutable: bool) -> sqlite3.Connection:
    uri = f"{p.resolve().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA schema_version").fetchone()  # opens the file: errors surface here
    except BaseException:
        conn.close()
        raise
    return conn


def _read_only_fs(p: Path) -> bool:
    try:
        return bool(os.statvfs(p.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


# SQLite's errors about the mirror file: (words in SQLite's message, what, what to do)
_EXPLAINED: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("disk is full", "disk I/O error"),
     "the mirror could not be written: {text} (the step that failed wrote nothing)",
     "free space on the filesystem that holds the mirror (df -h), then run the command "
     "again: journaled operations resume where they stopped"),
    (("readonly", "read-only"),
     "the mirror is read-only here: this command writes to it",
     "run it where the mirror file and its directory are writable, or point --mirror at a "
     "writable copy; reading commands (ls, show, sql) work as is"),
    (("not a database", "malformed"),
     "not an xfleet mirror (SQLite: file is not a database)",
     "point --mirror (or the inventory's 'mirror') at the mirror file; a path that does not "
     "exist yet is created by 'xfleet sync'"),
    (("unable to open",),
     "cannot open the mirror (SQLite: unable to open database file)",
     "check that the file and its directory exist and are readable (and, for commands that "
     "write, writable)"),
    (("locked", "busy"),
     "the mirror stayed locked by another writer",
     "another xfleet process holds its write lock: find it with `ps -ef | grep xfleet`"),
)


# PostgreSQL's errors about the mirror, by SQLSTATE prefix: (what, what to do)
_EXPLAINED_PG: tuple[tuple[str, str, str], ...] = (
    ("53", "the PostgreSQL mirror could not be written: {text} (the step that failed wrote "
     "nothing)", "free space on the database server, then run the command again: journaled "
     "operations resume where they stopped"),
    ("25006", "the mirror is read-only here: this command writes to it",
     "use a role that may write (docs/team.md: operators write, dashboards read)"),
    ("42501", "the mirror's role may not do this: {text}",
     "use a role that may write (docs/team.md: operators write, dashboards read)"),
    ("08", "the connection to the PostgreSQL mirror failed: {text}",
     "check that the server is up; journaled operations resume where they stopped"),
    ("57P", "the PostgreSQL mirror's server stopped the statement: {text}",
     "check the server (restart, shutdown, failover) and run the command again"),
)


def explain(exc: BaseException, path: str | Location | None = None) -> MirrorError:
    """The engine's error about the mirror as one clear line: what, where, what to do."""
    text = str(exc)
    where = str(path) if path is not None else None
    if isinstance(exc, DatabaseError):
        for prefix, what, hint in _EXPLAINED_PG:
            if (exc.sqlstate or "").startswith(prefix):
                return MirrorError(what.format(text=text), where=where, hint=hint)
        return MirrorError(f"the mirror: {text}", where=where)
    for words, what, hint in _EXPLAINED:
        if any(w in text for w in words):
            return MirrorError(what.format(text=text), where=where, hint=hint)
    return MirrorError(f"the mirror: {text}", where=where)


def _wal(conn: sqlite3.Connection, patience: float = 60.0) -> None:
    """Switch to WAL. On a brand-new file another connection may be doing the same; the switch
    does not wait on the busy handler, so retry for a while."""
    deadline = time.monotonic() + patience
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# write transactions: short, and patient with each other
#
# Every writer takes the mirror's write lock with `begin` (or `transaction`) and holds it only
# while it writes, never while it waits on a node: a full sync spools its listing first and
# applies it in chunks of ROWS_PER_TRANSACTION (docs/sync.md states the bound). A writer that
# meets the lock held retries with backoff (tenacity), says on stderr what it waits for after
# a couple of seconds, and gives up after WRITE_PATIENCE with a clear error.

WRITE_PATIENCE = 600.0  # seconds a writer waits for the write lock before giving up
ROWS_PER_TRANSACTION = 10_000  # rows a bulk apply writes per transaction (0.3-0.7 s, benchmarks)
_TRY_MS = 250  # each try waits this long in SQLite's own busy handler
_BUSY_MS = 60_000  # busy_timeout of a connection outside `begin` (reads, autocommit writes)
_log = logging.getLogger("xfleet.mirror")


class _Busy(Exception):
    """PostgreSQL: another writer holds the mirror's advisory write lock."""


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, _Busy) or isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc))


def begin(conn: Connection, what: str, *, patience: float | None = None) -> None:
    """Take the mirror's write lock to record `what` (a few words, for the message a waiting
    writer prints: "waiting for the mirror's write lock to record WHAT"). SQLite: BEGIN
    IMMEDIATE. PostgreSQL: BEGIN and the transaction's advisory write lock (postgres.WRITE_LOCK),
    so writers on every machine take turns and each journal's read-check-write holds."""
    # lazy: tenacity (and the inspect module it loads) cost ~10 ms at start-up, and only
    # writers get here; `xfleet ls` and the other readers never do
    from tenacity import (  # lazy: see above
        RetryCallState,
        Retrying,
        retry_if_exception,
        stop_after_delay,
        wait_exponential,
        wait_random,
    )

    limit = WRITE_PATIENCE if patience is None else patience
    start = time.monotonic()
    told = [0.0]

    def say(state: RetryCallState) -> None:
        waited = time.monotonic() - start
        if waited >= 2.0 and (not told[0] or waited - told[0] >= 30.0):
            told[0] = waited
            _log.warning("xfleet: waiting for the mirror's write lock to record %s (another "
                         "process is writing; %.0fs so far)", what, waited)

    pg = is_postgres(conn)
    if pg:
        from xfleet.mirror import postgres  # lazy: see _connect_pg

        conn.execute("BEGIN")

        def take() -> None:
            got = conn.execute("SELECT pg_try_advisory_xact_lock(?)",
                               (postgres.WRITE_LOCK,)).fetchone()[0]
            if not got:
                raise _Busy()
    else:
        conn.execute(f"PRAGMA busy_timeout = {_TRY_MS}")

        def take() -> None:
            conn.execute("BEGIN IMMEDIATE")
    try:
        for attempt in Retrying(retry=retry_if_exception(_is_locked),
                                wait=wait_exponential(multiplier=0.02, max=0.5)
                                + wait_random(0, 0.05),
                                stop=stop_after_delay(limit), before_sleep=say, reraise=True):
            with attempt:
                take()
    except (sqlite3.OperationalError, _Busy) as exc:
        if pg:
            rollback(conn)
        if not _is_locked(exc):
            raise
        raise MirrorError(
            f"the mirror stayed locked for {time.monotonic() - start:.0f}s; could not record "
            f"{what}",
            hint="another xfleet process holds its write lock: find it with `ps -ef | grep "
            "xfleet` (on PostgreSQL: pg_locks, locktype 'advisory'); nothing was written for "
            "this step") from None
    except BaseException:
        if pg:
            rollback(conn)
        raise
    finally:
        if not pg:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
    if pg:
        conn.writing = what  # type: ignore[attr-defined]  # announced on COMMIT (NOTIFY)
    if told[0]:
        _log.warning("xfleet: got the mirror's write lock after %.1fs (recording %s)",
                     time.monotonic() - start, what)


def rollback(conn: Connection) -> None:
    """Roll back the open transaction, if the engine has not already (SQLite does on
    SQLITE_FULL and some I/O errors): never let a failing ROLLBACK hide the error that caused
    it."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error, DatabaseError):
            conn.execute("ROLLBACK")


@contextmanager
def transaction(conn: Connection, what: str, *,
                patience: float | None = None) -> Iterator[Connection]:
    """`with transaction(conn, "what"):` begin (patiently), COMMIT on success, roll back
    (without masking the error) on any exception."""
    begin(conn, what, patience=patience)
    try:
        yield conn
    except BaseException:
        rollback(conn)
        raise
    conn.execute("COMMIT")


def migrate(conn: Connection) -> None:
    """Apply the migrations newer than the mirror's version, each in its own transaction. The
    version is read inside the transaction: processes or threads (or, on PostgreSQL, machines)
    opening a new mirror at the same time apply each migration once."""
    pg = is_postgres(conn)
    if pg:
        from xfleet.mirror import postgres  # lazy: see _connect_pg

        with transaction(conn, "the schema's table"):
            conn.execute("CREATE TABLE IF NOT EXISTS xfleet_schema (version INTEGER PRIMARY "
                         "KEY, applied_at DOUBLE PRECISION NOT NULL)")
    for v in sorted(MIGRATIONS):
        begin(conn, f"schema migration {v}")
        if schema_version(conn) >= v:
            conn.execute("COMMIT")
            continue
        for stmt in split_sql(MIGRATIONS[v]):
            conn.execute(postgres.schema_sql(stmt) if pg else stmt)
        if pg:
            conn.execute("INSERT INTO xfleet_schema (version, applied_at) VALUES (?, ?)",
                         (v, time.time()))
        else:
            conn.execute(f"PRAGMA user_version = {v}")
        conn.execute("COMMIT")
    if pg:
        _ensure_functions(conn)  # the functions, and the triggers on the tables just made
