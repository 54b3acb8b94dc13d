"""`xfleet sync`, `xfleet watch`, `xfleet status`: keep the mirror current, and say how current
it is (xfleet.ops.sync and .watch; docs/sync.md).

The library is imported inside the commands, so that `xfleet --help` stays fast."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from xfleet.cli.output import (
    Ctx,
    console,
    echo_json,
    emit,
    failed_doc,
    json_option,
    nodes_option,
    pass_ctx,
    record_json,
    stop_on_signals,
)

if TYPE_CHECKING:
    from rich.progress import TaskID

    from xfleet.fleet.inventory import Inventory
    from xfleet.mirror.backend import Location
    from xfleet.ops.sync import SyncReport
    from xfleet.ops.watch import NodeWatch, Watcher


@click.command("sync")
@nodes_option()
@click.option("--parallel", "-p", type=click.IntRange(1, 256), metavar="N",
              help="Nodes listed at once (default: inventory 'parallel', 8).")
@click.option("--full", is_flag=True,
              help="List every dataset again (the default is incremental from the checkpoint).")
@click.option("--reconcile", is_flag=True,
              help="Also check structure with a fast-path listing (name, guid, createtxg, "
              "origin) and fix what differs.")
@click.option("--refresh/--no-refresh", default=None,
              help="Refresh space figures of rows no change touched now (default: when the "
              "inventory's space_refresh_interval, 300 s, has passed for the node).")
@click.option("--refresh-budget", type=click.IntRange(0), metavar="N",
              help="Rows per node whose space figures may be refreshed (default: inventory "
              "'space_refresh_budget', 2000).")
@json_option
@pass_ctx
def sync_cmd(c: Ctx, nodes: tuple[str, ...], parallel: int | None, full: bool, reconcile: bool,
             refresh: bool | None, refresh_budget: int | None, as_json: bool) -> None:
    """Bring the mirror up to date with the selected nodes.

    Incremental by default: per node, `zpool list` and `zpool events` say what changed since
    the mirror's checkpoint, and only the changed datasets are fetched again (batched), so the
    cost follows the number of changes, not the number of datasets. When the event queue
    cannot vouch for every change (overflow, `zpool events -c`, reboot, re-import), the pool's
    history catches up, else a structural reconcile does. A node with no checkpoint yet, or
    --full, gets a full listing (three remote commands, whatever its size).

    A node that fails keeps its last-known rows in the mirror, marked stale; the exit status
    is 1 if any node failed.

    \b
    Examples:
      xfleet sync
      xfleet sync --full --node n1 --node zone-b --json
      xfleet sync --reconcile
    """
    inv = c.inventory()
    path = c.mirror_path()
    report = run_sync(inv, path, nodes, parallel, quiet=as_json, full=full,
                      reconcile=reconcile, refresh=refresh, refresh_budget=refresh_budget)
    if as_json:
        doc = report.to_dict()
        if not report.ok:
            bad = [n.node for n in report.failed]
            first = report.failed[0]
            doc = failed_doc(doc, f"{len(bad)} of {len(report.nodes)} node(s) failed to sync: "
                             f"{first.node}: {first.error}", where=", ".join(bad),
                             hint=first.hint or "failed nodes keep their last-known rows, "
                             "marked stale; each node's error is in 'nodes'")
        echo_json(doc)
    else:
        sync_summary(report)
    if not report.ok:
        sys.exit(1)


def run_sync(inv: Inventory, path: Location, nodes: Sequence[str], parallel: int | None,
             quiet: bool, *, full: bool = False, reconcile: bool = False,
             refresh: bool | None = None, refresh_budget: int | None = None) -> SyncReport:
    """Sync, with a live progress display per node on a terminal (unless `quiet`)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from xfleet.ops.sync import sync

    con = console(stderr=True)
    if quiet or not con.is_terminal:
        return sync(inv, path, list(nodes), parallel=parallel, full=full, reconcile=reconcile,
                    refresh=refresh, refresh_budget=refresh_budget)
    with Progress(
        TextColumn("[bold]{task.fields[node]:<12}"),
        TextColumn("{task.fields[phase]:<10}"),
        BarColumn(bar_width=None, pulse_style="cyan"),
        TextColumn("{task.completed:>10,.0f} rows"),
        TimeElapsedColumn(),
        console=con,
        transient=False,
    ) as prog:
        tasks: dict[str, TaskID] = {}

        def tick(node: str, phase: str, rows: int) -> None:
            if node not in tasks:
                tasks[node] = prog.add_task("", total=None, node=node, phase=phase)
            done = phase in ("done", "failed")
            prog.update(tasks[node], completed=rows, phase=phase,
                        total=max(rows, 1) if done else None)

        return sync(inv, path, list(nodes), parallel=parallel, progress=tick, full=full,
                    reconcile=reconcile, refresh=refresh, refresh_budget=refresh_budget)


def sync_summary(report: SyncReport) -> None:
    """The sync report as a table, one row per node."""
    rows = [
        {"node": n.node, "status": "ok" if n.ok else "FAILED", "mode": n.mode,
         "datasets": n.datasets, "events": n.events, "added": n.added, "removed": n.removed,
         "commands": n.commands, "seconds": f"{n.seconds:.1f}",
         "note": "; ".join(x for x in (
             f"gap: {n.gap}" if n.gap else "",
             f"reconciled {', '.join(n.reconciled)}" if n.reconciled else "",
             f"{n.refreshed} space refreshed" if n.refreshed else "") if x),
         "error": (n.error or "") + (f" (hint: {n.hint})" if n.hint else "")}
        for n in report.nodes
    ]
    cols = ["node", "status", "mode", "datasets", "events", "added", "removed", "commands",
            "seconds"]
    if any(r["note"] for r in rows):
        cols.append("note")
    if not report.ok:
        cols.append("error")
    emit(cols, rows, "table",
         footer=f"{len(report.nodes) - len(report.failed)}/{len(report.nodes)} nodes synced "
         f"in {report.seconds:.1f}s" + (" — failed nodes keep their last-known rows, "
                                        "marked stale" if not report.ok else ""))


@click.command("watch")
@nodes_option()
@click.option("--refresh-interval", type=click.FloatRange(0.5), default=30.0, show_default=True,
              metavar="SECONDS", help="How often to re-check each node (queue, gaps, space).")
@click.option("--reconcile-interval", type=click.FloatRange(1.0), default=3600.0,
              show_default=True, metavar="SECONDS", help="How often to reconcile structure.")
@click.option("--space-refresh-interval", type=click.FloatRange(0.0), metavar="SECONDS",
              help="Seconds between space refreshes of a node (default: the inventory's "
              "space_refresh_interval, 300).")
@click.option("--duration", type=click.FloatRange(0.0), metavar="SECONDS",
              help="Stop after this long (default: until SIGINT/SIGTERM).")
@click.option("--json-lines", "json_lines", is_flag=True, callback=record_json,
              help="Print one JSON object per node state change instead of a status line.")
@pass_ctx
def watch_cmd(c: Ctx, nodes: tuple[str, ...], refresh_interval: float,
              reconcile_interval: float, space_refresh_interval: float | None,
              duration: float | None, json_lines: bool) -> None:
    """Follow every node's change feed and keep the mirror current (foreground).

    One `zpool events -f` stream per node applies each change within seconds; every
    --refresh-interval an incremental sync catches what a stream cannot (gaps, reboots) and
    refreshes space figures. A node that drops is retried with backoff. Stop with Ctrl-C or
    SIGTERM: the mirror is consistent at every moment.

    \b
    Examples:
      xfleet watch
      xfleet watch --node zone-a --refresh-interval 10
      xfleet watch --json-lines --duration 60 > watch.log
    """
    from xfleet.ops.watch import Watcher

    inv = c.inventory()
    if space_refresh_interval is not None:
        inv.space_refresh_interval = space_refresh_interval
    path = c.mirror_path()
    stop = threading.Event()
    con = console(stderr=True)
    live = con.is_terminal and not json_lines
    lock = threading.Lock()

    def line(w: Watcher) -> str:
        parts = []
        for st in w.status.values():
            lag = f" lag {st.lag:.1f}s" if st.lag is not None else ""
            eid = "-" if st.last_eid is None else st.last_eid
            err = f" ({st.error})" if st.error and st.state != "following" else ""
            parts.append(f"{st.node}: {st.state} eid {eid} +{st.events}{lag}{err}")
        return " | ".join(parts)

    def changed(st: NodeWatch) -> None:
        with lock:
            if json_lines:
                echo_json({"time": round(time.time(), 3), **st.to_dict()}, indent=None)
            elif live:
                con.print(f"\r{line(watcher)}"[: con.width + 1], end="",
                          soft_wrap=True, highlight=False)
            elif st.error or st.state.startswith(("following", "stopped", "reconnecting")):
                con.print(f"{st.node}: {st.state}" + (f" ({st.error})" if st.error else ""),
                          highlight=False, markup=False)  # an error quotes the node

    watcher = Watcher(inv, path, list(nodes), refresh_interval=refresh_interval,
                      reconcile_interval=reconcile_interval, on_change=changed)

    if duration is not None:
        threading.Timer(duration, stop.set).start()
    if not json_lines:
        con.print(f"watching {len(watcher.hosts)} node(s); Ctrl-C to stop", highlight=False)
    with stop_on_signals(stop):
        final = watcher.run(stop)
    if live:
        con.print()
    if not json_lines:
        con.print("stopped: " + ", ".join(
            f"{st.node} +{st.events} events in {st.batches} batches" for st in final.values()),
            highlight=False)


@click.command("status")
@nodes_option()
@json_option
@pass_ctx
def status_cmd(c: Ctx, nodes: tuple[str, ...], as_json: bool) -> None:
    """How fresh the mirror is, per node (watch, lag, last event, reconcile, refresh, gaps), and
    the alert conditions that hold now.

    The alerts are those of the shipped Prometheus rules (docs/alerts/xfleet.rules.yml), judged
    on the mirror with the same thresholds: pool capacity and its forecast, overcommit, health,
    errors, scrubs, stale or failing nodes, event gaps, failed or stuck moves, halted
    rollouts. A condition shows as soon as it holds (the rules' `for` durations need a
    history). With --json: {"nodes": [...], "alerts": [...]}.

    \b
    Examples:
      xfleet status
      xfleet status --node n1 --json
    """
    from xfleet.core.units import format_age
    from xfleet.mirror import query
    from xfleet.ops import alerts, capacity

    inv = c.inventory()
    names = [h.name for h in inv.select(list(nodes))]
    now = time.time()
    with c.reader() as conn:
        rows = query.status(conn, names, now=now)
        found = alerts.evaluate(conn, now=now, nodes=names,
                                forecasts=capacity.forecasts(conn, now=now, nodes=names))
    if as_json:
        echo_json({"nodes": rows, "alerts": [a.to_dict() for a in found]})
        return

    def age(v: float | None) -> str:
        return "-" if v is None else format_age(max(0.0, v))

    table = [{
        "node": r["node"], "state": r["state"], "watch": r["watch"] or "-",
        "lag": age(r["lag_seconds"]), "last_event": "-" if r["last_eid"] is None
        else f"eid {r['last_eid']}, {age(r['last_change_age'])} ago",
        "last_full": age(r["last_full_age"]), "reconciled": age(r["last_reconcile_age"]),
        "space_due": f"{r['space_due']:,}", "gaps": str(r["gaps"]),
        "last_gap": r["last_gap"] or "", "error": r["last_error"] or ""}
        for r in rows]
    cols = ["node", "state", "watch", "lag", "last_event", "last_full", "reconciled",
            "space_due", "gaps"]
    if any(r["last_gap"] for r in table):
        cols.append("last_gap")
    if any(r["error"] for r in table):
        cols.append("error")
    emit(cols, table, "table", footer="lag: time since the node's mirror was last confirmed "
         "current; space_due: rows whose space figures await a refresh")
    con = console()
    counts = ", ".join(f"{sum(a.severity == s for a in found)} {s}" for s in alerts.SEVERITIES
                       if any(a.severity == s for a in found))
    con.print(f"\nalerts: {counts or 'none'} (the conditions of docs/alerts/xfleet.rules.yml, "
              "shown as soon as they hold)", highlight=False)
    if found:
        cols = ["severity", "alert", "summary", "hint"]
        if any(a.since is not None for a in found):
            cols.insert(2, "since")
        emit(cols, [{"severity": a.severity, "alert": a.name, "summary": a.summary,
                     "hint": a.hint, "since": "-" if a.since is None
                     else f"{age(now - a.since)} ago"} for a in found], "table")
