"""`xfleet snapshots`: snapshot policies (xfleet.ops.snapshots; docs/snapshots.md)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from xfleet.cli.output import Ctx, console, echo_json, emit, json_option, pass_ctx
from xfleet.core.errors import UsageError
from xfleet.core.units import format_size

if TYPE_CHECKING:
    from xfleet.ops.snapshots.run import RunResult


@click.group("snapshots")
def snapshots_group() -> None:
    """Snapshot policies: schedules and retention over the mirror.

    plan shows what is due and what the retention lets go; apply takes the due snapshots;
    prune destroys what the retention lets go; run does both (for cron or a timer); status
    shows how far behind the schedule each tenant is; runs lists the journaled runs.

    \b
    Examples:
      xfleet snapshots plan --policy snapshots.yaml
      xfleet snapshots run --policy snapshots.yaml --yes
      xfleet snapshots run --resume 12 --yes
    """


@snapshots_group.command("plan")
@click.option("--policy", "policy_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The snapshot policy file (docs/snapshots.md).")
@click.option("--at", "at", type=float, metavar="UNIXTIME",
              help="Plan as of this time (default: now).")
@click.option("--show", type=click.IntRange(0), default=20, show_default=True,
              help="List this many of the snapshots to prune.")
@json_option
@pass_ctx
def plan_cmd(c: Ctx, policy_path: Path, at: float | None, show: int, as_json: bool) -> None:
    """What each policy would do now, read from the mirror (never zfs list -t snapshot):
    volumes due a snapshot per pool, and the policy's own snapshots its retention prunes,
    with the bytes they hold. Changes nothing.

    \b
    Examples:
      xfleet snapshots plan --policy snapshots.yaml
      xfleet snapshots plan --policy snapshots.yaml --json
    """
    from xfleet.ops.snapshots.plan import plan  # lazy: keeps `xfleet --help` fast
    from xfleet.ops.snapshots.policy import load_policies

    policies = load_policies(policy_path)
    inv = None
    if c.inventory_path or not c.mirror_override:
        inv = c.inventory()
    with c.reader() as conn:
        p = plan(conn, policies, now=at if at is not None else time.time(), inventory=inv,
                 show=show)
    if as_json:
        echo_json(p.to_dict())
        return
    rows = [{**pp.to_dict(), "frees": format_size(pp.prune_bytes)} for pp in p.pools]
    emit(["policy", "node", "pool", "volumes", "due", "snapshots", "prune", "frees"], rows,
         "table", footer="due: volumes whose newest snapshot of the policy is older than its "
         "schedule's latest slot; frees: the pruned snapshots' own bytes (at least this)")
    if p.prunes:
        emit(["policy", "node", "snapshot", "used"], p.prunes, "table",
             title=f"first {len(p.prunes)} snapshots to prune")
    elif not rows:
        console().print("no volume matches a policy", style="dim")


@snapshots_group.command("status")
@click.option("--policy", "policy_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The snapshot policy file (docs/snapshots.md).")
@json_option
@pass_ctx
def status_cmd(c: Ctx, policy_path: Path, as_json: bool) -> None:
    """Per policy and tenant: volumes behind their schedule and how far, from the mirror
    (never zfs list -t snapshot).

    \b
    Example:
      xfleet snapshots status --policy snapshots.yaml
    """
    from xfleet.core.units import format_age
    from xfleet.ops.snapshots.plan import status
    from xfleet.ops.snapshots.policy import load_policies

    policies = load_policies(policy_path)
    inv = c.inventory() if c.inventory_path or not c.mirror_override else None
    with c.reader() as conn:
        rows = status(conn, policies, now=time.time(), inventory=inv)
    if as_json:
        echo_json(rows)
        return
    shown = [{**r, "tenant": r["tenant"] or "-", "oldest_newest_age": "-"
              if r["oldest_newest_age"] is None else format_age(r["oldest_newest_age"]),
              "period": format_age(r["period"]),
              "lag_periods": "-" if r["lag_periods"] is None else f"{r['lag_periods']:g}"}
             for r in rows]
    emit(["policy", "tenant", "volumes", "behind", "never", "oldest_newest_age", "period",
          "lag_periods"], shown, "table",
         footer="behind: volumes whose newest snapshot of the policy is older than the "
         "schedule's latest slot (never: none yet); oldest_newest_age: the most behind "
         "volume's newest snapshot; lag_periods: that age in schedule periods")


def _policy_option(required: bool = True) -> Callable[[Callable[..., Any]], Any]:
    return click.option("--policy", "policy_path", required=required,
                        type=click.Path(dir_okay=False, path_type=Path),
                        help="The snapshot policy file (docs/snapshots.md)." +
                        ("" if required else " With --resume: the run's own file."))


_at_option = click.option(
    "--at", "at", type=float, metavar="UNIXTIME",
    help="Run as of this time instead of now: the schedule's slot and the snapshot names come "
    "from it. For tests, and for catching up a missed slot deliberately.")
_max_prune_option = click.option(
    "--max-prune", type=click.IntRange(0), default=100_000, show_default=True,
    help="Destroy at most this many snapshots in this run.")
_dry_run_option = click.option("--dry-run", is_flag=True,
                               help="Show the commands, change nothing (no run is recorded).")
_yes_option = click.option("--yes", "-y", is_flag=True,
                           help="Do not ask before destroying snapshots (cron, timers).")


def _dry_run(c: Ctx, policy_path: Path, mode: str, at: float | None, max_prune: int,
             as_json: bool) -> None:
    """The commands a run would issue now (the prunes as planned before the take: the run
    plans them after it, so the snapshot it takes may let one more go)."""
    from xfleet.cli.lifecycle import carry_out  # lazy: keeps `xfleet --help` fast
    from xfleet.fleet.connections import Connections
    from xfleet.ops import lifecycle
    from xfleet.ops.snapshots import apply
    from xfleet.ops.snapshots.policy import load_policies

    policies = load_policies(policy_path)
    inv = c.inventory()
    plans = []
    with c.reader() as conn, Connections(inv.hosts, trust_store=inv.trust_store,
                                         state_dir=inv.state_dir) as conns:
        if mode != "prune":
            plans.append(apply.take(conn, policies, now=at if at is not None else time.time(),
                                    inventory=inv))
        if mode != "apply":
            plans.append(apply.prune(conn, policies, inventory=inv,
                                     holds=lifecycle.RemoteHolds(conns), max_prune=max_prune))
    carry_out(c, apply.merge(f"snapshots {mode}", plans), as_json, True)


def _show(result: RunResult, as_json: bool) -> None:
    from xfleet.cli.output import failed_doc

    if as_json:
        doc = result.to_dict()
        if not result.ok:
            bad = [n["node"] for n in result.nodes if not n["ok"]]
            doc = failed_doc(doc, f"snapshot run {result.id} failed: {result.error}",
                             where=", ".join(bad) or None,
                             hint=f"xfleet snapshots run --resume {result.id} retries it")
        echo_json(doc)
    else:
        at = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(result.at))
        for old in result.finished_first:
            click.echo(f"finished interrupted snapshot run {old} first")
        click.echo(f"snapshot run {result.id} ({result.mode}, as of {at}): {result.state}, "
                   f"took {result.taken} of {result.planned_take}, pruned {result.pruned} of "
                   f"{result.planned_prune}, skipped {result.skipped_count}, "
                   f"{result.commands} remote command(s)")
        for n in result.nodes:
            click.echo(f"{n['node']}: {'ok' if n['ok'] else 'FAILED'}, {n['changes']} change "
                       f"command(s), {n['commands']} remote command(s), {n['refetched']} "
                       "mirror row(s) refreshed" + (f"\n  error: {n['error']}" if n["error"]
                                                    else ""))
        for sk in result.skipped[:10]:
            click.echo(f"skipped: {sk['node']}: {sk['name']}: {sk['why']}")
        if result.skipped_count > 10:
            click.echo(f"skipped: ... {result.skipped_count - 10} more (xfleet snapshots runs "
                       "--json)")
        if not result.ok:
            click.echo(f"error: {result.error}\n  hint: xfleet snapshots run --resume "
                       f"{result.id} retries it", err=True)
    if not result.ok:
        sys.exit(1)


def _run(c: Ctx, policy_path: Path | None, mode: str, at: float | None, max_prune: int,
         yes: bool, as_json: bool, resume: int | None = None) -> None:
    from xfleet.cli.output import confirm
    from xfleet.fleet.connections import Connections
    from xfleet.ops.snapshots import run as runs
    from xfleet.ops.snapshots.policy import load_policies

    def ask(n: int) -> None:
        confirm(yes, f"Destroy {n} snapshot(s) the policies let go?", "destroy snapshots")

    def progress(message: str) -> None:
        if not as_json:
            click.echo(message, err=True)

    inv = c.inventory()
    loc = c.mirror_path()
    if resume is not None:
        if at is not None:
            raise UsageError("--at cannot be given with --resume",
                             hint="a run keeps the time it began as of")
        with c.reader() as conn:
            policies = load_policies(policy_path or Path(runs.get(conn, resume).policy))
    else:
        assert policy_path is not None
        policies = load_policies(policy_path)
    with Connections(inv.hosts, trust_store=inv.trust_store, state_dir=inv.state_dir) as conns:
        if resume is not None:
            result = runs.resume(inv, loc, conns, policies, resume, progress=progress,
                                 confirm=ask)
        else:
            result = runs.run_policies(inv, loc, conns, policies,
                                       now=at if at is not None else time.time(), mode=mode,
                                       max_prune=max_prune, progress=progress, confirm=ask)
    _show(result, as_json)


@snapshots_group.command("run")
@_policy_option(required=False)
@_at_option
@click.option("--resume", "resume", type=int, metavar="ID",
              help="Finish snapshot run ID (interrupted or failed) with its own time and names.")
@click.option("--no-prune", is_flag=True, help="Only take the due snapshots (as apply).")
@_max_prune_option
@_dry_run_option
@_yes_option
@json_option
@pass_ctx
def run_cmd(c: Ctx, policy_path: Path | None, at: float | None, resume: int | None,
            no_prune: bool, max_prune: int, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Take the due snapshots (one atomic zfs snapshot per pool), then prune what the
    policies' retention lets go (zfs destroy vol@a,b,c; held snapshots and clone origins are
    never touched). A journaled job (xfleet snapshots runs): an interrupted run is finished by
    the next run of the same policies, or by --resume ID, without a second snapshot for its
    slot and without destroying anything twice. Every command is journaled in lifecycle_log.
    For cron or a systemd timer; destroying asks first (or --yes).

    \b
    Examples:
      xfleet snapshots run --policy snapshots.yaml --dry-run
      xfleet snapshots run --policy snapshots.yaml --yes
      xfleet snapshots run --policy snapshots.yaml --at 1796169600 --yes --json
      xfleet snapshots run --resume 12 --yes
    """
    if policy_path is None and resume is None:
        raise UsageError("--policy is required (or --resume ID)",
                         hint="xfleet snapshots run --policy snapshots.yaml")
    mode = "apply" if no_prune else "run"
    if dry_run:
        if policy_path is None:
            raise UsageError("--dry-run needs --policy")
        _dry_run(c, policy_path, mode, at, max_prune, as_json)
        return
    _run(c, policy_path, mode, at, max_prune, yes, as_json, resume)


@snapshots_group.command("apply")
@_policy_option()
@_at_option
@_dry_run_option
@json_option
@pass_ctx
def apply_cmd(c: Ctx, policy_path: Path, at: float | None, dry_run: bool,
              as_json: bool) -> None:
    """Take the due snapshots only: one atomic zfs snapshot per pool and batch of names, named
    xfleet_<policy>_<time>Z. Destroys nothing. A journaled job, as run.

    \b
    Examples:
      xfleet snapshots apply --policy snapshots.yaml --dry-run
      xfleet snapshots apply --policy snapshots.yaml --json
      xfleet snapshots apply --policy snapshots.yaml --at 1796169600
    """
    if dry_run:
        _dry_run(c, policy_path, "apply", at, 0, as_json)
        return
    _run(c, policy_path, "apply", at, 0, True, as_json)


@snapshots_group.command("prune")
@_policy_option()
@_at_option
@_max_prune_option
@_dry_run_option
@_yes_option
@json_option
@pass_ctx
def prune_cmd(c: Ctx, policy_path: Path, at: float | None, max_prune: int, dry_run: bool,
              yes: bool, as_json: bool) -> None:
    """Destroy the policies' own snapshots their retention lets go, and nothing else: held
    snapshots are skipped, clone origins kept (both reported). Asks first (or --yes). A
    journaled job, as run.

    \b
    Examples:
      xfleet snapshots prune --policy snapshots.yaml --dry-run
      xfleet snapshots prune --policy snapshots.yaml --yes --json
      xfleet snapshots prune --policy snapshots.yaml --max-prune 1000 --yes
    """
    if dry_run:
        _dry_run(c, policy_path, "prune", at, max_prune, as_json)
        return
    _run(c, policy_path, "prune", at, max_prune, yes, as_json)


@snapshots_group.command("runs")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True,
              help="The newest this many runs.")
@json_option
@pass_ctx
def runs_cmd(c: Ctx, limit: int, as_json: bool) -> None:
    """The journaled snapshot runs, newest first: their time, step, state and counts (an
    unfinished one: xfleet snapshots run --resume ID).

    \b
    Examples:
      xfleet snapshots runs
      xfleet snapshots runs --json --limit 1
    """
    from xfleet.ops.snapshots import run as runs

    with c.reader() as conn:
        got = runs.runs(conn, limit=limit)
    if as_json:
        echo_json([r.to_dict() for r in got])
        return
    emit(["id", "mode", "at", "state", "step", "taken", "pruned", "skipped", "commands"],
         [{**r.to_dict(), "at": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(r.at)),
           "skipped": r.skipped_count} for r in got], "table")
