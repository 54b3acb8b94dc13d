"""Writing what a sync read into the mirror: nodes, runs, datasets, pools, checkpoints of the
change feed, and the per-pool totals (xfleet/ops/sync/ is the caller).

Bulk writes use each engine's fastest path. SQLite: `executemany` in transactions of
ROWS_PER_TRANSACTION rows, so other writers get the lock between them. PostgreSQL: the listing
streams with COPY into a session-local staging table (no lock held), then one short
transaction applies it. An incremental apply keeps the pool totals by deltas (a trigger logs
each written row's contribution: SQLite's temporary triggers, PostgreSQL's row trigger turned
on for the writer's session), never by scanning the node.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from xfleet.core.zfs import POOL_COLUMNS, PoolHealth, PoolRecord
from xfleet.mirror import claims
from xfleet.mirror.backend import Connection
from xfleet.mirror.schema import DATASET_TABLE_COLUMNS, DELTA_COLUMNS, delta_values
from xfleet.mirror.store import ROWS_PER_TRANSACTION, inserted_id, is_postgres, transaction


def upsert_node(
    conn: Connection,
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


def start_run(conn: Connection, node: str, kind: str = "full") -> int:
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
        "INSERT INTO sync_runs (node, kind, started_at, status, pid, host, operator) "
        "VALUES (?, ?, ?, 'running', ?, ?, ?) RETURNING id",
        (node, kind, time.time(), me_pid, me_host, claims.operator()),
    )
    conn.execute("UPDATE nodes SET last_attempt = ? WHERE name = ?", (time.time(), node))
    return inserted_id(cur)


def fail_run(
    conn: Connection, run_id: int, node: str, error: str, commands: int | None = None
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
    conn: Connection,
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
    conn: Connection,
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
    if is_postgres(conn):
        return _copy_datasets(conn, rows, what=what, lock=lock, on_batch=on_batch)
    total = 0
    it = iter(rows)
    while chunk := list(itertools.islice(it, ROWS_PER_TRANSACTION)):
        with lock or contextlib.nullcontext(), transaction(conn, what):
            conn.executemany(_UPSERT_SQL, chunk)
        total += len(chunk)
        if on_batch:
            on_batch(total)
    return total


_STAGING = "pg_temp.datasets_staging"


def _copy_datasets(conn: Connection, rows: Iterable[Sequence[Any]], *, what: str,
                   lock: threading.Lock | None,
                   on_batch: Callable[[int], None] | None) -> int:
    """PostgreSQL: COPY the rows into a staging table of this session (nobody waits while it
    streams), then upsert them into `datasets` in one transaction (never older over newer,
    as _UPSERT_SQL). Returns the number of rows written."""
    from xfleet.mirror.postgres import PgConnection  # lazy: psycopg only for PostgreSQL

    assert isinstance(conn, PgConnection)
    cols = ", ".join(DATASET_TABLE_COLUMNS)
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS datasets_staging AS SELECT {cols} "
                 "FROM datasets WITH NO DATA")
    conn.execute(f"TRUNCATE {_STAGING}")

    def counted() -> Iterator[Sequence[Any]]:
        for n, row in enumerate(rows, 1):
            yield row
            if on_batch and n % ROWS_PER_TRANSACTION == 0:
                on_batch(n)

    total = conn.copy_rows(_STAGING, DATASET_TABLE_COLUMNS, counted())
    updates = ", ".join(f"{c} = excluded.{c}" for c in DATASET_TABLE_COLUMNS
                        if c not in ("node", "name"))
    with lock or contextlib.nullcontext(), transaction(conn, what):
        conn.execute(f"INSERT INTO datasets ({cols}) SELECT {cols} FROM {_STAGING} "
                     f"ON CONFLICT (node, name) DO UPDATE SET {updates} "
                     "WHERE excluded.synced_at >= datasets.synced_at")
    conn.execute(f"TRUNCATE {_STAGING}")
    if on_batch:
        on_batch(total)
    return total


def delete_unlisted(conn: Connection, node: str, run_id: int, listed_at: float, *,
                    lock: threading.Lock | None = None) -> int:
    """After a full listing: delete the node's rows the listing did not have (another sync
    run's, older than the listing), ROWS_PER_TRANSACTION per transaction. A row another
    writer stored after the listing began is kept. Returns the rows deleted."""
    removed = 0
    while True:
        with lock or contextlib.nullcontext(), transaction(conn, f"the rows {node} no longer has"):
            n = conn.execute(
                "DELETE FROM datasets WHERE id IN (SELECT id FROM datasets WHERE node = ? "
                "AND sync_run <> ? AND synced_at < ? LIMIT ?)",
                (node, run_id, listed_at, ROWS_PER_TRANSACTION)).rowcount
        removed += n
        if n < ROWS_PER_TRANSACTION:
            return removed


def write_pools(conn: Connection, node: str, pools: Sequence[PoolRecord]) -> None:
    now = time.time()
    names = [p.name for p in pools]
    marks = ", ".join("?" for _ in names)
    conn.execute(f"DELETE FROM pools WHERE node = ? AND name NOT IN ({marks})", (node, *names))
    conn.execute(f"DELETE FROM vdevs WHERE node = ? AND pool NOT IN ({marks})", (node, *names))
    cols = POOL_COLUMNS
    conn.executemany(
        f"INSERT INTO pools (node, {', '.join(cols)}, synced_at) "
        f"VALUES (?, {', '.join('?' for _ in cols)}, ?) "
        "ON CONFLICT (node, name) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in (*cols, "synced_at") if c != "name"),
        [(node, *(getattr(p, c) for c in cols), now) for p in pools],
    )


# The pool health columns of `pools` (docs/mirror.md), in PoolHealth's field names but for
# health_at; `health` (zpool list's word for the pool's state) is written with them.
HEALTH_COLUMNS = ("status", "action", "scan_function", "scan_state", "scan_start", "scan_end",
                  "scan_errors", "read_errors", "write_errors", "checksum_errors", "data_errors")
VDEV_COLUMNS = ("position", "parent", "depth", "name", "vdev_type", "path", "state",
                "read_errors", "write_errors", "checksum_errors", "slow_ios")


def write_health(conn: Connection, node: str, health: Sequence[PoolHealth], at: float) -> int:
    """The pools' health as `zpool status` showed it at `at`, in the caller's transaction:
    the health columns of their `pools` rows (a pool without a row, one `zpool list` did not
    show, is left out) and their `vdevs` rows, replaced whole. Returns the pools written."""
    written = 0
    sets = ", ".join(f"{c} = ?" for c in HEALTH_COLUMNS)
    cols = ", ".join(VDEV_COLUMNS)
    for h in health:
        found = conn.execute(
            f"UPDATE pools SET health = ?, {sets}, health_at = ? WHERE node = ? AND name = ?",
            (h.state, *(getattr(h, c) for c in HEALTH_COLUMNS), at, node, h.name)).rowcount
        conn.execute("DELETE FROM vdevs WHERE node = ? AND pool = ?", (node, h.name))
        if not found:
            continue
        written += 1
        conn.executemany(
            f"INSERT INTO vdevs (node, pool, {cols}) "
            f"VALUES (?, ?, {', '.join('?' for _ in VDEV_COLUMNS)})",
            [(node, h.name, *(getattr(v, c) for c in VDEV_COLUMNS)) for v in h.vdevs])
    return written


def finish_run(
    conn: Connection, run_id: int, node: str, *, written: int, commands: int,
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


def summarize_pools(conn: Connection, node: str) -> int:
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
                  sum(CASE WHEN type = 'volume' THEN 1 ELSE 0 END),
                  sum(CASE WHEN type = 'filesystem' THEN 1 ELSE 0 END),
                  sum(CASE WHEN type = 'snapshot' THEN 1 ELSE 0 END),
                  sum(CASE WHEN type = 'bookmark' THEN 1 ELSE 0 END),
                  sum(CASE WHEN origin IS NOT NULL THEN 1 ELSE 0 END),
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


def checkpoint(conn: Connection, node: str) -> Checkpoint | None:
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
    conn: Connection,
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
            "UPDATE pools SET last_txg = CASE WHEN ? OR coalesce(last_txg, 0) < ? THEN ? "
            "ELSE last_txg END WHERE node = ? AND name = ?", (full, txg, txg, node, pool))


def record_gap(conn: Connection, node: str, reason: str) -> None:
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
    conn: Connection, node: str, roots: Iterable[str], keep_run: int | None = None,
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


def delete_pool_rows(conn: Connection, node: str, pools: Iterable[str]) -> int:
    removed = 0
    for pool in pools:
        removed += conn.execute(
            "DELETE FROM datasets WHERE node = ? AND pool = ?", (node, pool)).rowcount
    return removed


def clones_under(
    conn: Connection, node: str, roots: Iterable[str], run_id: int
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
_DELTA_COLS = DELTA_COLUMNS


def track_pool_deltas(conn: Connection) -> None:
    """Log every dataset row this connection writes from now on into the session's
    `pool_delta` table (apply_pool_deltas adds them up). SQLite: temporary triggers on this
    connection. PostgreSQL: the schema's trigger (postgres.TRIGGERS), on for this session."""
    cols = ", ".join(f"{c} BIGINT" for c in _DELTA_COLS)
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS pool_delta (node TEXT, pool TEXT, {cols})")
    if is_postgres(conn):
        conn.execute("SET xfleet.pool_deltas = 'on'")
        return
    ins = "INSERT INTO pool_delta VALUES"  # a temp trigger may not qualify it; temp is found first
    conn.execute("CREATE TEMP TRIGGER IF NOT EXISTS datasets_ins AFTER INSERT ON main.datasets "
                 f"BEGIN {ins} ({delta_values('NEW', '+')}); END")
    conn.execute("CREATE TEMP TRIGGER IF NOT EXISTS datasets_del AFTER DELETE ON main.datasets "
                 f"BEGIN {ins} ({delta_values('OLD', '-')}); END")
    conn.execute("CREATE TEMP TRIGGER IF NOT EXISTS datasets_upd AFTER UPDATE ON main.datasets "
                 f"BEGIN {ins} ({delta_values('OLD', '-')}); "
                 f"{ins} ({delta_values('NEW', '+')}); END")


def apply_pool_deltas(conn: Connection, node: str) -> tuple[int, int]:
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
    conn: Connection,
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
