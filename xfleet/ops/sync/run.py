"""`sync`: every node of the fleet in parallel, each full or incremental as its checkpoint
allows; interrupted runs say so."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from xfleet import mirror
from xfleet.core.errors import XfleetError
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror.backend import ERRORS, Location, location
from xfleet.ops import capacity
from xfleet.ops.report import record_daily
from xfleet.ops.sync.full import (
    Job,
    NodeSync,
    Progress,
    SyncReport,
    full_node,
    pools_and_load_guids,
    queued_events,
)
from xfleet.ops.sync.incremental import incremental_node

log = logging.getLogger(__name__)


def _sync_node(job: Job, cp: mirror.Checkpoint | None, *, full: bool, reconcile: bool,
               budget: int | None) -> NodeSync:
    try:
        return _sync_node_unchecked(job, cp, full=full, reconcile=reconcile, budget=budget)
    except ERRORS as exc:  # the mirror's file or file system: said as such
        raise mirror.explain(exc, job.mirror_path) from None


def _sync_node_unchecked(job: Job, cp: mirror.Checkpoint | None, *, full: bool,
                         reconcile: bool, budget: int | None) -> NodeSync:
    node, transport = job.node, job.transport
    job.progress(node, "connecting", 0)
    # The two reads are independent: run them at once over the node's connection (each is a
    # round trip plus the node's own work; `zpool events` formats up to 512 events).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"xfleet-events-{node}") as ex:
        queued = ex.submit(queued_events, transport,
                           cp.eid if cp is not None and cp.usable else None)
        pools, load_guids = pools_and_load_guids(transport, job.host)
        events = queued.result()
    if full or cp is None or not cp.usable or events is None:
        return full_node(job, pools, load_guids, events)
    return incremental_node(job, cp, pools, load_guids, events, reconcile=reconcile,
                             budget=budget)


def _interrupted(path: Location, run_ids: list[int], exc: BaseException) -> None:
    """On the way out of a sync that did not finish (Ctrl-C, SIGTERM, an error): its
    unfinished runs say so. Best effort, since the process is leaving: what stops it is
    logged, not raised over the error that is on its way out."""
    if not run_ids:
        return
    why = ("interrupted (Ctrl-C or SIGTERM)" if isinstance(exc, (KeyboardInterrupt, SystemExit))
           else f"interrupted: {getattr(exc, 'message', None) or exc}")
    try:
        conn = mirror.connect(path)
        try:
            with mirror.transaction(conn, "interrupted sync runs", patience=10.0):
                conn.executemany(
                    "UPDATE sync_runs SET status = 'interrupted', finished_at = ?, error = ? "
                    "WHERE id = ? AND status = 'running'",
                    [(time.time(), why, r) for r in run_ids])
        finally:
            conn.close()
    except Exception as err:  # the mirror's own trouble: said, and the interrupt goes on
        log.warning("could not mark the interrupted sync runs %s as interrupted: %s",
                    run_ids, err)


def _refresh_due(cp: mirror.Checkpoint | None, refresh: bool | None, inv: Inventory) -> bool:
    if refresh is not None:
        return refresh
    last = cp.last_refresh if cp is not None else None
    return last is None or time.time() - last >= inv.space_refresh_interval


def sync(
    inv: Inventory,
    mirror_path: str | Location | None = None,
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
    the mirror, keeping their rows). `mirror_path`: an SQLite path or a PostgreSQL URL
    (default: the inventory's mirror)."""
    t0 = time.monotonic()
    path = location(mirror_path) if mirror_path is not None else inv.mirror
    hosts = inv.select(list(nodes))
    tick: Progress = progress or (lambda *_: None)
    run_ids: dict[str, int] = {}
    checkpoints: dict[str, mirror.Checkpoint | None] = {}
    by_name = {h.name: h for h in hosts}
    budget = inv.space_refresh_budget if refresh_budget is None else refresh_budget
    lock = threading.Lock()
    own = connections is None
    conns = connections or Connections(inv.hosts, trust_store=inv.trust_store,
                                       state_dir=inv.state_dir)
    try:
        # From the first committed run on, a Ctrl-C or SIGTERM (which can arrive between two
        # statements here, before the nodes are even connected) ends the runs as
        # `interrupted`, not `running`
        conn = mirror.connect(path)
        try:
            for h in hosts:
                mirror.begin(conn, "the start of a sync")
                mirror.upsert_node(conn, h.name, h.kind, h.address, h.labels, h.groups)
                cp = checkpoints[h.name] = mirror.checkpoint(conn, h.name)
                kind = "incremental" if not full and cp is not None and cp.usable else "full"
                run_ids[h.name] = mirror.start_run(conn, h.name, kind)  # before COMMIT: an
                conn.execute("COMMIT")  # interrupt between the two leaves no `running` run
        finally:
            conn.close()
        results = conns.each(
            [h.name for h in hosts],
            lambda name, t: _sync_node(
                Job(by_name[name], t, inv, path, run_ids[name], lock, tick), checkpoints[name],
                full=full, reconcile=reconcile,
                budget=budget if _refresh_due(checkpoints[name], refresh, inv) else None),
            parallel=parallel or inv.parallel,
        )
    except BaseException as exc:
        _interrupted(path, list(run_ids.values()), exc)
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
        capacity.record_daily(conn)  # the capacity history (tenants: once an hour a pool)
    finally:
        conn.close()
    return report
