"""What every command of the `xfleet` CLI shares: its context (`Ctx`: the inventory and the
mirror), its common options (`json_option`, `csv_option`, `report_options`, `where_option`,
`nodes_option`, `pass_ctx`) and its output (`console`, `emit`, `echo_json`, `failed_doc`,
`confirm`), with the JSON bookkeeping that gives every `--json` invocation exactly one
document (`JSON_OUT`).

The library (inventory, mirror, ops), rich, and even json, csv and datetime are imported
inside the functions that use them: every `xfleet --help` imports this module, and should not
wait for what it does not use (the engine pulls paramiko).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from xfleet.core.errors import UsageError
from xfleet.mirror.backend import Connection

if TYPE_CHECKING:
    import threading

    from rich.console import Console

    from xfleet.fleet.inventory import Inventory
    from xfleet.mirror.backend import Location

# the checkout: its inventory/demo.yaml and queries/ (xfleet/cli/output.py is two levels down)
REPO_ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# context: inventory and mirror are resolved lazily, so `ls --mirror X` needs no inventory


class Ctx:
    """The invocation's inventory and mirror, from `--inventory` and `--mirror`."""

    def __init__(self, inventory: str | None, mirror: str | None) -> None:
        self.inventory_path = inventory
        self.mirror_override = mirror
        self._inv: Inventory | None = None

    def inventory(self) -> Inventory:
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

    def use_inventory(self, inv: Inventory, path: Path) -> None:
        """Use this inventory, loaded already from `path` (the demo's)."""
        self._inv = inv
        self.inventory_path = str(path)

    def mirror_path(self) -> Location:
        """The mirror: --mirror (XFLEET_MIRROR), else the inventory's: a path or a URL."""
        from xfleet.mirror.backend import location  # lazy: see the module's docstring

        if self.mirror_override:
            return location(self.mirror_override)
        return self.inventory().mirror

    @contextlib.contextmanager
    def reader(self) -> Iterator[Connection]:
        """A read-only connection to the mirror, closed when the block ends."""
        from xfleet import mirror

        conn = mirror.connect(self.mirror_path(), readonly=True)
        try:
            yield conn
        finally:
            conn.close()


pass_ctx = click.make_pass_decorator(Ctx)


# ---------------------------------------------------------------------------------------------
# output


def console(stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr) that does not wrap in pipes and logs."""
    from rich.console import Console

    con = Console(stderr=stderr, highlight=False)
    if not con.is_terminal and "COLUMNS" not in os.environ:
        con = Console(stderr=stderr, highlight=False, width=200)  # no wrapping in pipes/logs
    return con


def say(msg: str) -> None:
    """A progress line on stderr."""
    click.echo(msg, err=True)


def format_value(col: str, value: Any) -> str:
    """A value of column `col` as a table shows it: sizes, ratios and times for people."""
    import datetime as dt

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


def emit(
    columns: Sequence[str],
    rows: Iterable[dict[str, Any]],
    fmt: str,
    *,
    title: str | None = None,
    footer: str | None = None,
) -> int:
    """Write rows as a table, JSON array (streamed) or CSV. Returns the number of rows."""
    import csv
    import json

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
        table.add_row(*(Text(printable(format_value(c, row.get(c)))) for c in columns))
        n += 1
    con = console()
    con.print(table)
    if footer:
        con.print(footer, style="dim")
    return n


def _chain_one(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


_NUMERIC = frozenset({
    "volumes", "snapshots", "clones", "filesystems", "bookmarks", "datasets", "added", "removed",
    "commands", "seconds", "createtxg", "creation", "written", "refreservation", "free",
    "allocated", "capacity", "fragmentation", "count", "n", "fresh", "synced_at",
})


def output_format(as_json: bool, as_csv: bool) -> str:
    """'json', 'csv' or 'table', from --json and --csv."""
    if as_json and as_csv:
        raise UsageError("--json and --csv exclude each other")
    return "json" if as_json else "csv" if as_csv else "table"


def confirm(yes: bool, question: str, what: str, *, hint: str = "pass --yes") -> None:
    """Ask before changing something that matters; on a pipe, refuse unless --yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"refusing to {what} without confirmation", hint=hint)
    click.confirm(question, abort=True, err=JSON_OUT.requested)


# ---------------------------------------------------------------------------------------------
# JSON output: exactly one document on stdout on every exit path (docs/query.md)


class JsonOutput:
    """What this invocation's `--json` (or `--json-lines`) asked for, and what went out.

    `json_option` records the request while click parses the command line; a command prints
    its document with `echo_json` (or `emit`), which records that it went out; `main()`
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


def record_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """The callback of --json and --json-lines: note that a JSON document is due."""
    if value and not ctx.resilient_parsing:
        JSON_OUT.requested = True
        JSON_OUT.lines = JSON_OUT.lines or param.name == "json_lines"
        if JSON_OUT.in_main:
            _catch_sigterm()
    return value


def echo_json(doc: Any, *, indent: int | None = 2) -> None:
    """Print the command's JSON document on stdout (and note that it went out)."""
    import json

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


def json_failure(message: str, where: str | None = None, hint: str | None = None) -> None:
    """The error document on stdout, if the command was asked for JSON and its own document
    did not go out (in --json-lines mode, one more line whatever went before)."""
    import json

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


# ---------------------------------------------------------------------------------------------
# signals


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (the command winds down and reports) while inside; the
    handlers before are put back after, since commands also run in-process (tests, Python
    callers of main()) and a handler left behind would swallow a later Ctrl-C."""
    def on_signal(signum: int, _frame: FrameType | None) -> None:
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

    def on_sigterm(signum: int, _frame: FrameType | None) -> None:
        json_failure("terminated by SIGTERM", hint="what the command left is as its journal "
                     "says (xfleet moves list, plays list, rollouts list)")
        with contextlib.suppress(Exception):
            sys.stderr.write("terminated\n")
            sys.stderr.flush()
        os._exit(128 + signum)

    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, on_sigterm)


# ---------------------------------------------------------------------------------------------
# options


FC = TypeVar("FC", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Output JSON.",
                           callback=record_json)
csv_option = click.option("--csv", "as_csv", is_flag=True, help="Output CSV.")


def report_options(limit_help: str) -> Callable[[FC], FC]:
    """A report's output options: `--limit/-l N` (0: all; into `limit`, help `limit_help`),
    `--html FILE` (into `html_path`), `--json` and `--csv` (`as_json`, `as_csv`)."""
    options = [
        click.option("--limit", "-l", type=click.IntRange(0), default=50, show_default=True,
                     help=limit_help),
        click.option("--html", "html_path", metavar="FILE",
                     help="Also write a self-contained HTML report with charts."),
        json_option,
        csv_option,
    ]

    def decorate(f: FC) -> FC:
        for option in reversed(options):  # as if stacked in this order: --help lists them so
            f = option(f)
        return f

    return decorate


def where_option(help: str = "Condition like 'used>10G', 'compression=off', 'name~*db*' "
                 "(repeatable).") -> Callable[[FC], FC]:
    """`--where/-w EXPR` (repeatable): conditions in the query language of `xfleet ls`."""
    return click.option("--where", "-w", "where", multiple=True, metavar="EXPR", help=help)


def nodes_option(help: str = "Only these nodes or groups (repeatable). Default: all.",
                 metavar: str | None = "NODE|GROUP") -> Callable[[FC], FC]:
    """`--node/-n NODE|GROUP` (repeatable) into the parameter `nodes`."""
    return click.option("--node", "-n", "nodes", multiple=True, metavar=metavar, help=help)
