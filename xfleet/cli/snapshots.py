"""`xfleet snapshots`: snapshot policies (xfleet.ops.snapshots; docs/snapshots.md)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from xfleet.cli.output import Ctx, console, echo_json, emit, json_option, pass_ctx
from xfleet.core.units import format_size


@click.group("snapshots")
def snapshots_group() -> None:
    """Snapshot policies: schedules and retention over the mirror.

    \b
    Example:
      xfleet snapshots plan --policy snapshots.yaml
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


@snapshots_group.command("run")
@click.option("--policy", "policy_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The snapshot policy file (docs/snapshots.md).")
@click.option("--no-prune", is_flag=True, help="Only take the due snapshots.")
@click.option("--max-prune", type=click.IntRange(0), default=100_000, show_default=True,
              help="Destroy at most this many snapshots in this run.")
@click.option("--dry-run", is_flag=True, help="Show the commands, change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before destroying snapshots.")
@json_option
@pass_ctx
def run_cmd(c: Ctx, policy_path: Path, no_prune: bool, max_prune: int, dry_run: bool,
            yes: bool, as_json: bool) -> None:
    """Take the due snapshots (one atomic zfs snapshot per pool) and prune what the
    policies' retention lets go (zfs destroy vol@a,b,c; held snapshots and clone origins
    are never touched). Every command is journaled (xfleet lifecycle_log). For cron or a
    systemd timer; pruning asks first (or --yes).

    \b
    Examples:
      xfleet snapshots run --policy snapshots.yaml --dry-run
      xfleet snapshots run --policy snapshots.yaml --yes
    """
    from xfleet.cli.lifecycle import carry_out  # lazy: keeps `xfleet --help` fast
    from xfleet.fleet.connections import Connections
    from xfleet.ops import lifecycle
    from xfleet.ops.snapshots import apply
    from xfleet.ops.snapshots.policy import load_policies

    policies = load_policies(policy_path)
    inv = c.inventory()
    with c.reader() as conn, Connections(inv.hosts, trust_store=inv.trust_store,
                                         state_dir=inv.state_dir) as conns:
        taking = apply.take(conn, policies, now=time.time(), inventory=inv)
        pruning = lifecycle.LifecyclePlan("destroy") if no_prune else apply.prune(
            conn, policies, inventory=inv, holds=lifecycle.RemoteHolds(conns),
            max_prune=max_prune)
    # one plan, one document: the snapshots first, then the prunes (per node, in order)
    plan = apply.merge("snapshots run", [taking, pruning])
    carry_out(c, plan, as_json, dry_run, yes=yes,
              ask=(f"Take {len(taking.created)} snapshot(s) and destroy "
                   f"{len(pruning.destroyed)} the policies let go?", "destroy snapshots")
              if pruning.destroyed else None)
