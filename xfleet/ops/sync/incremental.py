"""A node's incremental sync: the change feed (`zpool events`, `zpool history`) since the
checkpoint, re-fetching exactly what changed; reconcile and the space refresh."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO

from xfleet import mirror
from xfleet.core.errors import RemoteCommandError, XfleetError
from xfleet.core.events import (
    UNREADABLE,
    Plan,
    Touch,
    ZEvent,
    event_touches,
    parse_history,
    plan,
    touches,
    unreadable_after,
    zpool_history,
)
from xfleet.core.names import validate_dataset
from xfleet.core.zfs import (
    EFFECTIVE_SOURCES,
    FAST_COLUMNS,
    ParseError,
    PoolRecord,
    UserPropertyValue,
    health_event,
    zfs_list,
)
from xfleet.fleet.inventory import Inventory
from xfleet.mirror.backend import Connection, Location
from xfleet.ops.sync.full import (
    FETCH_BATCH,
    MISSING,
    Job,
    NodeSync,
    dataset_rows,
    get_values,
    read_health,
    resume_values,
    spool_file,
    write_health,
)
from xfleet.remote.transport import Transport

# A reconcile that finds more changed names than this lists the pool whole instead.
RECONCILE_TREE_THRESHOLD = 5000


def new_events(cp_eid: int | None, cp_stamp: str | None,
               events: list[ZEvent]) -> tuple[list[ZEvent], str | None]:
    """The events after the checkpoint, and why the queue cannot vouch for every change since
    the checkpoint (None when it can): ids restarted (reboot, module reload), or lost from the
    front of the queue (overflow of its ~512 events, or `zpool events -c`), or an event after
    the checkpoint that could not be read whole, or ids out of order (events.UNREADABLE: a
    property value whose line breaks imitate the event format)."""
    last = cp_eid or 0
    unreadable = unreadable_after(events, last)
    events = [e for e in events if e.eid != UNREADABLE]
    fresh, gap = _new_events(last, cp_stamp, events)
    if gap is None and unreadable:
        where = f" (on {unreadable[0].dsname})" if unreadable[0].dsname else ""
        gap = f"an event after event {last} could not be read whole{where}: a property value " \
            "with line breaks that imitate the event format"
    if gap is None and any(b.eid <= a.eid for a, b in itertools.pairwise(fresh)):
        gap = "event ids out of order: a property value with line breaks that imitate the " \
            "event format"
    return fresh, gap


def _new_events(last: int, cp_stamp: str | None,
                events: list[ZEvent]) -> tuple[list[ZEvent], str | None]:
    if not events:
        return [], ("the event queue is empty (cleared, or the node restarted)"
                    if last > 0 else None)
    same = [e for e in events if e.eid == last]
    if same and cp_stamp is not None and same[0].stamp != cp_stamp:
        return events, f"event ids restarted (event {last} is another event now: reboot or " \
            "module reload)"
    if events[-1].eid < last:
        return events, f"event ids restarted (newest is {events[-1].eid}, checkpoint {last}: " \
            "reboot or module reload)"
    fresh = [e for e in events if e.eid > last]
    if fresh and fresh[0].eid > last + 1 and not same:
        return fresh, f"events {last + 1}..{fresh[0].eid - 1} were lost from the queue " \
            "(overflow or `zpool events -c`)"
    return fresh, None


@dataclass
class _Fetch:
    """Rows fetched again, spooled to disk; what was asked for and not found."""

    spool: IO[str]
    lines: int = 0
    missing: list[str] = field(default_factory=list)
    trees: list[str] = field(default_factory=list)
    # user property values of the fetched datasets, as ZFS resolves them (inherited too)
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    # when the fetch began: its rows are as of then (a row another writer stored later is
    # newer and is not overwritten; mirror._UPSERT_SQL)
    at: float = field(default_factory=time.time)


def _fetch(job: Job, p: Plan, spool: IO[str]) -> _Fetch:
    """`zfs list -Hp -t all -o COLUMNS [-r] NAME...`, one command per batch of names: the
    commands grow with the number of changed names, never with the node's size."""
    out = _Fetch(spool, trees=list(p.trees))

    def add(rec: UserPropertyValue) -> None:
        out.values.setdefault(rec.name, {})[rec.property] = rec.value

    for recursive, names in ((False, p.exact), (True, p.trees)):
        for i in range(0, len(names), FETCH_BATCH):
            batch = names[i:i + FETCH_BATCH]
            argv = zfs_list(batch) if recursive else zfs_list(names=batch)
            res = job.transport.stream(argv)
            seen: list[str] = []
            for line in res:
                if line:
                    spool.write(line + "\n")
                    seen.append(line.split("\t", 1)[0])
                    out.lines += 1
            if res.exit_status != 0:
                other = [ln for ln in res.stderr.splitlines()
                         if ln.strip() and not MISSING.match(ln)]
                if other or res.exit_status != 1:
                    raise RemoteCommandError(job.node, argv, res.exit_status, res.stderr)
            found = set(seen)
            out.missing.extend(n for n in batch if n not in found)
            # then the user properties of what was found (one `zfs get -j` per batch)
            ask = [n for n in batch if n in found and "#" not in n]
            if ask:
                cut = get_values(job, ask, EFFECTIVE_SOURCES, add, recursive=recursive)
                resume_values(job, cut, seen.__iter__,
                               EFFECTIVE_SOURCES, add)
    spool.seek(0)
    return out


def _valid(names: Iterable[str]) -> list[str]:
    ok = []
    for n in names:
        try:
            ok.append(validate_dataset(n, allow_bookmark=True))
        except XfleetError:
            continue  # not a name we can ask about; a reconcile would find it
    return ok


def _history_touches(job: Job, pool: str, since: int) -> tuple[list[Touch], int] | None:
    """Changes recorded in the pool's history at or after txg `since`, and the newest txg;
    None when the history may no longer reach back that far. OpenZFS keeps the pool's
    creation records and a bounded tail whose oldest records it drops: the history vouches for
    everything since `since` only if `since` is within the creation records or the tail still
    holds a record at or before it (the checkpoint's own record, normally)."""
    out: list[Touch] = []
    covered = False
    newest = since
    last = None
    for rec in parse_history(job.transport.lines(zpool_history(pool)), pool):
        if rec.txg <= since and (rec.tail or since == rec.txg):
            covered = True
        if rec.txg >= since:
            out.extend(touches(rec.op, rec.dsname, rec.detail))
            newest = max(newest, rec.txg)
        last = rec.txg
    if last is not None and last < since:
        # a checkpoint later than every record: a txg that a property value made up (text
        # imitating a record) was taken for real; the history cannot vouch from there
        return None
    return (out, newest) if covered else None


def _reconcile(
    job: Job, conn: Connection, pools: list[str]
) -> tuple[list[str], list[str], list[str]]:
    """The structural check: a listing of the fast-path columns only (name, guid, createtxg,
    origin: no per-dataset property or space gathering in the kernel), diffed with the mirror
    in SQL. Returns (names to fetch, pools to list whole, names gone)."""
    node = job.node
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS fast (name TEXT PRIMARY KEY, guid TEXT, "
                 "createtxg INTEGER, origin TEXT)")
    conn.execute("DELETE FROM temp.fast")
    argv = zfs_list(pools, columns=FAST_COLUMNS)
    # (an upsert both engines spell alike: a name listed twice keeps its last line)
    insert = ("INSERT INTO temp.fast VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
              "guid = excluded.guid, createtxg = excluded.createtxg, origin = excluded.origin")
    buf: list[tuple[str, ...]] = []
    for line in job.transport.lines(argv):
        parts = line.split("\t")
        if len(parts) != len(FAST_COLUMNS):
            if not line.strip():
                continue
            raise ParseError(f"unexpected fast listing line: {line[:120]!r}")
        buf.append(tuple(None if p == "-" else p for p in parts))  # type: ignore[misc]
        if len(buf) >= 20000:
            conn.executemany(insert, buf)
            buf.clear()
    conn.executemany(insert, buf)
    marks = ", ".join("?" for _ in pools)
    changed = [r[0] for r in conn.execute(
        "SELECT f.name FROM temp.fast f LEFT JOIN datasets d ON d.node = ? AND d.name = f.name "
        "WHERE d.name IS NULL OR d.guid IS DISTINCT FROM f.guid OR d.origin IS DISTINCT FROM "
        "f.origin OR d.createtxg IS DISTINCT FROM CAST(f.createtxg AS INTEGER)", (node,))]
    gone = [r[0] for r in conn.execute(
        f"SELECT d.name FROM datasets d WHERE d.node = ? AND d.pool IN ({marks}) "
        "AND NOT EXISTS (SELECT 1 FROM temp.fast f WHERE f.name = d.name)", (node, *pools))]
    conn.execute("DELETE FROM temp.fast")
    if len(changed) > RECONCILE_TREE_THRESHOLD:
        return [], list(pools), gone
    return changed, [], gone


def _due_for_refresh(
    conn: Connection, node: str, pools: list[PoolRecord], cp: mirror.Checkpoint,
    now: float, budget: int,
) -> tuple[list[str], dict[str, float]]:
    """Space freshness. A pool whose allocated/free figures moved since its last refresh has
    rows whose space figures may be stale: they are due, stalest first, `budget` per sync. A
    pool that did not move costs nothing. Returns (names, pool -> dirty since)."""
    dirty: dict[str, float] = {}
    names: list[str] = []
    for p in pools:
        old = cp.pools.get(p.name)
        since = old.space_dirty_since if old else None
        if old is None or (p.allocated, p.free) != (old.refresh_allocated, old.refresh_free):
            since = now
        if since is None:
            continue
        dirty[p.name] = since
        room = budget - len(names)
        if room > 0:
            names.extend(r[0] for r in conn.execute(
                "SELECT name FROM datasets WHERE node = ? AND pool = ? AND synced_at < ? "
                "ORDER BY synced_at LIMIT ?", (node, p.name, since, room)))
    return names, dirty


def incremental_node(
    job: Job,
    cp: mirror.Checkpoint,
    pools: list[PoolRecord] | None,
    load_guids: dict[str, str],
    events: list[ZEvent],
    *,
    reconcile: bool,
    budget: int | None,
) -> NodeSync:
    """Apply the changes since the checkpoint. `budget`: rows whose space figures may be
    refreshed (None: not this time, the refresh is on a schedule). `pools` None: a batch of
    followed events (`xfleet watch`): the pools are taken as the mirror has them."""
    node = job.node
    started = time.time()
    follow = pools is None
    current: dict[str, PoolRecord | None]
    if pools is None:
        current = {n: None for n in cp.pools}
        load_guids = {n: p.load_guid or "" for n, p in cp.pools.items()}
        budget = None
    else:
        current = {rec.name: rec for rec in pools}
    fresh, gap = new_events(cp.eid, cp.stamp, events)
    fresh = [e for e in fresh if e.pool is None or e.pool in current]
    touched: list[Touch] = event_touches(fresh)
    txgs: dict[str, int] = {}
    for e in fresh:
        if e.pool and e.txg is not None and e.is_history:
            txgs[e.pool] = max(txgs.get(e.pool, 0), e.txg)
    whole: list[str] = []  # pools listed whole (new, or replaced by another pool of that name)
    gaps: dict[str, str] = {}
    for name, rec in current.items():
        old = cp.pools.get(name)
        if old is None or (rec is not None and old.guid != rec.guid):
            whole.append(name)
        elif gap:
            gaps[name] = gap
        elif old.load_guid != load_guids.get(name):
            gaps[name] = "pool re-imported (load_guid changed)"
    gone_pools = [n for n in cp.pools if n not in current]
    if gone_pools and not follow:
        # A node booting before its pools are imported looks the same as a pool destroyed on
        # purpose: keep the rows (the node is marked stale) until someone says which it is.
        raise XfleetError(
            f"pool(s) {', '.join(sorted(gone_pools))} no longer imported on {node}; the mirror "
            "keeps their rows", where=node,
            hint=f"if it was exported or destroyed on purpose: xfleet sync --full --node {node}")
    to_reconcile = [n for n in current if n not in whole] if reconcile else []
    for pool in gaps:
        if pool in to_reconcile:
            continue
        since = cp.pools[pool].last_txg
        found = _history_touches(job, pool, since) if since is not None else None
        if found is None:
            to_reconcile.append(pool)
        else:
            touched.extend(found[0])
            txgs[pool] = max(txgs.get(pool, 0), found[1])
    gap_text = "; ".join(sorted({f"{r}" for r in gaps.values()})) or None
    # Pool health: read by every sync; by a batch of followed events only when one of them
    # may change it (an error report, a state change, a scrub or resilver event).
    health_due = not follow or any(health_event(e.cls) for e in fresh)
    health = read_health(job.transport, job.host) if health_due else None
    gone_names: list[str] = []
    spool = spool_file(job.mirror_path, node)
    conn = mirror.connect(job.mirror_path)
    try:
        if to_reconcile:
            job.progress(node, "reconciling", 0)
            changed, as_trees, gone_names = _reconcile(job, conn, to_reconcile)
            touched.extend(Touch(n) for n in changed)
            touched.extend(Touch(n, recursive=True) for n in as_trees)
        touched.extend(Touch(n, recursive=True) for n in whole)
        promoted = [t.name for t in touched if t.promoted]
        former = _former_origins(conn, node, promoted)
        refresh, dirty = ([], {}) if pools is None else _due_for_refresh(
            conn, node, pools, cp, started, budget or 0)
        todo = plan([*touched, *(Touch(n, recursive=True) for n in former)],
                    extra_exact=_valid(refresh))
        todo = Plan(exact=_valid(todo.exact), trees=_valid(todo.trees))
        job.progress(node, "fetching", len(todo))
        fetched = _fetch(job, todo, spool)
        # A clone whose origin snapshot was renamed or moved (rename, promote) by a change
        # we just fetched: fetch it again too (a second, small round).
        job.lock.acquire()  # the changes are on disk already: only the writing waits
        source = (ln.rstrip("\n") for ln in spool)
        try:
            written, removed = _apply(job, conn, fetched, source, pools, gone_pools, gone_names)
            healthy = write_health(conn, node, health)
            moved = [t.name for t in touched if t.moved or t.promoted] + former
            again = _valid(mirror.clones_under(conn, node, moved, job.run_id)) if moved else []
            if again:
                conn.execute("COMMIT")
                spool2 = spool_file(job.mirror_path, node)
                try:
                    f2 = _fetch(job, Plan(exact=again, trees=[]), spool2)
                    mirror.begin(conn, "the clones a change moved")
                    w2, r2 = _apply(job, conn, f2, (ln.rstrip("\n") for ln in spool2), pools,
                                    [], [])
                    written, removed = written + w2, removed + r2
                finally:
                    spool2.close()
            for pool in to_reconcile:
                # Properties changed during an unrecoverable gap are invisible to the
                # structural check: the space refresh walks the whole pool again.
                dirty[pool] = started
            for pool, dirty_since in dirty.items():
                due = conn.execute(
                    "SELECT 1 FROM datasets WHERE node = ? AND pool = ? AND synced_at < ? LIMIT 1",
                    (node, pool, dirty_since)).fetchone()
                conn.execute(
                    "UPDATE pools SET space_dirty_since = ?, refresh_allocated = allocated, "
                    "refresh_free = free WHERE node = ? AND name = ?",
                    (dirty_since if due else None, node, pool))
            if to_reconcile or whole:
                conn.execute("UPDATE nodes SET last_reconcile = ? WHERE name = ?",
                             (time.time(), node))
            if budget is not None and pools is not None:
                conn.execute("UPDATE nodes SET last_refresh = ? WHERE name = ?",
                             (time.time(), node))
            if gap_text:
                mirror.record_gap(conn, node, gap_text)
            readable = [e for e in events if e.eid != UNREADABLE]
            last = readable[-1] if readable else None
            mirror.save_checkpoint(
                conn, node, eid=last.eid if last else (cp.eid if not gap else 0),
                stamp=last.stamp if last else (cp.stamp if not gap else None),
                txgs=txgs, load_guids=load_guids, changed=bool(fresh or written or removed))
            _, added = mirror.finish_incremental(
                conn, job.run_id, node, written=written, removed=removed,
                commands=job.commands, events=len(fresh), received=job.received, gap=gap_text,
                recount=bool(to_reconcile or whole))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                mirror.rollback(conn)
            raise
        finally:
            job.lock.release()
    finally:
        conn.close()
        spool.close()
    job.progress(node, "done", written)
    return NodeSync(
        node=node, ok=True, mode="follow" if follow else "incremental", datasets=written,
        added=added, removed=removed,
        pools=len(current), commands=job.commands, received=job.received, events=len(fresh),
        fetched=fetched.lines, refreshed=len(refresh), gap=gap_text,
        reconciled=sorted(set(to_reconcile) | set(whole)), health=healthy,
        health_error=health.error if health is not None else None,
        seconds=time.monotonic() - job.start, run_id=job.run_id,
    )


def _former_origins(conn: Connection, node: str, promoted: list[str]) -> list[str]:
    """Before a promote, the promoted clone's origin named a snapshot of another dataset;
    that dataset gives its older snapshots to the clone, so it changes too."""
    out = []
    for name in promoted:
        row = conn.execute("SELECT origin FROM datasets WHERE node = ? AND name = ?",
                           (node, name)).fetchone()
        if row and row[0]:
            out.append(row[0].split("@", 1)[0])
    return out


def _apply(
    job: Job,
    conn: Connection,
    fetched: _Fetch,
    source: Iterable[str],
    pools: list[PoolRecord] | None,
    gone_pools: list[str],
    gone_names: list[str],
) -> tuple[int, int]:
    """Write fetched rows and remove what is gone, in the caller's transaction (begun here)."""
    node, inv = job.node, job.inv
    mirror.track_pool_deltas(conn)
    if not conn.in_transaction:
        mirror.begin(conn, f"the changes of {node}")
    rows = dataset_rows(source, node, job.run_id, lambda name: fetched.values.get(name, {}),
                        inv.tenant_property, fetched.at)
    written = mirror.write_datasets(conn, rows)
    removed = mirror.delete_trees(conn, node, fetched.missing)
    removed += mirror.delete_trees(
        conn, node, [t for t in fetched.trees if t not in fetched.missing], keep_run=job.run_id,
        listed_at=fetched.at)
    removed += mirror.delete_trees(conn, node, gone_names)
    removed += mirror.delete_pool_rows(conn, node, gone_pools)
    if pools is not None:
        mirror.write_pools(conn, node, pools)
    return written, removed


def apply_events(
    inv: Inventory,
    mirror_path: Location,
    node: str,
    transport: Transport,
    events: list[ZEvent],
) -> NodeSync:
    """Apply a batch of followed events (contiguous after the node's checkpoint) to the
    mirror: fetch what they touched, write it, move the checkpoint. Raises on failure (the
    checkpoint does not move, so the events are applied again later)."""
    conn = mirror.connect(mirror_path)
    try:
        cp = mirror.checkpoint(conn, node)
        if cp is None or not cp.usable:
            raise XfleetError(f"{node} has no checkpoint yet", hint="run 'xfleet sync' first")
        mirror.begin(conn, "a followed node's sync run")
        run_id = mirror.start_run(conn, node, "incremental")
        conn.execute("COMMIT")
    finally:
        conn.close()
    job = Job(inv.hosts[node], transport, inv, mirror_path, run_id, threading.Lock(),
               lambda *_: None)
    try:
        return incremental_node(job, cp, None, {}, events, reconcile=False, budget=None)
    except XfleetError as exc:
        conn = mirror.connect(mirror_path)
        try:
            mirror.begin(conn, "a followed node's failed run")
            mirror.fail_run(conn, run_id, node, exc.message, job.commands)
            conn.execute("COMMIT")
        finally:
            conn.close()
        raise


def refetch(inv: Inventory, mirror_path: Location, node: str, transport: Transport,
            names: Sequence[str], trees: Sequence[str] = ()) -> int:
    """Bring the mirror up to date for exactly these names (and these subtrees): sync's own
    batched re-fetch (`zfs list -Hp ... NAME...`, FETCH_BATCH names per command); names that
    are gone are removed with their descendants. Recorded as an incremental sync run.
    Returns the rows written."""
    names = [n for n in names if not any(n == t or n.startswith((t + "/", t + "@"))
                                         for t in trees)]
    if not names and not trees:
        return 0
    conn = mirror.connect(mirror_path)
    try:
        mirror.begin(conn, "a re-fetch")
        run_id = mirror.start_run(conn, node, "incremental")
        conn.execute("COMMIT")
        job = Job(inv.hosts[node], transport, inv, mirror_path, run_id, threading.Lock(),
                        lambda *_: None)
        with spool_file(mirror_path, node) as spool:
            try:
                fetched = _fetch(job, Plan(exact=list(names), trees=list(trees)),
                                      spool)
                written, removed = _apply(
                    job, conn, fetched, (ln.rstrip("\n") for ln in spool), None, [], [])
                mirror.finish_incremental(
                    conn, run_id, node, written=written, removed=removed,
                    commands=job.commands, events=0, received=job.received, gap=None)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    mirror.rollback(conn)
                message = exc.message if isinstance(exc, XfleetError) else str(exc)
                mirror.begin(conn, "a failed re-fetch")
                mirror.fail_run(conn, run_id, node, message, job.commands)
                conn.execute("COMMIT")
                raise
        return written
    finally:
        conn.close()
