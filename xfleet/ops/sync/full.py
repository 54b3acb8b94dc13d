"""A node's full sync: its pools and its whole listing (`zfs list -Hp`, user properties with
`zfs get -j`), spooled and written to the mirror in short transactions; and what every sync
of a node shares (the job, its report, its progress)."""

from __future__ import annotations

import json
import re
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
    ZEvent,
    parse_events,
    zpool_events,
)
from xfleet.core.names import pool_of
from xfleet.core.zfs import (
    DATASET_COLUMNS,
    POOL_COLUMNS,
    SET_SOURCES,
    OutputCut,
    ParseError,
    PoolHealth,
    PoolRecord,
    UserProperties,
    UserPropertyValue,
    parse_get_json,
    parse_pools,
    parse_raw_value,
    parse_status_json,
    parse_status_text,
    status_json_unsupported,
    zfs_get_raw_value,
    zfs_get_user_properties,
    zfs_list,
    zpool_list,
    zpool_status,
    zpool_status_json,
)
from xfleet.fleet.inventory import Inventory
from xfleet.mirror.backend import Connection, Location
from xfleet.remote.host import Host
from xfleet.remote.transport import CommandResult, Transport

# progress(node, phase, rows): phase is "connecting", "listing", "writing",
# "done" or "failed".
Progress = Callable[[str, str, int], None]

# Names per `zfs list NAME...` command: far below ARG_MAX (names are at most 255 bytes).
FETCH_BATCH = 500
# what `zfs list NAME...` prints for a name that is gone
MISSING = re.compile(r"^cannot open '(.*)': dataset does not exist$")


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
    health: int = 0  # pools whose health (zpool status) was written
    health_error: str | None = None  # why it could not be read (the sync went on without it)
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


def read_values(transport: Transport, argv: list[str],
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
    missing = [m.group(1) for ln in lines if (m := MISSING.match(ln))]
    if res.exit_status != 1 or not missing or len(missing) != len(lines):
        raise RemoteCommandError(transport.node, argv, res.exit_status, res.stderr)
    return cut, missing


def get_values(job: Job, names: Sequence[str], sources: Sequence[str],
                add: Callable[[UserPropertyValue], None], *, recursive: bool = False
                ) -> str | None:
    """The user property values of `names` (of their trees, `recursive`), from `sources`.
    Names that are gone meanwhile are left out. Returns where ZFS cut the output short."""
    todo = list(names)
    while True:
        argv = zfs_get_user_properties(job.inv.user_properties, todo, recursive=recursive,
                                       sources=sources)
        cut, missing = read_values(job.transport, argv, add)
        if not missing:
            return cut
        gone = set(missing)
        todo = [n for n in todo if n not in gone]
        if not todo:
            return None


def _raw_values(job: Job, name: str, sources: Sequence[str],
                add: Callable[[UserPropertyValue], None]) -> None:
    """`name`'s values one property at a time with -H, where the whole output is the value:
    exact whatever bytes it holds (bytes that are not UTF-8 read as U+FFFD)."""
    for prop in job.inv.user_properties:
        res = job.transport.run(zfs_get_raw_value(prop, name), check=False)
        if res.exit_status != 0:
            if MISSING.match(res.stderr.strip()):
                return  # destroyed meanwhile
            raise RemoteCommandError(job.node, res.argv, res.exit_status, res.stderr)
        got = parse_raw_value(res.stdout)
        if got is not None and got[0].split(" ", 1)[0] in sources:
            add(UserPropertyValue(name, prop, got[1], got[0].split(" ", 1)[0]))


def resume_values(job: Job, cut: str | None, listed: Callable[[], Iterable[str]],
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
                cut = get_values(job, batch, sources, add)
                batch = []
                if cut is not None:
                    break
        if cut is None and batch:
            cut = get_values(job, batch, sources, add)
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


def _spool_dir(mirror_path: Location) -> str | None:
    """Beside an SQLite mirror; the temporary directory (TMPDIR) for a PostgreSQL one."""
    return str(mirror_path.parent) if isinstance(mirror_path, Path) else None


def spool_file(mirror_path: Location, node: str) -> IO[str]:
    """A temporary file next to the mirror for a node's listing (deleted when closed)."""
    try:
        return tempfile.TemporaryFile("w+", dir=_spool_dir(mirror_path),  # noqa: SIM115
                                      prefix=f".sync-{node}-")
    except OSError as exc:
        raise _spool_error(mirror_path, node, exc) from None


def _spool_error(mirror_path: Location, node: str, exc: OSError) -> XfleetError:
    return MirrorError(
        f"cannot spool {node}'s listing next to the mirror: {exc.strerror or exc}",
        where=_spool_dir(mirror_path) or tempfile.gettempdir(),
        hint="a full sync writes the listing to a temporary file beside the mirror first; "
        "free space there (df -h) or make it writable, then sync again")


def pools_and_load_guids(
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


@dataclass
class HealthRead:
    """The node's pools as `zpool status` showed them at `at`; `pools` None: not read, and
    `error` says why."""

    pools: list[PoolHealth] | None
    at: float
    error: str | None = None


def _status_failed(res: CommandResult) -> str:
    lines = [ln.strip() for ln in res.stderr.splitlines() if ln.strip()]
    return (f"`{' '.join(res.argv[:3])}` exited {res.exit_status}: "
            f"{lines[0] if lines else 'no error output'}")


def read_health(transport: Transport, host: Host) -> HealthRead:
    """The pools' health: one `zpool status -j --json-int` (the inventory's pools; every pool
    when it names none). The text `zpool status -p` instead when this zpool has no -j
    (OpenZFS before 2.3) or its JSON stops short (ZFS's JSON printer stops at a vdev path
    that is not UTF-8). Never raises for the node's answer: a health read that fails does
    not fail the sync; the pools keep the health last read (`pools.health_at` says when)."""
    res = transport.run(zpool_status_json(host.pools), check=False)
    if res.exit_status == 0:
        try:
            return HealthRead(parse_status_json(res.stdout), time.time())
        except ParseError:
            pass  # cut short: the text form says what the JSON could not
    elif not status_json_unsupported(res.stderr):
        return HealthRead(None, time.time(), _status_failed(res))
    res = transport.run(zpool_status(host.pools), check=False)
    if res.exit_status != 0:
        return HealthRead(None, time.time(), _status_failed(res))
    return HealthRead(parse_status_text(res.stdout), time.time())


def queued_events(transport: Transport, after: int | None) -> list[ZEvent] | None:
    """The kernel's event queue (at most ~512 events, so bounded); None if unavailable. Events
    up to `after` (the checkpoint) are kept as ids and times only."""
    try:
        return list(parse_events(transport.lines(zpool_events()), after=after))
    except RemoteCommandError:
        return None


@dataclass
class Job:
    host: Host
    transport: Transport
    inv: Inventory
    mirror_path: Location
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


def full_node(
    job: Job, pools: list[PoolRecord], load_guids: dict[str, str], events: list[ZEvent] | None
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
    with spool_file(job.mirror_path, node) as spool:
        # the user properties are read while the node lists (each command walks every
        # dataset; at 100k+ both take minutes), over the same connection
        ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"xfleet-props-{node}")
        try:
            got = ex.submit(get_values, job, list(job.host.pools), SET_SOURCES, values.add,
                            recursive=True)
            health_read = ex.submit(read_health, transport, job.host)
            try:
                _spool(transport.lines(argv), spool,
                       lambda c: job.progress(node, "listing", c))
            except OSError as exc:
                raise _spool_error(job.mirror_path, node, exc) from None
            cut = got.result()
            health = health_read.result()
        finally:  # on an error or Ctrl-C, do not wait for the other command
            ex.shutdown(wait=False, cancel_futures=True)

        def listed() -> Iterator[str]:
            spool.seek(0)
            for ln in spool:
                yield ln.split("\t", 1)[0]

        resume_values(job, cut, listed, SET_SOURCES, values.add)
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
                healthy = write_health(conn, node, health)
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
        health=healthy, health_error=health.error,
        seconds=time.monotonic() - job.start, run_id=job.run_id,
    )


def write_health(conn: Connection, node: str, health: HealthRead | None) -> int:
    """What `read_health` read, in the caller's transaction (nothing when it read nothing).
    Returns the pools written."""
    if health is None or health.pools is None:
        return 0
    return mirror.write_health(conn, node, health.pools, health.at)
