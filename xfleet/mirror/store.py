"""The SQLite mirror: every pool, zvol, filesystem, snapshot and clone of every node.

WAL mode, so readers never block the writer and the writer never blocks readers. The schema is
versioned (`PRAGMA user_version`) and migrated forward on open; docs/mirror.md documents every
table and column. Ingest uses the standard `sqlite3` module with `executemany` (the hot path).
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
from xfleet.mirror.schema import MIGRATIONS, SCHEMA_VERSION, split_sql


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the mirror. Read-write opens create and migrate it; read-only opens never write
    (and read a mirror on a read-only filesystem too). SQLite's own errors (not a database,
    read-only, full disk...) become one clear MirrorError (`explain`)."""
    p = Path(path)
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
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise MirrorError(
                f"the mirror {p} has schema version {version}, newer than this xfleet "
                f"({SCHEMA_VERSION})",
                hint="upgrade xfleet, or point --mirror at another file",
            )
        if version < SCHEMA_VERSION:
            if readonly:
                raise MirrorError(
                    f"the mirror {p} has schema version {version}; this xfleet needs "
                    f"{SCHEMA_VERSION}",
                    hint="run any write command once (e.g. 'xfleet sync') to migrate it",
                )
            migrate(conn)
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


def explain(exc: sqlite3.Error, path: str | Path | None = None) -> MirrorError:
    """SQLite's error about the mirror as one clear line: what, where, what to do."""
    text = str(exc)
    where = str(path) if path is not None else None
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


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc))


def begin(conn: sqlite3.Connection, what: str, *, patience: float | None = None) -> None:
    """BEGIN IMMEDIATE: take the mirror's write lock to record `what` (a few words, for the
    message a waiting writer prints: "waiting for the mirror's write lock to record WHAT")."""
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

    conn.execute(f"PRAGMA busy_timeout = {_TRY_MS}")
    try:
        for attempt in Retrying(retry=retry_if_exception(_is_locked),
                                wait=wait_exponential(multiplier=0.02, max=0.5)
                                + wait_random(0, 0.05),
                                stop=stop_after_delay(limit), before_sleep=say, reraise=True):
            with attempt:
                conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if not _is_locked(exc):
            raise
        raise MirrorError(
            f"the mirror stayed locked for {time.monotonic() - start:.0f}s; could not record "
            f"{what}",
            hint="another xfleet process holds its write lock: find it with `ps -ef | grep "
            "xfleet`; nothing was written for this step") from None
    finally:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
    if told[0]:
        _log.warning("xfleet: got the mirror's write lock after %.1fs (recording %s)",
                     time.monotonic() - start, what)


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already (it does on SQLITE_FULL and
    some I/O errors): never let a failing ROLLBACK hide the error that caused it."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


@contextmanager
def transaction(conn: sqlite3.Connection, what: str, *,
                patience: float | None = None) -> Iterator[sqlite3.Connection]:
    """`with transaction(conn, "what"):` begin (patiently), COMMIT on success, roll back
    (without masking the error) on any exception."""
    begin(conn, what, patience=patience)
    try:
        yield conn
    except BaseException:
        rollback(conn)
        raise
    conn.execute("COMMIT")


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations newer than the file's version, each in its own transaction. The
    version is read inside the transaction: processes or threads opening a new mirror at the
    same time apply each migration once."""
    for v in sorted(MIGRATIONS):
        begin(conn, f"schema migration {v}")
        if conn.execute("PRAGMA user_version").fetchone()[0] >= v:
            conn.execute("COMMIT")
            continue
        for stmt in split_sql(MIGRATIONS[v]):
            conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {v}")
        conn.execute("COMMIT")
