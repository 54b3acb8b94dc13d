"""Full sync: list every dataset of every node and mirror it.

Per node, four remote commands whatever the number of datasets: `zpool list`, `zpool events`,
one `zfs list -Hp -t all -o ...` of the native columns whose output is streamed, and, at the
same time, one `zfs get -j` of the user properties set on the node's datasets (JSON, since a
user property's value may hold any character; see xfleet.core.zfs). Nodes are listed in parallel
(bounded).
Each node's listing is spooled to a temporary file beside the mirror (disk, not memory) with
no lock held, then applied in short transactions of mirror.ROWS_PER_TRANSACTION rows; rows
that disappeared are removed only when the node's listing completed. No node's remote listing
waits on another, and no other writer waits longer than one chunk. A node that fails keeps its
last-known rows, marked stale, with the error recorded.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from xfleet import mirror
from xfleet.core.errors import MirrorError, RemoteCommandError, XfleetError
from xfleet.core.events import (
    UNREADABLE,
    Plan,
    Touch,
    ZEvent,
    event_touches,
    parse_events,
    parse_history,
    plan,
    touches,
    unreadable_after,
    zpool_events,
    zpool_history,
)
from xfleet.core.names import pool_of, validate_dataset
from xfleet.core.zfs import (
    DATASET_COLUMNS,
    EFFECTIVE_SOURCES,
    FAST_COLUMNS,
    POOL_COLUMNS,
    SET_SOURCES,
    OutputCut,
    ParseError,
    PoolRecord,
    UserProperties,
    UserPropertyValue,
    parse_get_json,
    parse_pools,
    parse_raw_value,
    zfs_get_raw_value,
    zfs_get_user_properties,
    zfs_list,
    zpool_list,
)
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.ops.report import record_daily
from xfleet.remote.host import Host
from xfleet.remote.transport import Transport

# progress(node, phase, rows): phase is "connecting", "listing", "writing",
# "done" or "failed".
Progress = Callable[[str, str, int], None]


@dataclass
class NodeSync:
    node: str
    ok: bool
    mode: str = "full"  # "full" or "incremental"
    datasets: int = 0
    added: int = 0
    removed: int = 0
    pools: int = 0
    commands: int = 0
    received: int = 0  # bytes of command output
    events: int = 0  # change-feed records applied (incremental)
    fetched: int = 0  # rows fetched again (incremental)
    refreshed: int = 0  # of which for space freshness
    gap: str | None = None  # why the event queue could not vouch for the changes, if it could not
    reconciled: list[str] = field(default_factory=list)  # pools checked structurally
    seconds: float = 0.0
    error: str | None = None
    hint: str | None = None
    run_id: int | None = None


@dataclass
class SyncReport:
    nodes: list[NodeSync] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(n.ok for n in self.nodes)

    @property
    def failed(self) -> list[NodeSync]:
        return [n for n in self.nodes if not n.ok]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "seconds": round(self.seconds, 3),
                "nodes": [asdict(n) for n in self.nodes]}


PropsOf = Callable[[str], dict[str, str]]


def dataset_rows(
    lines: Iterable[str],
    node: str,
    run_id: int,
    props_of: PropsOf,
    tenant_property: str,
    now: float,
) -> Iterator[tuple[Any, ...]]:
    """`zfs list -Hp -o DATASET_COLUMNS` lines, with each dataset's user property values
    from `props_of(name)`, -> rows in mirror.DATASET_TABLE_COLUMNS order (the hot path).

    Numbers stay text here: the columns' INTEGER/REAL affinity converts them in SQLite, as
    `.import` does; only '-' (not applicable) becomes NULL. No native column can hold a tab
    or a newline (names and native values are ZFS's own), so a line is always one dataset.
    """
    width = len(DATASET_COLUMNS)
    lineno = 0
    # rows come in `zfs list` order: a volume's snapshots, a tenant's volumes share one dict
    last: dict[str, str] | None = None
    tenant: str | None = None
    props: str | None = None
    for line in lines:
        lineno += 1
        parts = line.split("\t")
        if len(parts) != width:
            if not line.strip():
                continue
            raise ParseError(
                f"unexpected zfs list output at line {lineno}: expected {width} tab-separated "
                f"fields, got {len(parts)}: {line[:120]!r}"
            )
        vals = [None if p == "-" else p for p in parts]
        got = props_of(parts[0])
        if got is not last:
            last = got
            tenant = got.get(tenant_property)
            extra = {k: v for k, v in got.items() if k != tenant_property}
            props = json.dumps(extra, sort_keys=True) if extra else None
        yield (node, pool_of(parts[0]), *vals, tenant, props, now, run_id)


# ---------------------------------------------------------------------------------------------
# user properties: `zfs get -j`, and what to do when ZFS cuts it short


def _read_values(transport: Transport, argv: list[str],
                 add: Callable[[UserPropertyValue], None]) -> tuple[str | None, list[str]]:
    """Run one `zfs get -j` and pass each value to `add`. Returns the dataset at which ZFS
    cut its output short (None when it did not) and the names it could not open (then it
    printed nothing at all: the caller asks again without them)."""
    res = transport.stream(argv)
    cut = None
    try:
        for rec in parse_get_json(res):
            add(rec)
    except OutputCut as exc:
        cut = exc.name
        for _ in res:  # the rest (there is none: ZFS stopped printing)
            pass
    if res.exit_status == 0:
        return cut, []
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    if lines and lines[0].strip() == "invalid option 'j'":
        raise XfleetError(
            f"{transport.node}'s zfs has no JSON output (`zfs get -j`, OpenZFS 2.3 or later)",
            where=transport.node,
            hint="xfleet reads user properties as JSON, the one format in which any value "
            "survives; upgrade the node's OpenZFS to 2.3 or later")
    missing = [m.group(1) for ln in lines if (m := _MISSING.match(ln))]
    if res.exit_status != 1 or not missing or len(missing) != len(lines):
        raise RemoteCommandError(transport.node, argv, res.exit_status, res.stderr)
    return cut, missing


def _get_values(job: _Job, names: Sequence[str], sources: Sequence[str],
                add: Callable[[UserPropertyValue], None], *, recursive: bool = False
                ) -> str | None:
    """The user property values of `names` (of their trees, `recursive`), from `sources`.
    Names that are gone meanwhile are left out. Returns where ZFS cut the output short."""
    todo = list(names)
    while True:
        argv = zfs_get_user_properties(job.inv.user_properties, todo, recursive=recursive,
                                       sources=sources)
        cut, missing = _read_values(job.transport, argv, add)
        if not missing:
            return cut
        gone = set(missing)
        todo = [n for n in todo if n not in gone]
        if not todo:
            return None


def _raw_values(job: _Job, name: str, sources: Sequence[str],
                add: Callable[[UserPropertyValue], None]) -> None:
    """`name`'s values one property at a time with -H, where the whole output is the value:
    exact whatever bytes it holds (bytes that are not UTF-8 read as U+FFFD)."""
    for prop in job.inv.user_properties:
        res = job.transport.run(zfs_get_raw_value(prop, name), check=False)
        if res.exit_status != 0:
            if _MISSING.match(res.stderr.strip()):
                return  # destroyed meanwhile
            raise RemoteCommandError(job.node, res.argv, res.exit_status, res.stderr)
        got = parse_raw_value(res.stdout)
        if got is not None and got[0].split(" ", 1)[0] in sources:
            add(UserPropertyValue(name, prop, got[1], got[0].split(" ", 1)[0]))


def _resume_values(job: _Job, cut: str | None, listed: Callable[[], Iterable[str]],
                   sources: Sequence[str], add: Callable[[UserPropertyValue], None]) -> int:
    """After `zfs get -j` stopped at dataset `cut` (a value that is not UTF-8, which ZFS's
    JSON printer cannot print): read that dataset's values with -H, then ask again for the
    datasets after it, in the order of `listed()` (the `zfs list` order, which is `zfs get`'s
    too), FETCH_BATCH names per command. Only a node holding such a value pays for this.
    Returns how many datasets were read with -H."""
    raw = 0
    while cut is not None:
        _raw_values(job, cut, sources, add)
        raw += 1
        at, batch = cut, []
        cut = None
        # the datasets after `at`; all of them if `at` is not listed (gone meanwhile)
        after = not any(name == at for name in listed())
        for name in listed():
            if not after:
                after = name == at
                continue
            if "#" in name:
                continue
            batch.append(name)
            if len(batch) == FETCH_BATCH:
                cut = _get_values(job, batch, sources, add)
                batch = []
                if cut is not None:
                    break
        if cut is None and batch:
            cut = _get_values(job, batch, sources, add)
    return raw


def _spool(lines: Iterable[str], spool: IO[str], tick: Callable[[int], None]) -> None:
    count = 0
    for line in lines:
        spool.write(line)
        spool.write("\n")
        count += 1
        if count % 20000 == 0:
            tick(count)
    tick(count)
    spool.seek(0)


def _spool_file(mirror_path: Path, node: str) -> IO[str]:
    """A temporary file next to the mirror for a node's listing (deleted when closed)."""
    try:
        return tempfile.TemporaryFile("w+", dir=mirror_path.parent,  # noqa: SIM115
                                      prefix=f".sync-{node}-")
    except OSError as exc:
        raise _spool_error(mirror_path, node, exc) from None


def _spool_error(mirror_path: Path, node: str, exc: OSError) -> XfleetError:
    return MirrorError(
        f"cannot spool {node}'s listing next to the mirror: {exc.strerror or exc}",
        where=str(mirror_path.parent),
        hint="a full sync writes the listing to a temporary file beside the mirror first; "
        "free space there (df -h) or make it writable, then sync again")


def _pools_and_load_guids(
    transport: Transport, host: Host
) -> tuple[list[PoolRecord], dict[str, str]]:
    """One `zpool list`: the pool figures, plus each pool's load_guid (new at every import,
    so a changed one means a reboot or re-import the event queue cannot vouch for)."""
    argv = zpool_list(host.pools, columns=(*POOL_COLUMNS, "load_guid"))
    lines, load_guids = [], {}
    for line in transport.run(argv).stdout.splitlines():
        if not line.strip():
            continue
        head, _, load_guid = line.rpartition("\t")
        lines.append(head)
        load_guids[head.split("\t", 1)[0]] = load_guid
    return list(parse_pools(lines)), load_guids


def _queued_events(transport: Transport, after: int | None) -> list[ZEvent] | None:
    """The kernel's event queue (at most ~512 events, so bounded); None if unavailable. Events
    up to `after` (the checkpoint) are kept as ids and times only."""
    try:
        return list(parse_events(transport.lines(zpool_events()), after=after))
    except RemoteCommandError:
        return None


@dataclass
class _Job:
    host: Host
    transport: Transport
    inv: Inventory
    mirror_path: Path
    run_id: int
    lock: threading.Lock
    progress: Progress
    start: float = field(default_factory=time.monotonic)
    commands0: int = 0
    received0: int = 0

    def __post_init__(self) -> None:
        self.commands0 = self.transport.commands
        self.received0 = self.transport.received

    @property
    def node(self) -> str:
        return self.host.name

    @property
    def commands(self) -> int:
        return self.transport.commands - self.commands0

    @property
    def received(self) -> int:
        return self.transport.received - self.received0


def _sync_node(job: _Job, cp: mirror.Checkpoint | None, *, full: bool, reconcile: bool,
               budget: int | None) -> NodeSync:
    try:
        return _sync_node_unchecked(job, cp, full=full, reconcile=reconcile, budget=budget)
    except sqlite3.Error as exc:  # the mirror's file or file system: said as such
        raise mirror.explain(exc, job.mirror_path) from None


def _sync_node_unchecked(job: _Job, cp: mirror.Checkpoint | None, *, full: bool,
                         reconcile: bool, budget: int | None) -> NodeSync:
    node, transport = job.node, job.transport
    job.progress(node, "connecting", 0)
    # The two reads are independent: run them at once over the node's connection (each is a
    # round trip plus the node's own work; `zpool events` formats up to 512 events).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"xfleet-events-{node}") as ex:
        queued = ex.submit(_queued_events, transport,
                           cp.eid if cp is not None and cp.usable else None)
        pools, load_guids = _pools_and_load_guids(transport, job.host)
        events = queued.result()
    if full or cp is None or not cp.usable or events is None:
        return _full_node(job, pools, load_guids, events)
    return _incremental_node(job, cp, pools, load_guids, events, reconcile=reconcile,
                             budget=budget)


def _full_node(
    job: _Job, pools: list[PoolRecord], load_guids: dict[str, str], events: list[ZEvent] | None
) -> NodeSync:
    """List the node whole and make the mirror equal to the listing. The listing is spooled
    to disk first (no lock is held while the node lists, which takes minutes at 100k+
    datasets), then applied in short transactions (mirror.write_datasets_chunked), so other
    writers wait at most one chunk."""
    node, transport, inv = job.node, job.transport, job.inv
    argv = zfs_list(job.host.pools)
    job.progress(node, "listing", 0)
    listed_at = time.time()  # the rows are as of now: a row written later by another is newer
    values = UserProperties()
    with _spool_file(job.mirror_path, node) as spool:
        # the user properties are read while the node lists (each command walks every
        # dataset; at 100k+ both take minutes), over the same connection
        ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"xfleet-props-{node}")
        try:
            got = ex.submit(_get_values, job, list(job.host.pools), SET_SOURCES, values.add,
                            recursive=True)
            try:
                _spool(transport.lines(argv), spool,
                       lambda c: job.progress(node, "listing", c))
            except OSError as exc:
                raise _spool_error(job.mirror_path, node, exc) from None
            cut = got.result()
        finally:  # on an error or Ctrl-C, do not wait for the other command
            ex.shutdown(wait=False, cancel_futures=True)

        def listed() -> Iterator[str]:
            spool.seek(0)
            for ln in spool:
                yield ln.split("\t", 1)[0]

        _resume_values(job, cut, listed, SET_SOURCES, values.add)
        spool.seek(0)
        conn = mirror.connect(job.mirror_path)
        try:
            job.progress(node, "writing", 0)
            rows = dataset_rows((ln.rstrip("\n") for ln in spool), node, job.run_id,
                                values.effective, inv.tenant_property, listed_at)
            written = mirror.write_datasets_chunked(
                conn, rows, what=f"the listing of {node}", lock=job.lock,
                on_batch=lambda c: job.progress(node, "writing", c))
            gone = mirror.delete_unlisted(conn, node, job.run_id, listed_at, lock=job.lock)
            with job.lock, mirror.transaction(conn, f"the end of {node}'s full sync"):
                mirror.write_pools(conn, node, pools)
                added, removed = mirror.finish_run(
                    conn, job.run_id, node, written=written, commands=job.commands,
                    listed_at=listed_at, removed=gone)
                # The checkpoint: the queue was read before the listing, so a change made
                # meanwhile is applied again by the next incremental sync (idempotent). Per
                # pool, the txg of the newest queued history record (a record the pool's
                # history holds, so a later catch-up can tell it reaches back), else the
                # newest createtxg (a txg the listing certainly reflects).
                txgs = {r[0]: r[1] for r in conn.execute(
                    "SELECT pool, max(createtxg) FROM datasets WHERE node = ? GROUP BY pool",
                    (node,))}
                for e in events or ():
                    if e.is_history and e.pool in txgs and e.txg is not None:
                        txgs[e.pool] = e.txg
                readable = [e for e in events or () if e.eid != UNREADABLE]
                last = readable[-1] if readable else None
                mirror.save_checkpoint(
                    conn, node, eid=(last.eid if last else 0) if events is not None else None,
                    stamp=last.stamp if last else None, txgs=txgs, load_guids=load_guids,
                    full=True, changed=True)
                conn.execute(
                    "UPDATE pools SET space_dirty_since = NULL, refresh_allocated = allocated, "
                    "refresh_free = free WHERE node = ?", (node,))
                conn.execute("UPDATE nodes SET last_refresh = ? WHERE name = ?",
                             (time.time(), node))
                conn.execute("UPDATE sync_runs SET bytes = ?, events = 0 WHERE id = ?",
                             (job.received, job.run_id))
        finally:
            conn.close()
    job.progress(node, "done", written)
    return NodeSync(
        node=node, ok=True, mode="full", datasets=written, added=added, removed=removed,
        pools=len(pools), commands=job.commands, received=job.received,
        seconds=time.monotonic() - job.start, run_id=job.run_id,
    )


# ---------------------------------------------------------------------------------------------
# incremental sync

# Names per `zfs list NAME...` command: far below ARG_MAX (names are at most 255 bytes).
FETCH_BATCH = 500
# A reconcile that finds more changed names than this lists the pool whole instead.
RECONCILE_TREE_THRESHOLD = 5000
_MISSING = re.compile(r"^cannot open '(.*)': dataset does not exist$")


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


def _fetch(job: _Job, p: Plan, spool: IO[str]) -> _Fetch:
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
                         if ln.strip() and not _MISSING.match(ln)]
                if other or res.exit_status != 1:
                    raise RemoteCommandError(job.node, argv, res.exit_status, res.stderr)
            found = set(seen)
            out.missing.extend(n for n in batch if n not in found)
            # then the user properties of what was found (one `zfs get -j` per batch)
            ask = [n for n in batch if n in found and "#" not in n]
            if ask:
                cut = _get_values(job, ask, EFFECTIVE_SOURCES, add, recursive=recursive)
                _resume_values(job, cut, seen.__iter__,
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


def _history_touches(job: _Job, pool: str, since: int) -> tuple[list[Touch], int] | None:
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
    job: _Job, conn: sqlite3.Connection, pools: list[str]
) -> tuple[list[str], list[str], list[str]]:
    """The structural check: a listing of the fast-path columns only (name, guid, createtxg,
    origin: no per-dataset property or space gathering in the kernel), diffed with the mirror
    in SQL. Returns (names to fetch, pools to list whole, names gone)."""
    node = job.node
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS fast (name TEXT PRIMARY KEY, guid TEXT, "
                 "createtxg INTEGER, origin TEXT)")
    conn.execute("DELETE FROM temp.fast")
    argv = zfs_list(pools, columns=FAST_COLUMNS)
    buf: list[tuple[str, ...]] = []
    for line in job.transport.lines(argv):
        parts = line.split("\t")
        if len(parts) != len(FAST_COLUMNS):
            if not line.strip():
                continue
            raise ParseError(f"unexpected fast listing line: {line[:120]!r}")
        buf.append(tuple(None if p == "-" else p for p in parts))  # type: ignore[misc]
        if len(buf) >= 20000:
            conn.executemany("INSERT OR REPLACE INTO temp.fast VALUES (?, ?, ?, ?)", buf)
            buf.clear()
    conn.executemany("INSERT OR REPLACE INTO temp.fast VALUES (?, ?, ?, ?)", buf)
    marks = ", ".join("?" for _ in pools)
    changed = [r[0] for r in conn.execute(
        "SELECT f.name FROM temp.fast f LEFT JOIN datasets d ON d.node = ? AND d.name = f.name "
        "WHERE d.name IS NULL OR d.guid IS NOT f.guid OR d.origin IS NOT f.origin "
        "OR d.createtxg IS NOT CAST(f.createtxg AS INTEGER)", (node,))]
    gone = [r[0] for r in conn.execute(
        f"SELECT d.name FROM datasets d WHERE d.node = ? AND d.pool IN ({marks}) "
        "AND NOT EXISTS (SELECT 1 FROM temp.fast f WHERE f.name = d.name)", (node, *pools))]
    conn.execute("DELETE FROM temp.fast")
    if len(changed) > RECONCILE_TREE_THRESHOLD:
        return [], list(pools), gone
    return changed, [], gone


def _due_for_refresh(
    conn: sqlite3.Connection, node: str, pools: list[PoolRecord], cp: mirror.Checkpoint,
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


def _incremental_node(
    job: _Job,
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
    gone_names: list[str] = []
    spool = _spool_file(job.mirror_path, node)
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
            moved = [t.name for t in touched if t.moved or t.promoted] + former
            again = _valid(mirror.clones_under(conn, node, moved, job.run_id)) if moved else []
            if again:
                conn.execute("COMMIT")
                spool2 = _spool_file(job.mirror_path, node)
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
        reconciled=sorted(set(to_reconcile) | set(whole)),
        seconds=time.monotonic() - job.start, run_id=job.run_id,
    )


def _former_origins(conn: sqlite3.Connection, node: str, promoted: list[str]) -> list[str]:
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
    job: _Job,
    conn: sqlite3.Connection,
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
    mirror_path: Path,
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
    job = _Job(inv.hosts[node], transport, inv, mirror_path, run_id, threading.Lock(),
               lambda *_: None)
    try:
        return _incremental_node(job, cp, None, {}, events, reconcile=False, budget=None)
    except XfleetError as exc:
        conn = mirror.connect(mirror_path)
        try:
            mirror.begin(conn, "a followed node's failed run")
            mirror.fail_run(conn, run_id, node, exc.message, job.commands)
            conn.execute("COMMIT")
        finally:
            conn.close()
        raise


def refetch(inv: Inventory, mirror_path: Path, node: str, transport: Transport,
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
        job = _Job(inv.hosts[node], transport, inv, mirror_path, run_id, threading.Lock(),
                        lambda *_: None)
        with _spool_file(mirror_path, node) as spool:
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


def _interrupted(path: Path, run_ids: list[int]) -> None:
    """Best effort, on the way out of an interrupted sync: its unfinished runs say so."""
    with contextlib.suppress(Exception):
        conn = mirror.connect(path)
        try:
            with mirror.transaction(conn, "interrupted sync runs", patience=5.0):
                conn.executemany(
                    "UPDATE sync_runs SET status = 'interrupted', finished_at = ?, error = "
                    "'interrupted (Ctrl-C or SIGTERM)' WHERE id = ? AND status = 'running'",
                    [(time.time(), r) for r in run_ids])
        finally:
            conn.close()


def _refresh_due(cp: mirror.Checkpoint | None, refresh: bool | None, inv: Inventory) -> bool:
    if refresh is not None:
        return refresh
    last = cp.last_refresh if cp is not None else None
    return last is None or time.time() - last >= inv.space_refresh_interval


def sync(
    inv: Inventory,
    mirror_path: Path | None = None,
    nodes: list[str] | tuple[str, ...] = (),
    *,
    full: bool = False,
    reconcile: bool = False,
    refresh: bool | None = None,
    refresh_budget: int | None = None,
    parallel: int | None = None,
    progress: Progress | None = None,
    connections: Connections | None = None,
) -> SyncReport:
    """Sync the selected nodes (all when empty): incremental from each node's checkpoint,
    full for a node that has none or with `full`; `reconcile` adds the structural check.
    Space figures of rows no change touched are refreshed on a schedule (inventory
    `space_refresh_interval`), or now with `refresh=True`, never with `refresh=False`.
    Never raises for a node's failure: failed nodes are in the report (and marked stale in
    the mirror, keeping their rows)."""
    t0 = time.monotonic()
    path = mirror_path or inv.mirror
    hosts = inv.select(list(nodes))
    tick: Progress = progress or (lambda *_: None)
    conn = mirror.connect(path)
    run_ids: dict[str, int] = {}
    checkpoints: dict[str, mirror.Checkpoint | None] = {}
    try:
        for h in hosts:
            mirror.begin(conn, "the start of a sync")
            mirror.upsert_node(conn, h.name, h.kind, h.address, h.labels, h.groups)
            cp = checkpoints[h.name] = mirror.checkpoint(conn, h.name)
            kind = "incremental" if not full and cp is not None and cp.usable else "full"
            run_ids[h.name] = mirror.start_run(conn, h.name, kind)
            conn.execute("COMMIT")
    finally:
        conn.close()
    by_name = {h.name: h for h in hosts}
    budget = inv.space_refresh_budget if refresh_budget is None else refresh_budget
    lock = threading.Lock()
    own = connections is None
    conns = connections or Connections(inv.hosts, trust_store=inv.trust_store,
                                       state_dir=inv.state_dir)
    try:
        results = conns.each(
            [h.name for h in hosts],
            lambda name, t: _sync_node(
                _Job(by_name[name], t, inv, path, run_ids[name], lock, tick), checkpoints[name],
                full=full, reconcile=reconcile,
                budget=budget if _refresh_due(checkpoints[name], refresh, inv) else None),
            parallel=parallel or inv.parallel,
        )
    except BaseException:  # Ctrl-C, SIGTERM: the runs end as `interrupted`, not `running`
        _interrupted(path, list(run_ids.values()))
        raise
    finally:
        if own:
            conns.close()
    report = SyncReport(seconds=time.monotonic() - t0)
    conn = mirror.connect(path)
    try:
        for r in results:
            if r.ok and r.value is not None:
                report.nodes.append(r.value)
                continue
            err = r.error or XfleetError("unknown failure")
            commands = conns.commands(r.node)
            mirror.begin(conn, "a failed node's sync run")
            mirror.fail_run(conn, run_ids[r.node], r.node, err.message, commands)
            conn.execute("COMMIT")
            tick(r.node, "failed", 0)
            report.nodes.append(NodeSync(node=r.node, ok=False, error=err.message, hint=err.hint,
                                         commands=commands, seconds=r.seconds,
                                         run_id=run_ids[r.node]))

        record_daily(conn)  # today's per-pool totals (the compression trend): no scan
    finally:
        conn.close()
    return report
