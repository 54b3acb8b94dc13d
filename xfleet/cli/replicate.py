"""`xfleet replicate`: standing replicas of the snapshot policies' volumes (xfleet.ops.replicate;
docs/replicate.md)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from xfleet.cli.output import (
    Ctx,
    confirm,
    console,
    echo_json,
    emit,
    json_option,
    pass_ctx,
    stop_on_signals,
)

if TYPE_CHECKING:
    from xfleet.ops.replicate.journal import Replica


@click.group("replicate")
def replicate_group() -> None:
    """Standing replicas: volumes kept on another node within an RPO.

    A snapshot policy with `replicate: [{node: n2, pool: tank, rpo: 1h}]` keeps a copy of each
    of its volumes on n2, sent incrementally from the policy's snapshots (docs/replicate.md).

    \b
    Examples:
      xfleet replicate run --policy snapshots.yaml
      xfleet replicate status
      xfleet replicate promote n1:tank/db/pg-main
    """


def _age(seconds: float | None) -> str:
    from xfleet.core.units import format_age

    return "-" if seconds is None else format_age(seconds)


@replicate_group.command("run")
@click.option("--policy", "policy_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The snapshot policy file with `replicate:` targets (docs/snapshots.md).")
@click.option("--bwlimit", metavar="RATE",
              help="Bandwidth limit of this round's streams together, e.g. 200M (bytes/s); "
              "the nodes' own bwlimit and move_bwlimit apply too.")
@json_option
@pass_ctx
def run_cmd(c: Ctx, policy_path: Path, bwlimit: str | None, as_json: bool) -> None:
    """One replication round: every replica brought to its source's newest snapshot. Only
    volumes with bytes written since their cursor are sent (from the mirror: keep it synced,
    e.g. with xfleet serve or xfleet sync). A stopped stream resumes from its receive token
    in the next round. For cron or a systemd timer, after `xfleet snapshots run`.

    \b
    Examples:
      xfleet replicate run --policy snapshots.yaml
      xfleet replicate run --policy snapshots.yaml --bwlimit 500M --json
    """
    from xfleet.core.units import format_size, parse_size
    from xfleet.fleet.connections import Connections
    from xfleet.ops.replicate.round import Round
    from xfleet.ops.snapshots.policy import load_policies
    from xfleet.remote.relay import TokenBucket

    policies = load_policies(policy_path)
    if not any(p.replicate for p in policies.policies):
        raise click.UsageError(f"no policy in {policy_path} has `replicate:` targets "
                               "(see docs/replicate.md)")
    inv = c.inventory()
    con = console(stderr=True)
    live = con.is_terminal and not as_json
    stop = threading.Event()

    def tell(r: Replica, what: str) -> None:
        if live:
            con.print(f"replica {r.id} {r.source_node}:{r.volume} -> {r.target_node}: {what}",
                      highlight=False)

    limits = [TokenBucket(parse_size(bwlimit))] if bwlimit else []
    with stop_on_signals(stop), Connections(inv.hosts, trust_store=inv.trust_store,
                                            state_dir=inv.state_dir) as conns:
        res = Round(inv, c.mirror_path(), conns, limits=limits, progress=tell,
                    stop=stop).run(policies)
    if as_json:
        echo_json({"ok": not res.failed, **res.to_dict()})
    else:
        click.echo(f"{res.replicas} replica(s) ({res.added} new): {len(res.sent)} sent "
                   f"({format_size(res.bytes)}), {res.current} current without a stream, "
                   f"{len(res.failed)} failed, {res.busy} busy in another round; "
                   f"{res.pruned} replica snapshot(s) pruned; {res.commands} remote commands")
        for f in res.failed:
            click.echo(f"  replica {f['id']} {f.get('source_node', '')}:{f['volume']}: "
                       f"{f['error']}", err=True)
    if res.failed:
        sys.exit(1)


@replicate_group.command("status")
@click.option("--all", "show_all", is_flag=True, help="List every replica (promoted too).")
@click.option("--limit", type=click.IntRange(0), default=20, show_default=True,
              help="List this many of the most behind replicas.")
@json_option
@pass_ctx
def status_cmd(c: Ctx, show_all: bool, limit: int, as_json: bool) -> None:
    """Each replica's lag (now - the source time its data is from) against its RPO, from
    the mirror: a summary per policy and destination, then the most behind replicas.

    \b
    Examples:
      xfleet replicate status
      xfleet replicate status --all --json
    """
    from xfleet.ops.replicate.status import behind, summary

    now = time.time()
    with c.reader() as conn:
        groups = summary(conn, now)
        worst = behind(conn, now, limit=None if show_all else limit,
                       include_promoted=show_all)
    if as_json:
        echo_json({"now": now, "policies": groups,
                   "replicas": [r.to_dict(now) for r in worst]})
        return
    emit(["policy", "target_node", "replicas", "never", "failed", "over_rpo", "max_lag",
          "rpo"], [{**g, "max_lag": _age(g["max_lag"]), "rpo": _age(g["rpo"])}
                   for g in groups], "table",
         footer="lag: now - the source time of the newest snapshot the replica holds; "
         "over_rpo: lag above the policy's rpo (never sent included)")
    if worst:
        emit(["id", "source", "target", "state", "lag", "rpo", "cursor", "error"],
             [_row(r, now) for r in worst], "table",
             title="replicas" if show_all else f"the {len(worst)} most behind")
    elif not groups:
        console().print("no replicas yet (xfleet replicate run --policy FILE)", style="dim")


def _row(r: Replica, now: float) -> dict[str, Any]:
    return {"id": r.id, "source": f"{r.source_node}:{r.volume}",
            "target": f"{r.target_node}:{r.target_volume}", "state": r.state,
            "lag": _age(r.lag(now)), "rpo": _age(r.rpo), "cursor": r.cursor or "-",
            "error": (r.error or "")[:80]}


@replicate_group.command("show")
@click.argument("replica")
@json_option
@pass_ctx
def show_cmd(c: Ctx, replica: str, as_json: bool) -> None:
    """A replica and its log, by id or NODE:VOLUME (its source or its copy).

    \b
    Example:
      xfleet replicate show n1:tank/db/pg-main
    """
    from xfleet.ops.replicate.journal import find, log

    now = time.time()
    with c.reader() as conn:
        r = find(conn, replica)
        entries = log(conn, r.id)
    if as_json:
        echo_json({**r.to_dict(now), "log": entries})
        return
    for k, v in _row(r, now).items():
        click.echo(f"{k:>8}: {v}")
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
        click.echo(f"  {when} {e['state']:<9} {e['message']}")


@replicate_group.command("promote")
@click.argument("replica")
@click.option("--source-lost", is_flag=True,
              help="The source node is gone: make the copy the primary as it is (its data "
              "is as of its newest received snapshot).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask first.")
@json_option
@pass_ctx
def promote_cmd(c: Ctx, replica: str, source_lost: bool, yes: bool, as_json: bool) -> None:
    """Make a replica the primary. Planned (the source is up): the copy is brought up to
    date, then the volume is moved onto it through the move engine's cutover (pre_cutover
    hooks, final incremental, verified hashes; the source kept read-only and held until
    `xfleet moves retire`). With --source-lost: the copy becomes the primary as it is.

    \b
    Examples:
      xfleet replicate promote 12
      xfleet replicate promote n1:tank/db/pg-main --source-lost --yes
    """
    from xfleet.fleet.connections import Connections
    from xfleet.ops.replicate import promote

    inv = c.inventory()
    if source_lost:
        confirm(yes, f"Make the copy of {replica} the primary without its source? What the "
                "source wrote after the copy's newest snapshot is not in it.",
                "promote a replica without its source")
    stop = threading.Event()
    with stop_on_signals(stop), Connections(inv.hosts, trust_store=inv.trust_store,
                                            state_dir=inv.state_dir) as conns:
        if source_lost:
            p = promote.promote_lost(inv, c.mirror_path(), conns, replica)
        else:
            p = promote.promote(inv, c.mirror_path(), conns, replica)
    if as_json:
        echo_json({"ok": True, **p.to_dict()})
        return
    r = p.replica
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.as_of)) if p.as_of else "?"
    click.echo(f"replica {r.id}: {r.target_node}:{r.target_volume} is the primary ({p.mode}; "
               f"data as of {when})")
    if p.move:
        click.echo(f"  the source is kept as {p.move['retired_as']} (read-only, held): xfleet "
                   f"moves retire {p.move['id']} --destroy when you no longer need it")
    else:
        click.echo(f"  when {r.source_node} comes back, its {r.volume} is stale: retire it")
