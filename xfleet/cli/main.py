"""The `xfleet` root group, its commands (one module per command group, added in one block
below), and `main()`: the entry point that turns every way a command can end into an exit
status, a message on stderr and, with --json, one document on stdout."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from xfleet import __version__
from xfleet.cli import (
    attach,
    auth,
    capacity,  # noqa: F401  (adds `report capacity` to compression.report_group)
    compression,
    identity,
    inventory,
    lab,
    lifecycle,
    mirror,
    moves,
    play,
    query,
    replicate,
    serve,
    snapshots,
    sync,
    tui,
    upgrade,
)
from xfleet.cli.output import JSON_OUT, Ctx, json_failure
from xfleet.core.errors import XfleetError


class _BrokenPipe(Exception):
    """A BrokenPipeError out of a command, carried past click (which would exit 1 in silence
    for any EPIPE): main() decides whether it was stdout (quiet) or anything else (an error)."""

    def __init__(self, error: BrokenPipeError) -> None:
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
@click.option("--mirror", "-m", envvar="XFLEET_MIRROR", metavar="PATH|URL",
              help="The mirror: an SQLite file, or a postgresql:// URL for a team's shared "
              "mirror (env XFLEET_MIRROR; default: the inventory's 'mirror').")
@click.option("--reason", envvar="XFLEET_REASON", metavar="TEXT",
              help="Why: recorded with your identity (XFLEET_OPERATOR, else user@host) on the "
              "jobs and audit rows this command writes (env XFLEET_REASON).")
@click.version_option(__version__, prog_name="xfleet")
@click.pass_context
def cli(ctx: click.Context, inventory: str | None, mirror: str | None,
        reason: str | None) -> None:
    """xfleet: the operator's toolkit for fleets of ZFS storage nodes.

    Reads come from a fast mirror of every zvol, snapshot and clone on every node (SQLite, or
    PostgreSQL shared by a team); `xfleet sync` refreshes it.
    """
    if reason is not None or "xfleet.mirror.claims" in sys.modules:
        from xfleet.mirror import claims  # lazy: only commands given a reason need it

        claims.set_reason(reason)  # (None: a new in-process invocation forgets the last one)
    ctx.obj = Ctx(inventory, mirror)
    JSON_OUT.reset(in_main=JSON_OUT.in_main)  # a new invocation (in-process runs: tests)


# ---------------------------------------------------------------------------------------------
# the commands, in the order of the modules that define them

cli.add_command(inventory.inventory_group)
cli.add_command(sync.sync_cmd)
cli.add_command(sync.watch_cmd)
cli.add_command(sync.status_cmd)
cli.add_command(moves.move_cmd)
cli.add_command(moves.drain_cmd)
cli.add_command(moves.moves_group)
cli.add_command(query.ls_cmd)
cli.add_command(query.show_cmd)
cli.add_command(query.stats_cmd)
cli.add_command(query.sql_cmd)
cli.add_command(mirror.mirror_group)
cli.add_command(tui.tui_cmd)
cli.add_command(tui.demo_cmd)
cli.add_command(lab.lab_group)
cli.add_command(compression.compression_group)
cli.add_command(compression.report_group)
cli.add_command(lifecycle.snapshot_cmd)
cli.add_command(lifecycle.clone_cmd)
cli.add_command(lifecycle.destroy_cmd)
cli.add_command(lifecycle.set_cmd)
cli.add_command(lifecycle.resize_cmd)
cli.add_command(play.play_cmd)
cli.add_command(play.plays_group)
cli.add_command(upgrade.upgrade_group)
cli.add_command(upgrade.rollouts_group)
cli.add_command(upgrade.target_group)
cli.add_command(serve.serve_cmd)
cli.add_command(snapshots.snapshots_group)
cli.add_command(replicate.replicate_group)
cli.add_command(attach.attach_cmd)
cli.add_command(attach.detach_cmd)
cli.add_command(attach.attachments_cmd)
cli.add_command(attach.initiators_cmd)
cli.add_command(auth.auth_group)
cli.add_command(identity.identity_group)


# ---------------------------------------------------------------------------------------------
# entry point


def _fail(exc: XfleetError) -> NoReturn:
    json_failure(exc.message, exc.where, exc.hint)
    where = f"{exc.where}: " if exc.where else ""
    sys.stderr.write(f"error: {where}{exc.message}\n")
    if exc.hint:
        sys.stderr.write(f"  hint: {exc.hint}\n")
    sys.exit(exc.exit_code)


def _internal_error(exc: BaseException) -> NoReturn:
    """A bug or an unexpected library error: the traceback for diagnosis, then the error."""
    import traceback

    traceback.print_exception(exc)
    message = f"internal error: {type(exc).__name__}: {exc}"
    json_failure(message, hint="this is a bug in xfleet or an unexpected error of a library "
                 "it uses; the traceback is on stderr")
    sys.stderr.write(f"error: {message}\n")
    sys.exit(1)


def _interrupted() -> NoReturn:
    json_failure("interrupted (SIGINT)", hint="what the command left is as its journal "
                 "says (xfleet moves list, plays list, rollouts list)")
    sys.stderr.write("interrupted\n")
    sys.exit(130)


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
    sigterm = signal.getsignal(signal.SIGTERM)  # the --json handler is put back after
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
        json_failure("aborted", hint="pass --yes to confirm without a prompt")
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        if _wants_json(exc, args):
            ctx = getattr(exc, "ctx", None)
            json_failure(exc.format_message(), where=ctx.command_path if ctx else None,
                         hint=f"{ctx.command_path} --help" if ctx else "xfleet --help")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except _BrokenPipe as exc:
        if _stdout_closed():  # the reader of our output went away (xfleet ls | head)
            with contextlib.suppress(OSError):  # no flush error at exit
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        _internal_error(exc.error)
    except Exception as exc:
        # lazy: the mirror package loads only for commands that use it (then it is loaded)
        from xfleet.mirror.backend import ERRORS

        if isinstance(exc, ERRORS):  # the mirror's file, file system or server: one clear line
            from xfleet.mirror import explain  # lazy: see above

            _fail(explain(exc))
        _internal_error(exc)
    finally:
        if sigterm is not None:
            with contextlib.suppress(ValueError):  # not the main thread: it was never set
                signal.signal(signal.SIGTERM, sigterm)
