"""The SQLite mirror: every pool, zvol, filesystem, snapshot and clone of every node.

WAL mode, so readers never block the writer and the writer never blocks readers. The schema is
versioned (`PRAGMA user_version`) and migrated forward on open; docs/mirror.md documents every
table and column. Ingest uses the standard `sqlite3` module with `executemany` (the hot path).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from xfleet.core.errors import MirrorError
from xfleet.core.zfs import DATASET_COLUMNS, POOL_COLUMNS, PoolRecord
from xfleet.mirror import claims

# Columns of `datasets` filled from `zfs list`, in DATASET_COLUMNS order.
DATASET_TABLE_COLUMNS: tuple[str, ...] = (
    "node",
    "pool",
    *DATASET_COLUMNS,
    "tenant",
    "user_properties",
    "synced_at",
    "sync_run",
)

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        address TEXT,
        labels TEXT NOT NULL DEFAULT '{}',
        groups TEXT NOT NULL DEFAULT '[]',
        last_attempt REAL,
        last_success REAL,
        stale INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        datasets INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE pools (
        node TEXT NOT NULL,
        name TEXT NOT NULL,
        guid TEXT,
        size INTEGER,
        allocated INTEGER,
        free INTEGER,
        health TEXT,
        ashift INTEGER,
        fragmentation INTEGER,
        capacity INTEGER,
        dedupratio REAL,
        volumes INTEGER NOT NULL DEFAULT 0,
        filesystems INTEGER NOT NULL DEFAULT 0,
        snapshots INTEGER NOT NULL DEFAULT 0,
        bookmarks INTEGER NOT NULL DEFAULT 0,
        clones INTEGER NOT NULL DEFAULT 0,
        volsize INTEGER NOT NULL DEFAULT 0,
        logicalused INTEGER NOT NULL DEFAULT 0,
        used INTEGER NOT NULL DEFAULT 0,
        usedbyrefreservation INTEGER NOT NULL DEFAULT 0,
        synced_at REAL NOT NULL,
        PRIMARY KEY (node, name)
    );
    CREATE TABLE datasets (
        id INTEGER PRIMARY KEY,
        node TEXT NOT NULL,
        pool TEXT NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        guid TEXT,
        createtxg INTEGER,
        origin TEXT,
        creation INTEGER,
        volsize INTEGER,
        volblocksize INTEGER,
        used INTEGER,
        referenced INTEGER,
        logicalused INTEGER,
        logicalreferenced INTEGER,
        usedbysnapshots INTEGER,
        usedbyrefreservation INTEGER,
        refreservation INTEGER,
        written INTEGER,
        compression TEXT,
        compressratio REAL,
        refcompressratio REAL,
        tenant TEXT,
        user_properties TEXT,
        synced_at REAL NOT NULL,
        sync_run INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX datasets_node_name ON datasets (node, name);
    CREATE INDEX datasets_node_type_used ON datasets (node, type, used);
    CREATE INDEX datasets_used ON datasets (used);
    CREATE INDEX datasets_name ON datasets (name);
    CREATE INDEX datasets_origin ON datasets (origin) WHERE origin IS NOT NULL;
    CREATE INDEX datasets_tenant ON datasets (tenant) WHERE tenant IS NOT NULL;
    CREATE TABLE sync_runs (
        id INTEGER PRIMARY KEY,
        node TEXT NOT NULL,
        kind TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        status TEXT NOT NULL,
        datasets INTEGER,
        added INTEGER,
        removed INTEGER,
        commands INTEGER,
        error TEXT
    );
    CREATE INDEX sync_runs_node ON sync_runs (node, id);
    """,
    # v2: incremental sync. Per-node checkpoints of the change feed, per-pool txg and space
    # freshness, and what each run did.
    2: """
    ALTER TABLE nodes ADD COLUMN last_eid INTEGER;
    ALTER TABLE nodes ADD COLUMN last_eid_stamp TEXT;
    ALTER TABLE nodes ADD COLUMN last_change_at REAL;
    ALTER TABLE nodes ADD COLUMN last_full REAL;
    ALTER TABLE nodes ADD COLUMN last_incremental REAL;
    ALTER TABLE nodes ADD COLUMN last_reconcile REAL;
    ALTER TABLE nodes ADD COLUMN last_refresh REAL;
    ALTER TABLE nodes ADD COLUMN gaps INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nodes ADD COLUMN last_gap TEXT;
    ALTER TABLE nodes ADD COLUMN last_gap_at REAL;
    ALTER TABLE nodes ADD COLUMN watch_pid INTEGER;
    ALTER TABLE nodes ADD COLUMN watch_host TEXT;
    ALTER TABLE nodes ADD COLUMN watch_heartbeat REAL;
    ALTER TABLE nodes ADD COLUMN watch_state TEXT;
    ALTER TABLE pools ADD COLUMN load_guid TEXT;
    ALTER TABLE pools ADD COLUMN last_txg INTEGER;
    ALTER TABLE pools ADD COLUMN space_dirty_since REAL;
    ALTER TABLE pools ADD COLUMN refresh_allocated INTEGER;
    ALTER TABLE pools ADD COLUMN refresh_free INTEGER;
    ALTER TABLE sync_runs ADD COLUMN events INTEGER;
    ALTER TABLE sync_runs ADD COLUMN fetched INTEGER;
    ALTER TABLE sync_runs ADD COLUMN bytes INTEGER;
    ALTER TABLE sync_runs ADD COLUMN gap TEXT;
    CREATE INDEX datasets_node_synced ON datasets (node, pool, synced_at)
    """,
    # v3: volume moves, a durable state machine per move, and its log.
    3: """
    CREATE TABLE moves (
        id INTEGER PRIMARY KEY,
        volume TEXT NOT NULL,
        source_node TEXT NOT NULL,
        target_node TEXT NOT NULL,
        target_volume TEXT NOT NULL,
        state TEXT NOT NULL,
        step TEXT,
        snapshots TEXT NOT NULL DEFAULT '[]',
        received TEXT,
        send_flags TEXT,
        receive_properties TEXT NOT NULL DEFAULT '{}',
        verify TEXT NOT NULL DEFAULT 'sampled',
        verified TEXT,
        bytes_total INTEGER,
        bytes_done INTEGER NOT NULL DEFAULT 0,
        rounds INTEGER NOT NULL DEFAULT 0,
        retired_as TEXT,
        options TEXT NOT NULL DEFAULT '{}',
        pid INTEGER,
        host TEXT,
        heartbeat REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        error TEXT
    );
    CREATE INDEX moves_state ON moves (state);
    CREATE INDEX moves_volume ON moves (source_node, volume);
    CREATE TABLE move_log (
        move INTEGER NOT NULL,
        at REAL NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX move_log_move ON move_log (move, at)
    """,
    4: """
    CREATE TABLE compression_runs (
        id INTEGER PRIMARY KEY,
        policy TEXT,
        user TEXT,
        host TEXT,
        state TEXT NOT NULL,
        changes INTEGER NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        commands INTEGER NOT NULL DEFAULT 0,
        batch_size INTEGER NOT NULL DEFAULT 500,
        pid INTEGER,
        heartbeat REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        error TEXT
    );
    CREATE TABLE compression_changes (
        id INTEGER PRIMARY KEY,
        run INTEGER NOT NULL,
        node TEXT NOT NULL,
        name TEXT NOT NULL,
        old TEXT,
        new TEXT NOT NULL,
        rule TEXT,
        batch INTEGER,
        state TEXT NOT NULL DEFAULT 'pending',
        at REAL,
        error TEXT
    );
    CREATE INDEX compression_changes_run ON compression_changes (run, state, node, new);
    CREATE INDEX compression_changes_volume ON compression_changes (node, name);
    CREATE TABLE compression_estimates (
        node TEXT NOT NULL,
        name TEXT NOT NULL,
        algorithm TEXT NOT NULL,
        ratio REAL,
        ratio_low REAL,
        ratio_high REAL,
        zero_fraction REAL,
        blocks INTEGER NOT NULL,
        blocks_read INTEGER NOT NULL,
        blocks_total INTEGER NOT NULL,
        bytes_read INTEGER NOT NULL,
        volblocksize INTEGER NOT NULL,
        ashift INTEGER NOT NULL,
        ashift_assumed INTEGER NOT NULL DEFAULT 0,
        method TEXT NOT NULL DEFAULT 'sampled',
        estimated_at REAL NOT NULL,
        PRIMARY KEY (node, name, algorithm)
    );
    CREATE TABLE compression_daily (
        day TEXT NOT NULL,
        node TEXT NOT NULL,
        pool TEXT NOT NULL,
        volumes INTEGER NOT NULL,
        logicalused INTEGER NOT NULL,
        used INTEGER NOT NULL,
        usedbyrefreservation INTEGER NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (day, node, pool)
    )
    """,
    # v5: playbook runs journaled (runs, steps, per-item results) and an audit of lifecycle
    # commands (docs/mirror.md, "Playbooks and lifecycle operations").
    5: """
    CREATE TABLE play_runs (
        id INTEGER PRIMARY KEY,
        file TEXT NOT NULL,
        name TEXT,
        digest TEXT NOT NULL,
        vars TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL,
        step INTEGER,
        pid INTEGER,
        host TEXT,
        heartbeat REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        error TEXT
    );
    CREATE TABLE play_steps (
        run INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        kind TEXT NOT NULL,
        name TEXT,
        line INTEGER NOT NULL,
        state TEXT NOT NULL,
        items INTEGER NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0,
        commands INTEGER NOT NULL DEFAULT 0,
        result TEXT,
        started_at REAL,
        finished_at REAL,
        error TEXT,
        PRIMARY KEY (run, idx)
    );
    CREATE TABLE play_items (
        run INTEGER NOT NULL,
        step INTEGER NOT NULL,
        item TEXT NOT NULL,
        state TEXT NOT NULL,
        result TEXT,
        commands INTEGER NOT NULL DEFAULT 0,
        at REAL NOT NULL,
        error TEXT,
        PRIMARY KEY (run, step, item)
    );
    CREATE TABLE lifecycle_log (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        op TEXT NOT NULL,
        node TEXT NOT NULL,
        argv TEXT NOT NULL,
        ok INTEGER NOT NULL,
        error TEXT,
        source TEXT NOT NULL,
        via TEXT NOT NULL DEFAULT 'zfs'
    );
    CREATE INDEX lifecycle_log_at ON lifecycle_log (at)
    """,
    6: """
    ALTER TABLE moves ADD COLUMN control TEXT;
    ALTER TABLE moves ADD COLUMN rate REAL
    """,
    7: """
    CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL DEFAULT 'target',
        version TEXT NOT NULL,
        selection TEXT,
        options TEXT NOT NULL,
        packages TEXT NOT NULL,
        state TEXT NOT NULL,
        control TEXT,
        batch INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        pid INTEGER,
        host TEXT,
        heartbeat REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE TABLE rollout_nodes (
        rollout INTEGER NOT NULL,
        node TEXT NOT NULL,
        batch INTEGER NOT NULL,
        position INTEGER NOT NULL,
        from_version TEXT,
        state TEXT NOT NULL,
        step TEXT,
        exports INTEGER,
        exports_digest TEXT,
        started_at REAL,
        finished_at REAL,
        error TEXT,
        PRIMARY KEY (rollout, node)
    );
    CREATE TABLE rollout_log (
        rollout INTEGER NOT NULL,
        at REAL NOT NULL,
        node TEXT,
        state TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX rollout_log_rollout ON rollout_log (rollout, at)
    """,
    8: """
    ALTER TABLE lifecycle_log ADD COLUMN state TEXT NOT NULL DEFAULT 'done';
    UPDATE lifecycle_log SET state = 'failed' WHERE ok = 0;
    ALTER TABLE sync_runs ADD COLUMN pid INTEGER;
    ALTER TABLE sync_runs ADD COLUMN host TEXT
    """,
}


# The schema version is the newest migration: add a numbered entry to _MIGRATIONS to change it.
SCHEMA_VERSION = max(_MIGRATIONS)


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
    for v in sorted(_MIGRATIONS):
        begin(conn, f"schema migration {v}")
        if conn.execute("PRAGMA user_version").fetchone()[0] >= v:
            conn.execute("COMMIT")
            continue
        for stmt in _split_sql(_MIGRATIONS[v]):
            conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {v}")
        conn.execute("COMMIT")


def _split_sql(script: str) -> Iterator[str]:
    for stmt in script.split(";"):
        if stmt.strip():
            yield stmt


# ---------------------------------------------------------------------------------------------
# writing


def upsert_node(
    conn: sqlite3.Connection,
    name: str,
    kind: str,
    address: str | None,
    labels: dict[str, str],
    groups: Sequence[str],
) -> None:
    conn.execute(
        """INSERT INTO nodes (name, kind, address, labels, groups) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, address = excluded.address,
             labels = excluded.labels, groups = excluded.groups""",
        (name, kind, address, json.dumps(labels, sort_keys=True), json.dumps(list(groups))),
    )


def start_run(conn: sqlite3.Connection, node: str, kind: str = "full") -> int:
    """Record a sync run of `node` as `running` (by this process), after marking the node's
    runs that can no longer finish `interrupted`: those of a dead process on this host, and
    those of unknown process (older xfleet) that a later run outlived."""
    me_pid, me_host = os.getpid(), socket.gethostname()
    for r in conn.execute("SELECT id, pid, host, started_at FROM sync_runs WHERE node = ? AND "
                          "status = 'running'", (node,)).fetchall():
        if r["pid"] is None:
            later = conn.execute("SELECT 1 FROM sync_runs WHERE node = ? AND started_at > ? "
                                 "AND status <> 'running' LIMIT 1",
                                 (node, r["started_at"])).fetchone()
            dead = later is not None
        else:
            dead = (r["host"] == me_host and r["pid"] != me_pid
                    and not claims.alive(r["pid"], r["host"]))
        if dead:
            conn.execute("UPDATE sync_runs SET status = 'interrupted', finished_at = ?, "
                         "error = coalesce(error, 'the process running it ended before it "
                         "finished') WHERE id = ?", (time.time(), r["id"]))
    cur = conn.execute(
        "INSERT INTO sync_runs (node, kind, started_at, status, pid, host) "
        "VALUES (?, ?, ?, 'running', ?, ?)",
        (node, kind, time.time(), me_pid, me_host),
    )
    conn.execute("UPDATE nodes SET last_attempt = ? WHERE name = ?", (time.time(), node))
    assert cur.lastrowid is not None
    return cur.lastrowid


def fail_run(
    conn: sqlite3.Connection, run_id: int, node: str, error: str, commands: int | None = None
) -> None:
    """Record a failed sync: the node keeps its last-known rows and is marked stale."""
    now = time.time()
    conn.execute(
        "UPDATE sync_runs SET finished_at = ?, status = 'failed', error = ?, commands = ? "
        "WHERE id = ?",
        (now, error, commands, run_id),
    )
    conn.execute("UPDATE nodes SET stale = 1, last_error = ? WHERE name = ?", (error, node))


_UPSERT_SQL = (
    f"INSERT INTO datasets ({', '.join(DATASET_TABLE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in DATASET_TABLE_COLUMNS)}) "
    "ON CONFLICT (node, name) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in DATASET_TABLE_COLUMNS if c not in ("node", "name"))
    # never older over newer: a full sync applies a listing taken before another writer
    # (a lifecycle command's re-fetch, a watch) stored a fresher row
    + " WHERE excluded.synced_at >= datasets.synced_at"
)


def write_datasets(
    conn: sqlite3.Connection,
    rows: Iterable[Sequence[Any]],
    *,
    batch: int = 20000,
    on_batch: Any = None,
) -> int:
    """Upsert dataset rows (tuples in DATASET_TABLE_COLUMNS order) with executemany batches.

    Runs inside the caller's transaction. Returns the number of rows written.
    """
    total = 0
    buf: list[Sequence[Any]] = []
    for row in rows:
        buf.append(row)
        if len(buf) >= batch:
            conn.executemany(_UPSERT_SQL, buf)
            total += len(buf)
            buf.clear()
            if on_batch:
                on_batch(total)
    if buf:
        conn.executemany(_UPSERT_SQL, buf)
        total += len(buf)
        if on_batch:
            on_batch(total)
    return total


def write_datasets_chunked(
    conn: sqlite3.Connection,
    rows: Iterable[Sequence[Any]],
    *,
    what: str,
    lock: threading.Lock | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Upsert dataset rows in transactions of ROWS_PER_TRANSACTION rows each (taken with
    `begin`, and `lock` for the writers of one process): another writer waits for one chunk
    at most. Rows are read from `rows` one chunk at a time (never the whole listing in
    memory). Returns the number of rows written."""
    total = 0
    it = iter(rows)
    while chunk := list(itertools.islice(it, ROWS_PER_TRANSACTION)):
        with lock or contextlib.nullcontext(), transaction(conn, what):
            conn.executemany(_UPSERT_SQL, chunk)
        total += len(chunk)
        if on_batch:
            on_batch(total)
    return total


def delete_unlisted(conn: sqlite3.Connection, node: str, run_id: int, listed_at: float, *,
                    lock: threading.Lock | None = None) -> int:
    """After a full listing: delete the node's rows the listing did not have (another sync
    run's, older than the listing), ROWS_PER_TRANSACTION per transaction. A row another
    writer stored after the listing began is kept. Returns the rows deleted."""
    removed = 0
    while True:
        with lock or contextlib.nullcontext(), transaction(conn, f"the rows {node} no longer has"):
            n = conn.execute(
                "DELETE FROM datasets WHERE rowid IN (SELECT rowid FROM datasets WHERE node = ? "
                "AND sync_run <> ? AND synced_at < ? LIMIT ?)",
                (node, run_id, listed_at, ROWS_PER_TRANSACTION)).rowcount
        removed += n
        if n < ROWS_PER_TRANSACTION:
            return removed


def write_pools(conn: sqlite3.Connection, node: str, pools: Sequence[PoolRecord]) -> None:
    now = time.time()
    names = [p.name for p in pools]
    conn.execute(
        f"DELETE FROM pools WHERE node = ? AND name NOT IN ({', '.join('?' for _ in names)})",
        (node, *names),
    )
    cols = POOL_COLUMNS
    conn.executemany(
        f"INSERT INTO pools (node, {', '.join(cols)}, synced_at) "
        f"VALUES (?, {', '.join('?' for _ in cols)}, ?) "
        "ON CONFLICT (node, name) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in (*cols, "synced_at") if c != "name"),
        [(node, *(getattr(p, c) for c in cols), now) for p in pools],
    )


def finish_run(
    conn: sqlite3.Connection, run_id: int, node: str, *, written: int, commands: int,
    listed_at: float, removed: int = 0,
) -> tuple[int, int]:
    """Remove rows the node no longer has (those `delete_unlisted` left: none, unless a writer
    slipped one in since), record success. `removed`: rows deleted already. Returns (added,
    removed)."""
    removed += conn.execute(
        "DELETE FROM datasets WHERE node = ? AND sync_run <> ? AND synced_at < ?",
        (node, run_id, listed_at)).rowcount
    count = summarize_pools(conn, node)
    prev = conn.execute("SELECT datasets FROM nodes WHERE name = ?", (node,)).fetchone()
    previous = prev[0] if prev else 0
    added = max(0, count - (previous - removed))
    now = time.time()
    conn.execute(
        "UPDATE sync_runs SET finished_at = ?, status = 'ok', datasets = ?, added = ?, "
        "removed = ?, commands = ? WHERE id = ?",
        (now, written, added, removed, commands, run_id),
    )
    conn.execute(
        "UPDATE nodes SET last_success = ?, stale = 0, last_error = NULL, datasets = ? "
        "WHERE name = ?",
        (now, count, node),
    )
    return added, removed


def summarize_pools(conn: sqlite3.Connection, node: str) -> int:
    """Store per-pool counts and volume byte totals in `pools` (one pass over the node's rows,
    inside the sync's transaction), so `stats` and the dashboard never scan `datasets`.
    Returns the node's number of datasets."""
    total = 0
    conn.execute(
        "UPDATE pools SET volumes = 0, filesystems = 0, snapshots = 0, bookmarks = 0, "
        "clones = 0, volsize = 0, logicalused = 0, used = 0, usedbyrefreservation = 0 "
        "WHERE node = ?", (node,),
    )
    rows = conn.execute(
        """SELECT pool, count(*),
                  sum(type = 'volume'), sum(type = 'filesystem'), sum(type = 'snapshot'),
                  sum(type = 'bookmark'), sum(origin IS NOT NULL),
                  coalesce(sum(CASE WHEN type = 'volume' THEN volsize END), 0),
                  coalesce(sum(CASE WHEN type = 'volume' THEN logicalused END), 0),
                  coalesce(sum(CASE WHEN type = 'volume' THEN used END), 0),
                  coalesce(sum(CASE WHEN type = 'volume' THEN usedbyrefreservation END), 0)
           FROM datasets WHERE node = ? GROUP BY pool""",
        (node,),
    ).fetchall()
    for pool, n, *agg in rows:
        total += n
        conn.execute(
            "UPDATE pools SET volumes = ?, filesystems = ?, snapshots = ?, bookmarks = ?, "
            "clones = ?, volsize = ?, logicalused = ?, used = ?, usedbyrefreservation = ? "
            "WHERE node = ? AND name = ?",
            (*agg, node, pool),
        )
    return total


# ---------------------------------------------------------------------------------------------
# incremental sync: checkpoints, subtrees, per-run bookkeeping


# Successful incremental runs kept per node in `sync_runs` (older ones are pruned).
KEEP_RUNS = 1000


@dataclass
class PoolCheckpoint:
    name: str
    guid: str | None
    load_guid: str | None
    last_txg: int | None
    allocated: int | None
    free: int | None
    refresh_allocated: int | None
    refresh_free: int | None
    space_dirty_since: float | None


@dataclass
class Checkpoint:
    """Where a node's mirror stands in its change feed (None fields: not known yet)."""

    node: str
    eid: int | None
    stamp: str | None
    last_full: float | None
    pools: dict[str, PoolCheckpoint]
    last_refresh: float | None = None

    @property
    def usable(self) -> bool:
        """True when an incremental sync can start from here (a full sync recorded it)."""
        return self.eid is not None and self.last_full is not None


def checkpoint(conn: sqlite3.Connection, node: str) -> Checkpoint | None:
    row = conn.execute(
        "SELECT last_eid, last_eid_stamp, last_full, last_refresh FROM nodes WHERE name = ?",
        (node,)).fetchone()
    if row is None:
        return None
    pools = {
        r["name"]: PoolCheckpoint(
            r["name"], r["guid"], r["load_guid"], r["last_txg"], r["allocated"], r["free"],
            r["refresh_allocated"], r["refresh_free"], r["space_dirty_since"])
        for r in conn.execute(
            "SELECT name, guid, load_guid, last_txg, allocated, free, refresh_allocated, "
            "refresh_free, space_dirty_since FROM pools WHERE node = ?", (node,))
    }
    return Checkpoint(node, row["last_eid"], row["last_eid_stamp"], row["last_full"], pools,
                      row["last_refresh"])


def save_checkpoint(
    conn: sqlite3.Connection,
    node: str,
    *,
    eid: int | None,
    stamp: str | None,
    txgs: dict[str, int],
    load_guids: dict[str, str],
    full: bool = False,
    changed: bool = False,
) -> None:
    """Record the change-feed position the mirror now reflects (inside the writer's
    transaction, so rows and checkpoint move together)."""
    now = time.time()
    conn.execute(
        "UPDATE nodes SET last_eid = ?, last_eid_stamp = ?, "
        "last_change_at = CASE WHEN ? THEN ? ELSE last_change_at END, "
        "last_full = CASE WHEN ? THEN ? ELSE last_full END, "
        "last_incremental = CASE WHEN ? THEN last_incremental ELSE ? END WHERE name = ?",
        (eid, stamp, changed, now, full, now, full, now, node),
    )
    for pool, load_guid in load_guids.items():
        conn.execute("UPDATE pools SET load_guid = ? WHERE node = ? AND name = ?",
                     (load_guid, node, pool))
    for pool, txg in txgs.items():  # a full sync restarts the txg; later ones only advance it
        conn.execute(
            "UPDATE pools SET last_txg = CASE WHEN ? THEN ? ELSE max(coalesce(last_txg, 0), ?) "
            "END WHERE node = ? AND name = ?", (full, txg, txg, node, pool))


def record_gap(conn: sqlite3.Connection, node: str, reason: str) -> None:
    conn.execute(
        "UPDATE nodes SET gaps = gaps + 1, last_gap = ?, last_gap_at = ? WHERE name = ?",
        (reason, time.time(), node),
    )


def tree_ranges(root: str) -> list[tuple[str, str | None]]:
    """`root` and everything below it (children, snapshots, bookmarks) as ranges on `name`
    that the (node, name) index answers: '/' + 1 = '0', '@' + 1 = 'A', '#' + 1 = '$'."""
    return [(root, None), (root + "/", root + "0"), (root + "@", root + "A"),
            (root + "#", root + "$")]


def delete_trees(
    conn: sqlite3.Connection, node: str, roots: Iterable[str], keep_run: int | None = None,
    listed_at: float = math.inf,
) -> int:
    """Delete each root's row and its descendants' (only rows not written by `keep_run`,
    when given: what a fresh listing of that subtree, taken at `listed_at`, no longer
    returned; a row another writer stored after `listed_at` stays). One index range per
    statement: an OR of ranges would make SQLite scan the node."""
    keep = " AND sync_run <> ? AND synced_at < ?" if keep_run is not None else ""
    extra: tuple[Any, ...] = (keep_run, listed_at) if keep_run is not None else ()
    removed = 0
    for root in roots:
        for lo, hi in tree_ranges(root):
            if hi is None:
                removed += conn.execute(
                    f"DELETE FROM datasets WHERE node = ? AND name = ?{keep}",
                    (node, lo, *extra)).rowcount
            else:
                removed += conn.execute(
                    f"DELETE FROM datasets WHERE node = ? AND name >= ? AND name < ?{keep}",
                    (node, lo, hi, *extra)).rowcount
    return removed


def delete_pool_rows(conn: sqlite3.Connection, node: str, pools: Iterable[str]) -> int:
    removed = 0
    for pool in pools:
        removed += conn.execute(
            "DELETE FROM datasets WHERE node = ? AND pool = ?", (node, pool)).rowcount
    return removed


def clones_under(
    conn: sqlite3.Connection, node: str, roots: Iterable[str], run_id: int
) -> list[str]:
    """Clones whose origin is a snapshot of `roots` or of their descendants, not written by
    `run_id`: after a rename or a promote moved those snapshots, their `origin` is another
    name now (origin index ranges, never a scan of the node)."""
    out: list[str] = []
    for root in roots:
        ranges = [(root, None)] if "@" in root else tree_ranges(root)[1:3]
        for lo, hi in ranges:
            cond = "origin = ?" if hi is None else "origin >= ? AND origin < ?"
            out.extend(r[0] for r in conn.execute(
                f"SELECT name FROM datasets INDEXED BY datasets_origin WHERE origin IS NOT NULL "
                f"AND {cond} AND node = ? AND sync_run <> ?",
                (lo, *([hi] if hi is not None else []), node, run_id)))
    return sorted(set(out))


# Per-pool summaries kept current by an incremental sync without scanning the node: temporary
# triggers (on the writer's connection only, so a full sync's ingest does not pay for them) log
# each row's contribution, -old +new, and apply_pool_deltas adds them up.
_DELTA_COLS = ("datasets", "volumes", "filesystems", "snapshots", "bookmarks", "clones",
               "volsize", "logicalused", "used", "usedbyrefreservation")


def _contribution(row: str, sign: str) -> str:
    vol = f"{row}.type = 'volume'"
    return ", ".join([
        f"{row}.node", f"{row}.pool", f"{sign}1", f"{sign}({vol})",
        f"{sign}({row}.type = 'filesystem')", f"{sign}({row}.type = 'snapshot')",
        f"{sign}({row}.type = 'bookmark')", f"{sign}({row}.origin IS NOT NULL)",
        *(f"{sign}(CASE WHEN {vol} THEN coalesce({row}.{c}, 0) ELSE 0 END)"
          for c in ("volsize", "logicalused", "used", "usedbyrefreservation")),
    ])


def track_pool_deltas(conn: sqlite3.Connection) -> None:
    cols = ", ".join(f"{c} INTEGER" for c in _DELTA_COLS)
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS pool_delta (node TEXT, pool TEXT, {cols})")
    ins = "INSERT INTO pool_delta VALUES"  # a temp trigger may not qualify it; temp is found first
    conn.execute("CREATE TEMP TRIGGER IF NOT EXISTS datasets_ins AFTER INSERT ON main.datasets "
                 f"BEGIN {ins} ({_contribution('NEW', '+')}); END")
    conn.execute("CREATE TEMP TRIGGER IF NOT EXISTS datasets_del AFTER DELETE ON main.datasets "
                 f"BEGIN {ins} ({_contribution('OLD', '-')}); END")
    conn.execute("CREATE TEMP TRIGGER IF NOT EXISTS datasets_upd AFTER UPDATE ON main.datasets "
                 f"BEGIN {ins} ({_contribution('OLD', '-')}); "
                 f"{ins} ({_contribution('NEW', '+')}); END")


def apply_pool_deltas(conn: sqlite3.Connection, node: str) -> tuple[int, int]:
    """Add the logged row contributions to `pools` and `nodes.datasets`; returns (the node's
    dataset count, rows added). Inside the writer's transaction."""
    sums = ", ".join(f"sum({c})" for c in _DELTA_COLS)
    added = 0
    for pool, *d in conn.execute(f"SELECT pool, {sums} FROM temp.pool_delta WHERE node = ? "
                                 "GROUP BY pool", (node,)).fetchall():
        added += d[0]
        sets = ", ".join(f"{c} = {c} + ?" for c in _DELTA_COLS[1:])
        conn.execute(f"UPDATE pools SET {sets} WHERE node = ? AND name = ?",
                     (*d[1:], node, pool))
    conn.execute("DELETE FROM temp.pool_delta WHERE node = ?", (node,))
    count = conn.execute("SELECT coalesce(sum(volumes + filesystems + snapshots + bookmarks), 0)"
                         " FROM pools WHERE node = ?", (node,)).fetchone()[0]
    return count, added


def finish_incremental(
    conn: sqlite3.Connection,
    run_id: int,
    node: str,
    *,
    written: int,
    removed: int,
    commands: int,
    events: int,
    received: int,
    gap: str | None,
    recount: bool = False,
) -> tuple[int, int]:
    """Record a successful incremental run; bring the pool summaries up to date from the
    logged row changes (`recount`: from the node's rows, as a reconcile does, which repairs
    them whatever happened). Returns the node's dataset count and the number of new rows."""
    count, net = apply_pool_deltas(conn, node)
    if recount:
        prev = conn.execute("SELECT datasets FROM nodes WHERE name = ?", (node,)).fetchone()
        count = summarize_pools(conn, node)
        net = count - (prev[0] if prev else 0)
    added = max(0, net + removed)
    now = time.time()
    conn.execute(
        "UPDATE sync_runs SET finished_at = ?, status = 'ok', datasets = ?, fetched = ?, "
        "added = ?, removed = ?, commands = ?, events = ?, bytes = ?, gap = ? WHERE id = ?",
        (now, count, written, added, removed, commands, events, received, gap, run_id),
    )
    conn.execute(
        "UPDATE nodes SET last_success = ?, stale = 0, last_error = NULL, datasets = ? "
        "WHERE name = ?",
        (now, count, node),
    )
    # A watch writes a run per batch of events: keep the newest KEEP_RUNS successful
    # incremental runs per node (rows' `sync_run` may then name a pruned run).
    conn.execute(
        "DELETE FROM sync_runs WHERE node = ? AND kind = 'incremental' AND status = 'ok' "
        "AND id < (SELECT id FROM sync_runs WHERE node = ? AND kind = 'incremental' "
        "ORDER BY id DESC LIMIT 1 OFFSET ?)", (node, node, KEEP_RUNS))
    return count, added
