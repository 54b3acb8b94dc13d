"""Full sync: list every dataset of every node and mirror it.

Per node, two remote commands whatever the number of datasets: `zpool list` and one
`zfs list -Hp -t all -o ...` whose output is streamed. Nodes are listed in parallel (bounded).
Each node is written in ONE transaction: its rows are upserted, and rows that disappeared are
removed only when the node's listing completed. A node that fails keeps its last-known rows,
marked stale, with the error recorded.

Writes to SQLite are serialised: the first node to start streams straight into the mirror;
nodes that start while another writes spool their raw listing to a temporary file (disk, not
memory) and are written when the writer is free, so no node's remote listing waits on another.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from xfleet import mirror
from xfleet.errors import XfleetError
from xfleet.inventory import Host, Inventory
from xfleet.names import pool_of
from xfleet.transport import Connections, Transport
from xfleet.zfs import DATASET_COLUMNS, ParseError, parse_pools, zfs_list, zpool_list

# progress(node, phase, rows): phase is "connecting", "listing", "spooling", "writing",
# "done" or "failed".
Progress = Callable[[str, str, int], None]


@dataclass
class NodeSync:
    node: str
    ok: bool
    datasets: int = 0
    added: int = 0
    removed: int = 0
    pools: int = 0
    commands: int = 0
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


def dataset_rows(
    lines: Iterable[str],
    node: str,
    run_id: int,
    user_properties: tuple[str, ...],
    tenant_property: str,
    now: float,
) -> Iterator[tuple[Any, ...]]:
    """`zfs list -Hp` lines -> rows in mirror.DATASET_TABLE_COLUMNS order (the hot path).

    Numbers stay text here: the columns' INTEGER/REAL affinity converts them in SQLite, as
    `.import` does; only '-' (not applicable) becomes NULL.
    """
    width = len(DATASET_COLUMNS) + len(user_properties)
    n = len(DATASET_COLUMNS)
    tenant_at = n + user_properties.index(tenant_property)
    extra = [(i, p) for i, p in enumerate(user_properties, n) if p != tenant_property]
    lineno = 0
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
        props = None
        if extra:
            d = {p: vals[i] for i, p in extra if vals[i] is not None}
            props = json.dumps(d, sort_keys=True) if d else None
        yield (node, pool_of(parts[0]), *vals[:n], vals[tenant_at], props, now, run_id)


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


def _sync_node(
    host: Host,
    transport: Transport,
    inv: Inventory,
    mirror_path: Path,
    run_id: int,
    write_lock: threading.Lock,
    progress: Progress,
) -> NodeSync:
    start = time.monotonic()
    before = transport.commands
    node = host.name
    progress(node, "connecting", 0)
    pools = list(parse_pools(transport.run(zpool_list(host.pools)).stdout.splitlines()))
    argv = zfs_list(host.pools, user_properties=inv.user_properties)
    progress(node, "listing", 0)
    stream = transport.lines(argv)
    spool: IO[str] | None = None
    if write_lock.acquire(blocking=False):
        source: Iterable[str] = stream
    else:
        spool = tempfile.TemporaryFile(  # noqa: SIM115 - closed in the finally below
            "w+", dir=mirror_path.parent, prefix=f".sync-{node}-"
        )
        _spool(stream, spool, lambda c: progress(node, "spooling", c))
        write_lock.acquire()
        source = (line.rstrip("\n") for line in spool)
    try:
        conn = mirror.connect(mirror_path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = dataset_rows(source, node, run_id, inv.user_properties,
                                    inv.tenant_property, time.time())
                written = mirror.write_datasets(
                    conn, rows, on_batch=lambda c: progress(node, "writing", c)
                )
                mirror.write_pools(conn, node, pools)
                commands = transport.commands - before
                added, removed = mirror.finish_run(
                    conn, run_id, node, written=written, commands=commands
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
    finally:
        write_lock.release()
        if spool is not None:
            spool.close()
    progress(node, "done", written)
    return NodeSync(
        node=node, ok=True, datasets=written, added=added, removed=removed, pools=len(pools),
        commands=commands, seconds=time.monotonic() - start, run_id=run_id,
    )


def sync(
    inv: Inventory,
    mirror_path: Path | None = None,
    nodes: list[str] | tuple[str, ...] = (),
    *,
    parallel: int | None = None,
    progress: Progress | None = None,
    connections: Connections | None = None,
) -> SyncReport:
    """Full sync of the selected nodes (all when empty). Never raises for a node's failure:
    failed nodes are in the report (and marked stale in the mirror)."""
    t0 = time.monotonic()
    path = mirror_path or inv.mirror
    hosts = inv.select(list(nodes))
    tick: Progress = progress or (lambda *_: None)
    conn = mirror.connect(path)
    run_ids: dict[str, int] = {}
    try:
        for h in hosts:
            conn.execute("BEGIN IMMEDIATE")
            mirror.upsert_node(conn, h.name, h.kind, h.address, h.labels, h.groups)
            run_ids[h.name] = mirror.start_run(conn, h.name)
            conn.execute("COMMIT")
    finally:
        conn.close()
    by_name = {h.name: h for h in hosts}
    lock = threading.Lock()
    own = connections is None
    conns = connections or Connections(inv.hosts, trust_store=inv.trust_store,
                                       state_dir=inv.state_dir)
    try:
        results = conns.each(
            [h.name for h in hosts],
            lambda name, t: _sync_node(by_name[name], t, inv, path, run_ids[name], lock, tick),
            parallel=parallel or inv.parallel,
        )
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
            conn.execute("BEGIN IMMEDIATE")
            mirror.fail_run(conn, run_ids[r.node], r.node, err.message, commands)
            conn.execute("COMMIT")
            tick(r.node, "failed", 0)
            report.nodes.append(NodeSync(node=r.node, ok=False, error=err.message, hint=err.hint,
                                         commands=commands, seconds=r.seconds,
                                         run_id=run_ids[r.node]))
    finally:
        conn.close()
    return report
