"""The `xfleet` command line: a thin click face over the xfleet library."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import os
import select
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from xfleet import __version__
from xfleet.core.errors import UsageError, XfleetError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_INVENTORY = REPO_ROOT / "inventory" / "demo.yaml"


# ---------------------------------------------------------------------------------------------
# context: inventory and mirror are resolved lazily, so `ls --mirror X` needs no inventory


class Ctx:
    def __init__(self, inventory: str | None, mirror: str | None):
        self.inventory_path = inventory
        self.mirror_override = mirror
        self._inv: Any = None

    def inventory(self) -> Any:
        from xfleet.fleet import inventory as inv_mod

        if self._inv is None:
            path = self.inventory_path or inv_mod.default_path()
            if path is None:
                raise UsageError(
                    "no inventory given",
                    hint="pass --inventory FILE, set XFLEET_INVENTORY, or create "
                    "inventory/fleet.yaml (see inventory/example.yaml); "
                    "'xfleet demo' uses the built-in simulated fleet",
                )
            self._inv = inv_mod.load(path)
        return self._inv

    def mirror_path(self) -> Path:
        if self.mirror_override:
            return Path(self.mirror_override)
        return Path(self.inventory().mirror)

    def reader(self) -> Any:
        from xfleet import mirror

        return mirror.connect(self.mirror_path(), readonly=True)


pass_ctx = click.make_pass_decorator(Ctx)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=200)  # no wrapping in pipes/logs
    return console


# ---------------------------------------------------------------------------------------------
# output helpers


def _fmt(col: str, value: Any) -> str:
    from xfleet.core.units import format_size
    from xfleet.mirror.query import RATIO_COLUMNS, SIZE_COLUMNS

    if value is None:
        return "-"
    if col in SIZE_COLUMNS or col in ("size", "allocated", "free", "logical", "physical"):
        return format_size(value)
    if col in RATIO_COLUMNS:
        return f"{value:.2f}x"
    if col in ("creation", "synced_at", "last_success", "last_attempt"):
        return dt.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M")
    return str(value)


def _emit(
    columns: Sequence[str],
    rows: Iterable[dict[str, Any]],
    fmt: str,
    *,
    title: str | None = None,
    footer: str | None = None,
) -> int:
    """Write rows as a table, JSON array (streamed) or CSV. Returns the number of rows."""
    n = 0
    out = sys.stdout
    if fmt == "json":
        it = iter(rows)
        first = next(it, None)  # a failing query fails before the document starts
        JSON_OUT.emitted = True
        out.write("[")
        for row in (it if first is None else _chain_one(first, it)):
            out.write(("," if n else "") + "\n  " + json.dumps(row, default=str))
            n += 1
        out.write("\n]\n" if n else "]\n")
        return n
    if fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
            n += 1
        return n
    from rich.table import Table
    from rich.text import Text

    from xfleet.core.text import printable

    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for c in columns:
        numeric = c in _NUMERIC or c.endswith(("used", "size", "ratio", "referenced"))
        table.add_column(c.upper(), justify="right" if numeric else "left",
                         overflow="fold")
    for row in rows:
        # Text, not markup: a value such as '[/]' is a value; control characters are escaped
        table.add_row(*(Text(printable(_fmt(c, row.get(c)))) for c in columns))
        n += 1
    console = _console()
    console.print(table)
    if footer:
        console.print(footer, style="dim")
    return n


def _chain_one(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


_NUMERIC = frozenset({
    "volumes", "snapshots", "clones", "filesystems", "bookmarks", "datasets", "added", "removed",
    "commands", "seconds", "createtxg", "creation", "written", "refreservation", "free",
    "allocated", "capacity", "fragmentation", "count", "n", "fresh", "synced_at",
})


def _output_format(as_json: bool, as_csv: bool) -> str:
    if as_json and as_csv:
        raise UsageError("--json and --csv exclude each other")
    return "json" if as_json else "csv" if as_csv else "table"


# ---------------------------------------------------------------------------------------------
# JSON output: exactly one document on stdout on every exit path (docs/query.md)


class JsonOutput:
    """What this invocation's `--json` (or `--json-lines`) asked for, and what went out.

    `json_option` records the request while click parses the command line; a command prints
    its document with `echo_json` (or `_emit`), which records that it went out; `main()`
    prints the error document on every other exit path (an XfleetError, a usage error, Ctrl-C,
    SIGTERM, a bug) unless the command's own document went out already. A command that works
    on one object (a move, a rollout plan) may set `state`: a function returning that object's
    state, included in the error document.
    """

    def __init__(self) -> None:
        self.requested = False
        self.lines = False  # --json-lines: a stream of documents; an error is one more line
        self.emitted = False
        self.state: Callable[[], dict[str, Any] | None] | None = None
        self.in_main = False  # run by main(): the process is ours (signal handlers)

    def reset(self, *, in_main: bool) -> None:
        self.__init__()  # type: ignore[misc]  # one invocation at a time
        self.in_main = in_main


JSON_OUT = JsonOutput()


def _record_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """The callback of --json and --json-lines: note that a JSON document is due."""
    if value and not ctx.resilient_parsing:
        JSON_OUT.requested = True
        JSON_OUT.lines = JSON_OUT.lines or param.name == "json_lines"
        if JSON_OUT.in_main:
            _catch_sigterm()
    return value


def echo_json(doc: Any, *, indent: int | None = 2) -> None:
    """Print the command's JSON document on stdout (and note that it went out)."""
    JSON_OUT.emitted = True
    click.echo(json.dumps(doc, indent=indent, default=str))


def error_object(message: str, where: str | None = None,
                 hint: str | None = None) -> dict[str, Any]:
    return {"message": message, "where": where, "hint": hint}


def failed_doc(state: dict[str, Any], message: str, where: str | None = None,
               hint: str | None = None) -> dict[str, Any]:
    """`state` (a command's document, or {}) marked as a failure: `"ok": false` and the error
    object `{"message", "where", "hint"}` under `"error"` (it replaces an `error` text the
    state had, such as what a move journaled: pass that text as `message`)."""
    err = error_object(message, where, hint)
    return {"ok": False, "error": err,
            **{k: v for k, v in state.items() if k not in ("ok", "error")}}


json_option = click.option("--json", "as_json", is_flag=True, help="Output JSON.",
                           callback=_record_json)
csv_option = click.option("--csv", "as_csv", is_flag=True, help="Output CSV.")


FC = TypeVar("FC", bound=Callable[..., Any])


def where_option(help: str = "Condition like 'used>10G', 'compression=off', 'name~*db*' "
                 "(repeatable).") -> Callable[[FC], FC]:
    """`--where/-w EXPR` (repeatable): conditions in the query language of `xfleet ls`."""
    return click.option("--where", "-w", "where", multiple=True, metavar="EXPR", help=help)


# ---------------------------------------------------------------------------------------------
# the group


class _BrokenPipe(Exception):
    """A BrokenPipeError out of a command, carried past click (which would exit 1 in silence
    for any EPIPE): main() decides whether it was stdout (quiet) or anything else (an error)."""

    def __init__(self, error: BrokenPipeError):
        super().__init__(str(error))
        self.error = error


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            raise _BrokenPipe(exc) from exc


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  xfleet demo                                   # simulated 3-node fleet, then a tour
  xfleet --inventory inventory/lab.yaml sync    # mirror every node
  xfleet ls --type volume --sort used --desc --limit 20
  xfleet ls --where 'used>10G' --where compression=off --json
  xfleet show 'tank/t0001/vol-000042'
  xfleet sql "SELECT node, count(*) FROM datasets GROUP BY node"
""",
)
@click.option("--inventory", "-i", envvar="XFLEET_INVENTORY", metavar="PATH",
              help="Inventory YAML (env XFLEET_INVENTORY; default inventory/fleet.yaml).")
@click.option("--mirror", "-m", envvar="XFLEET_MIRROR", metavar="PATH",
              help="SQLite mirror (env XFLEET_MIRROR; default: the inventory's 'mirror').")
@click.version_option(__version__, prog_name="xfleet")
@click.pass_context
def cli(ctx: click.Context, inventory: str | None, mirror: str | None) -> None:
    """xfleet: the operator's toolkit for fleets of ZFS storage nodes.

    Reads come from a fast SQLite mirror of every zvol, snapshot and clone on every node;
    `xfleet sync` refreshes it.
    """
    ctx.obj = Ctx(inventory, mirror)
    JSON_OUT.reset(in_main=JSON_OUT.in_main)  # a new invocation (in-process runs: tests)


# ---------------------------------------------------------------------------------------------
# inventory


@cli.group("inventory")
def inventory_group() -> None:
    """Check, show and trust the nodes of the inventory."""


@inventory_group.command("check")
@json_option
@pass_ctx
def inventory_check(c: Ctx, as_json: bool) -> None:
    """Validate the inventory and list its nodes.

    \b
    Example:
      xfleet -i inventory/example.yaml inventory check
    """
    inv = c.inventory()  # loading validates everything, pinned host keys included
    rows = [
        {"node": h.name, "kind": h.kind,
         "address": f"{h.address}:{h.port}" if h.kind == "ssh" else "-",
         "pools": ",".join(h.pools) or "(all)", "groups": ",".join(h.groups),
         "host_key": "pinned" if h.host_key else ("known_hosts" if h.known_hosts else "trust store")
         if h.kind == "ssh" else "-"}
        for h in inv.hosts.values()
    ]
    if as_json:
        _emit([], rows, "json")
        return
    _emit(["node", "kind", "address", "pools", "groups", "host_key"], rows, "table",
          footer=f"{inv.path}: OK, {len(rows)} nodes, {len(inv.groups)} groups, "
          f"mirror {inv.mirror}")


@inventory_group.command("show")
@click.argument("host")
@json_option
@pass_ctx
def inventory_show(c: Ctx, host: str, as_json: bool) -> None:
    """Show a node's effective settings and where each value came from.

    Settings the inventory leaves unset are filled from ~/.ssh/config.

    \b
    Example:
      xfleet inventory show n1
    """
    from dataclasses import fields

    from xfleet.remote.ssh_config import apply_ssh_config

    inv = c.inventory()
    (h,) = inv.select([host]) if host in inv.hosts else (None,)
    if h is None:
        inv.select([host])  # raises a helpful error for unknown names
        raise UsageError(f"{host!r} is a group, not a host",
                         hint=f"its hosts: {', '.join(inv.groups.get(host, []))}")
    if h.kind == "ssh":
        apply_ssh_config(h)
    rows = []
    for f in fields(h):
        if f.name in ("sources", "name"):
            continue
        val = getattr(h, f.name)
        if isinstance(val, (tuple, list)):
            val = ",".join(map(str, val))
        elif isinstance(val, dict):
            val = json.dumps(val) if val else ""
        rows.append({"setting": f.name, "value": "" if val is None else str(val),
                     "source": h.sources.get(f.name, "default")})
    if as_json:
        _emit([], rows, "json")
        return
    _emit(["setting", "value", "source"], rows, "table", title=f"{h.name}")


@inventory_group.command("trust")
@click.argument("host")
@click.option("--replace", is_flag=True, help="Replace a different key already trusted.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask; trust the key shown.")
@pass_ctx
def inventory_trust(c: Ctx, host: str, replace: bool, yes: bool) -> None:
    """Fetch a node's SSH host key, show its fingerprint and record it as trusted.

    Unknown host keys are always rejected; this is the explicit opt-in. Compare the
    fingerprint with the node's own (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)
    before you accept.

    \b
    Example:
      xfleet inventory trust n1
    """
    from xfleet.remote.hostkeys import TRUST_STORE
    from xfleet.remote.ssh import SSHTransport, fetch_host_key, fingerprint, record_trust

    inv = c.inventory()
    if host not in inv.hosts:
        inv.select([host])
    h = inv.hosts[host]
    if h.kind != "ssh":
        raise UsageError(f"{host} is a {h.kind} node; only ssh nodes have host keys")
    key = fetch_host_key(h, trust_store=inv.trust_store)
    click.echo(f"{host} ({h.address}:{h.port}) presents {key.get_name()} {fingerprint(key)}")
    _confirm(yes, "Trust this key?", "trust a key",
             hint="run interactively, or pass --yes once you checked the fingerprint")
    added = record_trust(inv.trust_store, h, key, replace=replace)
    click.echo(f"{'recorded in' if added else 'already trusted in'} {inv.trust_store}")
    decision = SSHTransport(h, trust_store=inv.trust_store).host_keys()
    if decision.source not in (None, TRUST_STORE) and not any(
            k.asbytes() == key.asbytes() for k in decision.keys):
        click.echo(f"warning: {decision.source} lists another key for {host} and outranks "
                   "the trust store: update it, or connections stay refused", err=True)


# ---------------------------------------------------------------------------------------------
# sync


@cli.command("sync")
@click.option("--node", "-n", "nodes", multiple=True, metavar="NODE|GROUP",
              help="Only these nodes or groups (repeatable). Default: all.")
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
    report = _run_sync(inv, path, nodes, parallel, quiet=as_json, full=full,
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
        _sync_summary(report)
    if not report.ok:
        sys.exit(1)


def _run_sync(inv: Any, path: Path, nodes: Sequence[str], parallel: int | None,
              quiet: bool, **how: Any) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from xfleet.ops.sync import sync

    console = _console(stderr=True)
    if quiet or not console.is_terminal:
        return sync(inv, path, list(nodes), parallel=parallel, **how)
    with Progress(
        TextColumn("[bold]{task.fields[node]:<12}"),
        TextColumn("{task.fields[phase]:<10}"),
        BarColumn(bar_width=None, pulse_style="cyan"),
        TextColumn("{task.completed:>10,.0f} rows"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as prog:
        tasks: dict[str, Any] = {}

        def tick(node: str, phase: str, rows: int) -> None:
            if node not in tasks:
                tasks[node] = prog.add_task("", total=None, node=node, phase=phase)
            done = phase in ("done", "failed")
            prog.update(tasks[node], completed=rows, phase=phase,
                        total=max(rows, 1) if done else None)

        return sync(inv, path, list(nodes), parallel=parallel, progress=tick, **how)


def _sync_summary(report: Any) -> None:
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
    _emit(cols, rows, "table",
          footer=f"{len(report.nodes) - len(report.failed)}/{len(report.nodes)} nodes synced "
          f"in {report.seconds:.1f}s" + (" — failed nodes keep their last-known rows, "
                                         "marked stale" if not report.ok else ""))


@cli.command("watch")
@click.option("--node", "-n", "nodes", multiple=True, metavar="NODE|GROUP",
              help="Only these nodes or groups (repeatable). Default: all.")
@click.option("--refresh-interval", type=click.FloatRange(0.5), default=30.0, show_default=True,
              metavar="SECONDS", help="How often to re-check each node (queue, gaps, space).")
@click.option("--reconcile-interval", type=click.FloatRange(1.0), default=3600.0,
              show_default=True, metavar="SECONDS", help="How often to reconcile structure.")
@click.option("--space-refresh-interval", type=click.FloatRange(0.0), metavar="SECONDS",
              help="Seconds between space refreshes of a node (default: the inventory's "
              "space_refresh_interval, 300).")
@click.option("--duration", type=click.FloatRange(0.0), metavar="SECONDS",
              help="Stop after this long (default: until SIGINT/SIGTERM).")
@click.option("--json-lines", "json_lines", is_flag=True, callback=_record_json,
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
    import threading

    from xfleet.ops.watch import NodeWatch, Watcher

    inv = c.inventory()
    if space_refresh_interval is not None:
        inv.space_refresh_interval = space_refresh_interval
    path = c.mirror_path()
    stop = threading.Event()
    console = _console(stderr=True)
    live = console.is_terminal and not json_lines
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
                console.print(f"\r{line(watcher)}"[: console.width + 1], end="",
                              soft_wrap=True, highlight=False)
            elif st.error or st.state.startswith(("following", "stopped", "reconnecting")):
                console.print(f"{st.node}: {st.state}" + (f" ({st.error})" if st.error else ""),
                              highlight=False, markup=False)  # an error quotes the node

    watcher = Watcher(inv, path, list(nodes), refresh_interval=refresh_interval,
                      reconcile_interval=reconcile_interval, on_change=changed)

    if duration is not None:
        threading.Timer(duration, stop.set).start()
    if not json_lines:
        console.print(f"watching {len(watcher.hosts)} node(s); Ctrl-C to stop", highlight=False)
    with _stop_on_signals(stop):
        final = watcher.run(stop)
    if live:
        console.print()
    if not json_lines:
        console.print("stopped: " + ", ".join(
            f"{st.node} +{st.events} events in {st.batches} batches" for st in final.values()),
            highlight=False)


@cli.command("status")
@click.option("--node", "-n", "nodes", multiple=True, metavar="NODE|GROUP",
              help="Only these nodes or groups (repeatable). Default: all.")
@json_option
@pass_ctx
def status_cmd(c: Ctx, nodes: tuple[str, ...], as_json: bool) -> None:
    """How fresh the mirror is, per node: watch, lag, last event, reconcile, refresh, gaps.

    \b
    Examples:
      xfleet status
      xfleet status --node n1 --json
    """
    from xfleet.mirror import query

    inv = c.inventory()
    conn = c.reader()
    rows = query.status(conn, [h.name for h in inv.select(list(nodes))], now=time.time())
    if as_json:
        echo_json(rows)
        return

    from xfleet.core.units import format_age

    def age(v: Any) -> str:
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
    _emit(cols, table, "table", footer="lag: time since the node's mirror was last confirmed "
          "current; space_due: rows whose space figures await a refresh")


# ---------------------------------------------------------------------------------------------
# moves


def _confirm(yes: bool, question: str, what: str, *, hint: str = "pass --yes") -> None:
    """Ask before changing something that matters; on a pipe, refuse unless --yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"refusing to {what} without confirmation", hint=hint)
    click.confirm(question, abort=True, err=JSON_OUT.requested)


def _move_line(m: Any) -> str:
    from xfleet.core.units import format_age

    pct = f" {100 * m.progress:5.1f}%" if m.progress is not None else ""
    done = f" {m.bytes_done / 2**20:,.0f}/{(m.bytes_total or 0) / 2**20:,.0f} MiB" \
        if m.bytes_total else ""
    rate = f" {m.rate / 2**20:,.1f} MiB/s" if m.rate and m.eta is not None else ""
    eta = f" ETA {format_age(m.eta)}" if m.eta is not None else ""
    return f"move {m.id} {m.state}{pct}{done}{rate}{eta} {m.step or ''}"


def _move_doc(m: Any) -> dict[str, Any]:
    """A move's JSON document: its state, `"ok"` (done), and for a move that did not get
    done, why (`error`: the error object, its message the text the move journaled)."""
    doc = {"ok": m.state == "done", **m.to_dict()}
    if m.state == "done":
        return doc
    hint = (f"xfleet moves resume {m.id}" if m.state in ("failed", "paused") else
            f"xfleet moves show {m.id}")
    return failed_doc(doc, m.error or f"move {m.id} ended {m.state}",
                      where=f"{m.source_node} -> {m.target_node}", hint=hint)


def _run_move(c: Ctx, move_id: int, as_json: bool) -> None:
    import threading

    from xfleet.fleet.connections import Connections
    from xfleet.ops import moves

    inv = c.inventory()
    path = c.mirror_path()
    console = _console(stderr=True)
    live = console.is_terminal and not as_json
    stop = threading.Event()

    last = [0.0]

    def state() -> dict[str, Any]:  # for the error document, whatever ends the command
        from xfleet import mirror

        conn = mirror.connect(path, readonly=True)
        try:
            return _move_doc(moves.get(conn, move_id))
        finally:
            conn.close()

    JSON_OUT.state = state

    def tick(m: Any) -> None:
        if live and time.monotonic() - last[0] > 0.5:
            last[0] = time.monotonic()
            console.print(f"\r{_move_line(m)}"[: console.width], end="", highlight=False)

    with _stop_on_signals(stop), Connections(inv.hosts, trust_store=inv.trust_store,
                                             state_dir=inv.state_dir) as conns:
        m = moves.Runner(inv, path, conns, progress=tick, stop=stop).run(move_id)
    if live:
        console.print()
    if as_json:
        echo_json(_move_doc(m))
    else:
        click.echo(_move_line(m) + (f"\n  error: {m.error}" if m.error else ""))
        if m.state == "done":
            click.echo(f"  {m.target_node}:{m.target_volume} is the volume now; the source is "
                       f"kept as {m.retired_as} (read-only, held): xfleet moves retire {m.id} "
                       "--destroy when you no longer need it")
    if m.state not in ("done",):
        sys.exit(1)


@cli.command("move")
@click.argument("volume")
@click.option("--to", "target", required=True, metavar="NODE[/POOL]",
              help="Target node (and pool; default: the same pool name, else its first).")
@click.option("--from", "source", metavar="NODE", help="Source node, if the name is ambiguous.")
@click.option("--verify", type=click.Choice(["sampled", "full"]), default="sampled",
              show_default=True, help="Content check before anything is retired.")
@click.option("--compression", metavar="ALGO",
              help="Compression on the target (default: the source's; another value sends "
              "uncompressed so the target recompresses).")
@click.option("--bwlimit", metavar="RATE", help="Bandwidth limit, e.g. 200M (bytes/s).")
@click.option("--direct", is_flag=True,
              help="Stream node to node (the source SSHes to the target's private_address; "
              "needs trust between the nodes) instead of relaying through this host.")
@click.option("--catchup-bytes", metavar="SIZE", default="64M", show_default=True,
              help="Catch-up rounds continue while more than this was written since the last "
              "snapshot.")
@click.option("--dry-run", "-n", is_flag=True, help="Print the plan and the commands only.")
@json_option
@pass_ctx
def move_cmd(c: Ctx, volume: str, target: str, source: str | None, verify: str,
             compression: str | None, bwlimit: str | None, direct: bool, catchup_bytes: str,
             dry_run: bool, as_json: bool) -> None:
    """Move a volume to another node: resumable, verified zfs send/receive with cutover.

    Base copy, catch-up rounds, then cutover (the nodes' pre/post_cutover hooks), final
    incremental, verification (snapshot guid and content), and the source kept read-only
    under a new name until `xfleet moves retire ID --destroy`. Ctrl-C stops it; `xfleet
    moves resume ID` continues from where it was (partial streams resume from ZFS's receive
    token).

    \b
    Examples:
      xfleet move tank/t0001/vol-000001 --to n2 --dry-run
      xfleet move tank/db/pg-main --to node7/fast --verify full --bwlimit 300M
      xfleet move tank/db/pg-main --to node7 --direct
    """
    from xfleet.core.units import parse_size
    from xfleet.ops import moves

    inv = c.inventory()
    opts: dict[str, Any] = {"verify": verify, "catchup_bytes": parse_size(catchup_bytes)}
    if compression:
        opts["compression"] = compression
    if bwlimit:
        opts["bwlimit"] = parse_size(bwlimit)
    if direct:
        opts["direct"] = True
    from xfleet import mirror

    conn = mirror.connect(c.mirror_path())
    try:
        p = moves.plan_move(inv, conn, volume, target, source_node=source, options=opts)
        if dry_run:
            from xfleet.fleet.connections import Connections

            # read-only checks on both nodes: encryption, block size, target pool features
            with Connections(inv.hosts, trust_store=inv.trust_store,
                             state_dir=inv.state_dir) as conns:
                moves.apply_preflight(inv, p, moves.preflight(
                    conns.get(p.source_node), conns.get(p.target_node), p.volume,
                    p.target_volume, p.send_flags, p.receive_properties))
            if as_json:
                echo_json(p.to_dict())
                return
            click.echo(f"move {p.volume} from {p.source_node} to {p.target_node}:"
                       f"{p.target_volume}")
            click.echo(f"  needs {p.needed_bytes / 2**30:,.2f} GiB free, target has "
                       + (f"{p.target_free / 2**30:,.2f} GiB" if p.target_free is not None
                          else "unknown"))
            for note in p.notes:
                click.echo(f"  note: {note}")
            click.echo("  commands:")
            for cmd in p.commands:
                click.echo(f"    {cmd}")
            return
        m = moves.create(inv, conn, p, opts)
    finally:
        conn.close()
    if not as_json:
        click.echo(f"move {m.id}: {m.volume} ({m.source_node}) -> {m.target_node}:"
                   f"{m.target_volume}")
    _run_move(c, m.id, as_json)


@cli.command("drain")
@click.argument("node")
@click.option("--to", "targets", multiple=True, metavar="NODE",
              help="Target nodes (repeatable; default: every other node).")
@click.option("--parallel", "-p", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Moves at once (each node's max_streams still applies).")
@click.option("--bwlimit", metavar="RATE",
              help="Bandwidth limit for the whole drain, e.g. 500M (bytes/s); the nodes' "
              "bwlimit and the fleet's move_bwlimit still apply.")
@click.option("--direct", is_flag=True,
              help="Stream node to node instead of relaying through this host (as in "
              "`xfleet move --direct`).")
@click.option("--dry-run", "-n", is_flag=True, help="Print the plan only.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before starting.")
@json_option
@pass_ctx
def drain_cmd(c: Ctx, node: str, targets: tuple[str, ...], parallel: int, bwlimit: str | None,
              direct: bool, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Move every volume off a node, balancing the targets by free space.

    Prints the plan (volume, target, bytes), then runs the moves in waves of --parallel with
    the same journal as `xfleet move` (`xfleet moves list` shows them; a failed one is
    resumed with `xfleet moves resume ID`). Volumes that cannot move are listed with why.

    \b
    Examples:
      xfleet drain n3 --dry-run
      xfleet drain n3 --to n1 --to n2 --parallel 2 --yes
    """
    from concurrent.futures import ThreadPoolExecutor

    from xfleet import mirror
    from xfleet.fleet.connections import Connections
    from xfleet.ops import moves

    inv = c.inventory()
    path = c.mirror_path()
    conn = mirror.connect(path)
    try:
        opts = {"direct": True} if direct else {}
        plans, refused = moves.plan_drain(inv, conn, node, targets, options=opts)
        rows = [{"volume": p.volume, "target": f"{p.target_node}:{p.target_volume}",
                 "bytes": p.needed_bytes} for p in plans]
        refused_rows = [{"volume": v, "why": w} for v, w in refused]
        if as_json and (dry_run or not plans):
            echo_json({"moves": rows, "refused": refused_rows})
            return
        if not as_json:
            _emit(["volume", "target", "bytes"], rows, "table",
                  footer=f"{len(plans)} move(s) planned off {node}")
        for v, w in refused:
            click.echo(f"cannot move {v}: {w}", err=True)
        if dry_run or not plans:
            return
        _confirm(yes, f"Start {len(plans)} move(s) off {node}?", "start a drain")
        ids = [moves.create(inv, conn, p, opts).id for p in plans]
    finally:
        conn.close()
    from xfleet.core.units import parse_size
    from xfleet.remote.relay import TokenBucket

    limits = [TokenBucket(parse_size(bwlimit))] if bwlimit else []
    with Connections(inv.hosts, trust_store=inv.trust_store, state_dir=inv.state_dir) as conns:
        runner = moves.Runner(inv, path, conns, limits=limits)
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            done = list(pool.map(runner.run, ids))
    ok = not refused and all(m.state == "done" for m in done)
    if as_json:
        doc: dict[str, Any] = {"ok": ok, "moves": [_move_doc(m) for m in done],
                               "refused": refused_rows}
        if not ok:
            bad = [m for m in done if m.state != "done"]
            doc = failed_doc(doc, f"{len(bad)} of {len(done)} move(s) off {node} did not "
                             f"finish, {len(refused)} volume(s) could not move"
                             + (f"; first: move {bad[0].id}: {bad[0].error or bad[0].state}"
                                if bad else ""), where=node,
                             hint="xfleet moves list --active; xfleet moves resume ID")
        echo_json(doc)
    else:
        for m in done:
            click.echo(_move_line(m) + (f" — {m.error}" if m.error else ""))
    if not ok:
        sys.exit(1)


@cli.group("moves")
def moves_group() -> None:
    """List, show, pause, resume, abort and retire volume moves.

    \b
    Examples:
      xfleet moves list
      xfleet moves show 3
      xfleet moves resume 3
      xfleet moves pause 3
      xfleet moves abort 3 --yes
      xfleet moves retire 3 --destroy --yes
    """


@moves_group.command("list")
@click.option("--active", is_flag=True, help="Only moves not finished.")
@json_option
@pass_ctx
def moves_list(c: Ctx, active: bool, as_json: bool) -> None:
    """All moves, newest first."""
    from xfleet.ops import moves

    conn = c.reader()
    rows = [m.to_dict() for m in moves.listing(conn, active_only=active)]
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        r["progress"] = "-" if r["progress"] is None else f"{100 * r['progress']:.0f}%"
        r["target"] = f"{r['target_node']}:{r['target_volume']}"
    _emit(["id", "state", "volume", "source_node", "target", "progress", "rounds", "step",
           "error"], rows, "table")


@moves_group.command("show")
@click.argument("move_id", type=int)
@json_option
@pass_ctx
def moves_show(c: Ctx, move_id: int, as_json: bool) -> None:
    """One move: its state, flags, verification and log."""
    from xfleet.ops import moves

    conn = c.reader()
    m = moves.get(conn, move_id)
    entries = moves.log(conn, move_id)
    if as_json:
        echo_json({**m.to_dict(), "log": entries})
        return
    click.echo(_move_line(m))
    for k in ("volume", "source_node", "target_node", "target_volume", "send_flags",
              "receive_properties", "snapshots", "received", "verified", "retired_as",
              "error"):
        click.echo(f"  {k}: {getattr(m, k)}")
    click.echo("  log:")
    for e in entries:
        stamp = dt.datetime.fromtimestamp(e["at"]).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"    {stamp} [{e['state']}] {e['message']}")


@moves_group.command("resume")
@click.argument("move_id", type=int)
@json_option
@pass_ctx
def moves_resume(c: Ctx, move_id: int, as_json: bool) -> None:
    """Continue a move from its last completed step (after a failure, Ctrl-C or a crash)."""
    _run_move(c, move_id, as_json)


@moves_group.command("pause")
@click.argument("move_ids", type=int, nargs=-1, required=True, metavar="ID...")
@json_option
@pass_ctx
def moves_pause(c: Ctx, move_ids: tuple[int, ...], as_json: bool) -> None:
    """Pause moves before their cutover; `xfleet moves resume ID` continues each one.

    A move being run stops its stream within a second or two (the receive keeps its resume
    token, so nothing sent is lost); a move nobody runs is marked paused at once. A move whose
    cutover has begun cannot pause: it finishes on its own.

    \b
    Examples:
      xfleet moves pause 12
      xfleet moves pause 12 13 14 --json
    """
    from xfleet.ops import moves

    out = [moves.pause(c.mirror_path(), i) for i in move_ids]
    if as_json:
        echo_json([m.to_dict() for m in out])
        return
    for m in out:
        click.echo(_move_line(m))


@moves_group.command("abort")
@click.argument("move_id", type=int)
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@pass_ctx
def moves_abort(c: Ctx, move_id: int, yes: bool) -> None:
    """Abort a move before its cutover: its copy on the target and its snapshots are removed;
    the source volume is untouched."""
    from xfleet.fleet.connections import Connections
    from xfleet.ops import moves

    inv = c.inventory()
    _confirm(yes, f"Abort move {move_id} and destroy its copy on the target?", "abort a move")
    with Connections(inv.hosts, trust_store=inv.trust_store, state_dir=inv.state_dir) as conns:
        m = moves.abort(inv, c.mirror_path(), conns, move_id)
    click.echo(_move_line(m))


@moves_group.command("retire")
@click.argument("move_id", type=int)
@click.option("--destroy", is_flag=True, required=True,
              help="Destroy the retired source (required: this is the only action here).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@pass_ctx
def moves_retire(c: Ctx, move_id: int, destroy: bool, yes: bool) -> None:
    """Destroy a finished move's source (kept read-only and held since the move)."""
    from xfleet.fleet.connections import Connections
    from xfleet.ops import moves

    inv = c.inventory()
    conn = c.reader()
    m = moves.get(conn, move_id)
    conn.close()
    _confirm(yes, f"Destroy {m.source_node}:{m.retired_as} (and its snapshots)?",
             "destroy data")
    with Connections(inv.hosts, trust_store=inv.trust_store, state_dir=inv.state_dir) as conns:
        m = moves.retire(inv, c.mirror_path(), conns, move_id)
    click.echo(f"move {m.id}: {m.retired_as} destroyed on {m.source_node}")


# ---------------------------------------------------------------------------------------------
# ls / show / stats / sql


@cli.command("ls")
@click.argument("pattern", required=False)
@click.option("--node", "-n", "nodes", multiple=True, help="Only on these nodes.")
@click.option("--pool", "pools", multiple=True, help="Only in these pools.")
@click.option("--type", "-t", "types", multiple=True,
              help="volume, snapshot, filesystem, bookmark or clone (repeatable).")
@click.option("--tenant", "tenants", multiple=True, help="Only these tenants.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Only on nodes with this inventory label.")
@click.option("--origin", metavar="SNAPSHOT|DATASET",
              help="Clones of this snapshot (or of any snapshot of this dataset).")
@where_option()
@click.option("--sort", "-s", metavar="COLUMN", help="Sort by a column; '-used' sorts descending.")
@click.option("--desc", is_flag=True, help="Sort descending.")
@click.option("--limit", "-l", type=click.IntRange(0), metavar="N",
              help="At most N rows (0: all). Default 100 for tables, all for --json/--csv.")
@click.option("--columns", "-o", metavar="COL,COL", help="Columns to show.")
@click.option("--count", "count_only", is_flag=True, help="Only count the matching rows.")
@json_option
@csv_option
@pass_ctx
def ls_cmd(c: Ctx, pattern: str | None, nodes: tuple[str, ...], pools: tuple[str, ...],
           types: tuple[str, ...], tenants: tuple[str, ...], labels: tuple[str, ...],
           origin: str | None, where: tuple[str, ...], sort: str | None, desc: bool,
           limit: int | None, columns: str | None, count_only: bool, as_json: bool,
           as_csv: bool) -> None:
    """List datasets from the mirror (never waits on zfs list).

    PATTERN matches names: a glob if it has * ? [, else a substring.

    \b
    Examples:
      xfleet ls --node n1 --type volume --sort used --desc --limit 50
      xfleet ls 'tank/t0042/*' --type snapshot
      xfleet ls --where 'used>100G' --where compression=off --csv > big-uncompressed.csv
      xfleet ls --origin tank/t0001/vol-000001 --json     # its clones
    """
    from xfleet.mirror import query

    fmt = _output_format(as_json, as_csv)
    cols = tuple(x.strip() for x in columns.split(",")) if columns else \
        query.DEFAULT_LS_COLUMNS
    default_limit = fmt == "table" and limit is None
    eff_limit = 100 if default_limit else (limit or None)
    tenant_prop = "xfleet:tenant"
    sel = query.Selection(nodes=nodes, pools=pools, types=types, tenants=tenants, labels=labels,
                          origin=origin, pattern=pattern, where=where, sort=sort, desc=desc,
                          limit=eff_limit, columns=cols, tenant_property=tenant_prop)
    sel.sql()  # validate before touching the mirror
    conn = c.reader()
    try:
        if count_only:
            n, capped = query.count(conn, sel, cap=10_000_000)
            if fmt == "json":
                echo_json({"count": n, "capped": capped}, indent=None)
            else:
                click.echo(f"{n}{'+' if capped else ''}")
            return
        shown = _emit([query._column(x) for x in cols], query.ls(conn, sel), fmt)
        if fmt == "table":
            if shown == 0:
                _console().print("no matching datasets", style="dim")
            elif default_limit and shown == eff_limit:
                total, capped = query.count(conn, sel, cap=1_000_000)
                _console().print(
                    f"first {shown} of {total:,}{'+' if capped else ''} rows "
                    "(use --limit N, or --limit 0 for all)", style="dim")
    finally:
        conn.close()


@cli.command("show")
@click.argument("name")
@click.option("--node", "-n", help="The node, when the name exists on several.")
@json_option
@pass_ctx
def show_cmd(c: Ctx, name: str, node: str | None, as_json: bool) -> None:
    """Show one dataset: properties, placement, snapshots, clones and origin chain.

    \b
    Example:
      xfleet show tank/t0001/vol-000001
    """
    from rich.tree import Tree

    from xfleet.mirror import query

    conn = c.reader()
    try:
        d = query.show(conn, name, node)
    finally:
        conn.close()
    if as_json:
        echo_json({"dataset": d.row, "node": d.node, "snapshots": d.snapshots,
                   "clones": d.clones, "origin_chain": d.origin_chain,
                   "children": d.children})
        return
    console = _console()
    r = d.row
    console.print(f"[bold]{r['name']}[/]  ({r['type']} on [bold]{r['node']}[/], pool {r['pool']})")
    props = [{"property": k, "value": _fmt(k, v)} for k, v in r.items()
             if k not in ("id", "name", "sync_run", "user_properties")]
    for k, v in (r.get("user_properties") or {}).items():
        props.append({"property": k, "value": str(v)})
    _emit(["property", "value"], props, "table")
    n = d.node
    console.print(f"\n[bold]placement[/]: node {n.get('name')} ({n.get('kind', '?')}"
                  f"{', ' + n['address'] if n.get('address') else ''}), labels "
                  f"{n.get('labels') or {}}; mirror data from "
                  f"{_fmt('synced_at', r.get('synced_at'))}"
                  f"{' [red](node stale)[/]' if n.get('stale') else ''}")
    if d.origin_chain:
        tree = Tree("[bold]origin chain[/]")
        branch = tree
        for link in d.origin_chain:
            branch = branch.add(f"{link['snapshot']}" + ("" if link["present"] else
                                                         " [red](not in mirror)[/]"))
        console.print(tree)
    tree = Tree(f"[bold]{r['name']}[/]")
    by_snap: dict[str, list[dict[str, Any]]] = {}
    for cl in d.clones:
        by_snap.setdefault(cl["origin"], []).append(cl)
    for s in d.snapshots:
        node_s = tree.add(f"@{s['name'].split('@', 1)[1]}  written {_fmt('written', s['written'])}"
                          f"  used {_fmt('used', s['used'])}")
        for cl in by_snap.get(s["name"], []):
            node_s.add(f"[cyan]clone[/] {cl['name']}  used {_fmt('used', cl['used'])}")
    if "@" in r["name"]:
        for cl in d.clones:
            tree.add(f"[cyan]clone[/] {cl['name']}")
    console.print(tree if (d.snapshots or d.clones) else "no snapshots or clones")
    if d.children:
        console.print(f"{d.children} child datasets")


@cli.command("stats")
@click.option("--node", "-n", "nodes", multiple=True, help="Only these nodes.")
@json_option
@csv_option
@pass_ctx
def stats_cmd(c: Ctx, nodes: tuple[str, ...], as_json: bool, as_csv: bool) -> None:
    """Per node and pool: counts by type, logical vs physical bytes, capacity, freshness.

    \b
    Example:
      xfleet stats --json
    """
    from xfleet.core.units import format_age
    from xfleet.mirror import query

    fmt = _output_format(as_json, as_csv)
    conn = c.reader()
    try:
        rows = query.stats(conn, nodes)
    finally:
        conn.close()
    for r in rows:
        r["fresh"] = ("STALE " if r["stale"] else "") + format_age(r["age_seconds"])
    cols = ["node", "pool", "health", "volumes", "snapshots", "clones", "filesystems",
            "logicalused", "used", "compressratio", "size", "allocated", "free", "fresh"]
    if fmt == "table":
        for r in rows:
            r["compressratio"] = r["compressratio"] or None
    _emit(cols if fmt != "json" else [], rows, fmt)


@cli.command("sql")
@click.argument("query_text", required=False, metavar="SQL")
@click.option("--saved", metavar="NAME", help="Run a saved query from queries/.")
@click.option("--list", "list_saved", is_flag=True, help="List the saved queries.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A named parameter for :NAME in the query (repeatable).")
@json_option
@csv_option
@pass_ctx
def sql_cmd(c: Ctx, query_text: str | None, saved: str | None, list_saved: bool,
            params: tuple[str, ...], as_json: bool, as_csv: bool) -> None:
    """Run read-only SQL on the mirror (tables: docs/mirror.md).

    \b
    Examples:
      xfleet sql "SELECT node, type, count(*) FROM datasets GROUP BY 1, 2"
      xfleet sql --list
      xfleet sql --saved biggest-volumes --param limit=10
    """
    from xfleet.mirror import query

    fmt = _output_format(as_json, as_csv)
    dirs = [Path("queries"), REPO_ROOT / "queries"]
    if c.inventory_path:
        dirs.insert(1, Path(c.inventory_path).resolve().parent.parent / "queries")
    if list_saved:
        rows = [{"name": q.name, "description": q.description, "path": str(q.path)}
                for q in query.saved_queries(dirs).values()]
        _emit(["name", "description"], rows, fmt)
        return
    if saved:
        queries = query.saved_queries(dirs)
        if saved not in queries:
            raise UsageError(f"no saved query {saved!r}",
                             hint=f"saved queries: {', '.join(queries) or 'none'}")
        query_text = queries[saved].sql
    if not query_text:
        raise UsageError("give a query, --saved NAME or --list")
    bound: dict[str, Any] = {}
    for p in params:
        k, sep, v = p.partition("=")
        if not sep:
            raise UsageError(f"--param {p!r} is not NAME=VALUE")
        bound[k] = v
        if v.lstrip("-").isdigit():
            number = int(v)
            if not -(2**63) <= number < 2**63:
                raise UsageError(f"--param {k}: {v[:40]} is out of range for SQLite "
                                 "(a 64-bit integer)", hint="pass a smaller number, or "
                                 "compare as text with a quoted parameter in the query")
            bound[k] = number
    conn = c.reader()
    try:
        names, cursor = query.run_sql(conn, query_text, bound)
        _emit(names, (dict(zip(names, r, strict=True)) for r in cursor), fmt)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# tui


@cli.command("tui")
@click.option("--write", is_flag=True,
              help="Allow actions that change the fleet (each asks for a typed confirmation).")
@pass_ctx
def tui_cmd(c: Ctx, write: bool) -> None:
    """Open the SRE dashboard over the mirror (read-only by default).

    Keys: ':' command mode (:nodes :vols :ops :comp), '/' filter, '?' help, 'enter' drill
    down, 'esc' back, 'q' quit. See docs/tui.md.

    \b
    Example:
      xfleet -i inventory/demo.yaml tui
    """
    from xfleet import mirror, tui

    inv = None
    try:
        inv = c.inventory()
    except UsageError:
        if not c.mirror_override:
            raise
    path = c.mirror_path()
    mirror.connect(path, readonly=True).close()  # a missing mirror fails before the screen
    tui.run(path, inventory=inv, write=write)


# ---------------------------------------------------------------------------------------------
# demo


@cli.command("demo")
@click.option("--no-sync", is_flag=True, help="Do not rebuild the mirror if it exists.")
@click.option("--no-tui", is_flag=True, help="Do not open the dashboard afterwards.")
@click.pass_context
def demo_cmd(ctx: click.Context, no_sync: bool, no_tui: bool) -> None:
    """Build the mirror of the built-in simulated fleet, print a tour, open the dashboard.

    The demo fleet (inventory/demo.yaml) is 3 simulated nodes with 100,000 volumes each,
    plus snapshots and clones. The dashboard opens only on a terminal.

    \b
    Example:
      xfleet demo --no-tui
    """
    from xfleet.fleet import inventory as inv_mod

    c: Ctx = ctx.obj
    path = Path(c.inventory_path) if c.inventory_path else DEMO_INVENTORY
    inv = inv_mod.load(path)
    c._inv = inv
    c.inventory_path = str(path)
    mpath = c.mirror_path()
    console = _console()
    console.print(f"[bold]xfleet demo[/]: {len(inv.hosts)} simulated nodes from {path}")
    if not (no_sync and mpath.exists()):
        report = _run_sync(inv, mpath, (), None, quiet=False)
        _sync_summary(report)
        if not report.ok:
            sys.exit(1)
    ctx.invoke(stats_cmd, nodes=(), as_json=False, as_csv=False)
    rel = os.path.relpath(path)
    first = next(iter(inv.hosts))
    console.print(f"""
[bold]Try these[/] (the mirror is {mpath}):
  .venv/bin/xfleet -i {rel} ls --node {first} --type volume --sort used --desc --limit 10
  .venv/bin/xfleet -i {rel} ls --where 'used>100G' --where compression=off --count
  .venv/bin/xfleet -i {rel} ls --type clone --limit 5
  .venv/bin/xfleet -i {rel} show --node {first} "$(.venv/bin/xfleet -i {rel} ls --node {first} \
--type clone --limit 1 --csv -o origin | tail -1)"
  .venv/bin/xfleet -i {rel} stats
  .venv/bin/xfleet -i {rel} sql --list
  .venv/bin/xfleet -i {rel} sql "SELECT tenant, count(*) n, sum(used) FROM datasets \
WHERE type='volume' GROUP BY tenant ORDER BY 3 DESC LIMIT 5"
  .venv/bin/xfleet -i {rel} tui
""", soft_wrap=True)
    if not no_tui and sys.stdin.isatty() and sys.stdout.isatty():
        from xfleet import tui

        console.print("opening the dashboard (q quits, ? shows the keys) ...")
        tui.run(mpath, inventory=inv)


# ---------------------------------------------------------------------------------------------
# lab


@cli.group("lab")
def lab_group() -> None:
    """A lab of real OpenZFS storage nodes (qemu VMs) to test and rehearse against.

    \b
    Example:
      xfleet lab build && xfleet lab up --nodes 2
      xfleet -i inventory/lab.yaml sync && xfleet -i inventory/lab.yaml ls
      xfleet lab down
    """


def _say(msg: str) -> None:
    click.echo(msg, err=True)


@lab_group.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if the cached image exists.")
def lab_build(force: bool) -> None:
    """Build (or reuse) the cached Debian 12 + OpenZFS 2.3 image.

    \b
    Example:
      xfleet lab build
    """
    from xfleet import lab

    click.echo(str(lab.build(force=force, progress=_say)))


@lab_group.command("up")
@click.option("--nodes", "-n", default=2, show_default=True, type=click.IntRange(1, 8),
              help="How many storage nodes.")
@click.option("--inventory-out", default="inventory/lab.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the lab inventory.")
@click.option("--fresh", is_flag=True, help="Start from clean disks.")
@click.option("--clients", default=0, show_default=True, type=click.IntRange(0, 2),
              help="How many client VMs (NVMe/TCP initiators client1.., no pool); running "
              "clients are kept.")
@click.option("--cold", is_flag=True,
              help="Boot every VM from the image, not from its saved boot (and save it anew).")
def lab_up(nodes: int, inventory_out: str, fresh: bool, clients: int, cold: bool) -> None:
    """Boot the lab nodes and write their inventory (with pinned host keys).

    A VM that booted once is saved when it is ready; the next `up` restores it in seconds
    (docs/lab.md, "Saved boots").

    \b
    Example:
      xfleet lab up --nodes 2
      xfleet lab up --nodes 2 --clients 1   # also client1, under 'initiators:'
      xfleet lab up --fresh --cold          # clean disks, booted from the image
    """
    from xfleet import lab

    lab.build(progress=_say)
    state = lab.up(nodes=nodes, inventory_path=Path(inventory_out), fresh=fresh,
                   clients=clients, progress=_say, cold=cold)
    click.echo(f"{len(state.storage_nodes)} lab nodes and {len(state.clients)} client(s) up; "
               f"inventory written to {inventory_out}")
    click.echo(f"next: xfleet -i {inventory_out} sync && xfleet -i {inventory_out} ls")


@lab_group.command("status")
@json_option
def lab_status(as_json: bool) -> None:
    """Show the lab VMs (storage nodes and clients): running, SSH port, ZFS answering.

    \b
    Example:
      xfleet lab status --json
    """
    from dataclasses import asdict

    from xfleet import lab

    rows = [asdict(s) for s in lab.status()]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no lab nodes (run 'xfleet lab up')")
        return
    _emit(list(rows[0].keys()), rows, "table")


@lab_group.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def lab_ssh(node: str, command: tuple[str, ...]) -> None:
    """Open a shell on a lab node (or run COMMAND there).

    \b
    Example:
      xfleet lab ssh lab1 zfs list
    """
    from xfleet import lab
    from xfleet.remote.transport import quote_command

    argv = lab.ssh_argv(node)
    if command:
        argv.append(quote_command(list(command)))
    os.execvp(argv[0], argv)


@lab_group.command("reset")
def lab_reset() -> None:
    """Recreate the pools of the running lab nodes (seconds, no reboot).

    \b
    Example:
      xfleet lab reset
    """
    from xfleet import lab

    lab.reset(progress=_say)
    click.echo("pools recreated")


@lab_group.command("down")
def lab_down() -> None:
    """Stop the lab's own VMs (by their pid files).

    \b
    Example:
      xfleet lab down
    """
    from xfleet import lab

    stopped = lab.down(progress=_say)
    click.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


# ---------------------------------------------------------------------------------------------
# command groups kept in their own modules (xfleet/cli_*.py): each has `register(cli)`

# (one import and one call per module, in this block)
from xfleet.cli import compression as cli_compression  # noqa: E402
from xfleet.cli import lifecycle as cli_lifecycle  # noqa: E402
from xfleet.cli import play as cli_play  # noqa: E402
from xfleet.cli import upgrade as cli_upgrade  # noqa: E402

cli_compression.register(cli)
cli_lifecycle.register(cli)
cli_play.register(cli)
cli_upgrade.register(cli)


# ---------------------------------------------------------------------------------------------
# entry point


def _fail(exc: XfleetError) -> NoReturn:
    _json_failure(exc.message, exc.where, exc.hint)
    where = f"{exc.where}: " if exc.where else ""
    sys.stderr.write(f"error: {where}{exc.message}\n")
    if exc.hint:
        sys.stderr.write(f"  hint: {exc.hint}\n")
    sys.exit(exc.exit_code)


def _json_failure(message: str, where: str | None = None, hint: str | None = None) -> None:
    """The error document on stdout, if the command was asked for JSON and its own document
    did not go out (in --json-lines mode, one more line whatever went before)."""
    out = JSON_OUT
    if not out.requested or (out.emitted and not out.lines):
        return
    state: dict[str, Any] = {}
    if out.state is not None:
        try:
            state = out.state() or {}
        except Exception:  # the object's state is a bonus; the error document must go out
            state = {}
    out.emitted = True
    text = json.dumps(failed_doc(state, message, where, hint),
                      indent=None if out.lines else 2, default=str)
    with contextlib.suppress(OSError, ValueError):  # stdout gone: stderr says it all
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def _internal_error(exc: BaseException) -> NoReturn:
    """A bug or an unexpected library error: the traceback for diagnosis, then the error."""
    import traceback

    traceback.print_exception(exc)
    message = f"internal error: {type(exc).__name__}: {exc}"
    _json_failure(message, hint="this is a bug in xfleet or an unexpected error of a library "
                  "it uses; the traceback is on stderr")
    sys.stderr.write(f"error: {message}\n")
    sys.exit(1)


def _interrupted() -> NoReturn:
    _json_failure("interrupted (SIGINT)", hint="what the command left is as its journal "
                  "says (xfleet moves list, plays list, rollouts list)")
    sys.stderr.write("interrupted\n")
    sys.exit(130)


@contextlib.contextmanager
def _stop_on_signals(stop: Any) -> Iterator[None]:  # a threading.Event
    """SIGINT and SIGTERM set `stop` (the command winds down and reports) while inside; the
    handlers before are put back after, since commands also run in-process (tests, Python
    callers of main()) and a handler left behind would swallow a later Ctrl-C."""
    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    saved = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _catch_sigterm() -> None:
    """With --json, SIGTERM ends the process as before (at once, without unwinding), but after
    the error document went out. Commands that stop gracefully on SIGTERM (move, watch) set
    their own handler, and print their own document."""

    def on_sigterm(signum: int, _frame: Any) -> None:
        _json_failure("terminated by SIGTERM", hint="what the command left is as its journal "
                      "says (xfleet moves list, plays list, rollouts list)")
        with contextlib.suppress(Exception):
            sys.stderr.write("terminated\n")
            sys.stderr.flush()
        os._exit(128 + signum)

    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, on_sigterm)


def _stdout_closed() -> bool:
    """Did the reader of our stdout go away (a pipe or socket with nobody reading)?"""
    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno() if sys.__stdout__ else 1, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return True


def _wants_json(exc: click.ClickException, args: Sequence[str]) -> bool:
    """A usage error found before --json was parsed: was it on the command line of a command
    that has it?"""
    if JSON_OUT.requested:
        return True
    ctx = getattr(exc, "ctx", None)
    if ctx is None or not any(p.name in ("as_json", "json_lines") for p in ctx.command.params):
        return False
    given = list(args)[: list(args).index("--")] if "--" in args else list(args)
    lines = "--json-lines" in given
    if "--json" in given or lines:
        JSON_OUT.requested, JSON_OUT.lines = True, lines
    return JSON_OUT.requested


def main(argv: Sequence[str] | None = None) -> None:
    """The `xfleet` entry point: errors to stderr (and, with --json, as one JSON document on
    stdout: see JsonOutput), exit statuses 1 (failure), 2 (usage), 3 (host key), 130
    (interrupted), 128+15 (SIGTERM)."""
    args = list(argv) if argv is not None else sys.argv[1:]
    JSON_OUT.reset(in_main=True)
    sigterm = signal.getsignal(signal.SIGTERM)  # _catch_sigterm's is put back after
    try:
        cli.main(args=args, prog_name="xfleet", standalone_mode=False)
    except XfleetError as exc:
        _fail(exc)
    except click.exceptions.Abort as exc:
        cause = exc.__cause__  # click turns KeyboardInterrupt and EOFError into Abort
        if isinstance(cause, KeyboardInterrupt):
            _interrupted()
        if isinstance(cause, EOFError):  # not the user's: e.g. paramiko's on a lost socket
            _internal_error(cause)
        _json_failure("aborted", hint="pass --yes to confirm without a prompt")
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        if _wants_json(exc, args):
            ctx = getattr(exc, "ctx", None)
            _json_failure(exc.format_message(), where=ctx.command_path if ctx else None,
                          hint=f"{ctx.command_path} --help" if ctx else "xfleet --help")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except sqlite3.Error as exc:  # the mirror's file system or file, not a bug: one clear line
        from xfleet.mirror import explain

        _fail(explain(exc))
    except _BrokenPipe as exc:
        if _stdout_closed():  # the reader of our output went away (xfleet ls | head)
            with contextlib.suppress(OSError):  # no flush error at exit
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        _internal_error(exc.error)
    except Exception as exc:
        _internal_error(exc)
    finally:
        if sigterm is not None:
            with contextlib.suppress(ValueError):  # not the main thread: it was never set
                signal.signal(signal.SIGTERM, sigterm)
