"""`xfleet move`, `xfleet drain`, `xfleet moves list|show|resume|pause|abort|retire`: the CLI
face of xfleet.ops.moves (docs/moves.md).

The library is imported inside the commands, so that `xfleet --help` stays fast."""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import click

from xfleet.cli.output import (
    JSON_OUT,
    Ctx,
    confirm,
    console,
    echo_json,
    emit,
    failed_doc,
    json_option,
    pass_ctx,
    stop_on_signals,
)

if TYPE_CHECKING:
    from xfleet.ops.moves import Move


def _move_line(m: Move) -> str:
    from xfleet.core.units import format_age

    pct = f" {100 * m.progress:5.1f}%" if m.progress is not None else ""
    done = f" {m.bytes_done / 2**20:,.0f}/{(m.bytes_total or 0) / 2**20:,.0f} MiB" \
        if m.bytes_total else ""
    rate = f" {m.rate / 2**20:,.1f} MiB/s" if m.rate and m.eta is not None else ""
    eta = f" ETA {format_age(m.eta)}" if m.eta is not None else ""
    return f"move {m.id} {m.state}{pct}{done}{rate}{eta} {m.step or ''}"


def _move_doc(m: Move) -> dict[str, Any]:
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
    from xfleet import mirror
    from xfleet.fleet.connections import Connections
    from xfleet.ops import moves

    inv = c.inventory()
    path = c.mirror_path()
    con = console(stderr=True)
    live = con.is_terminal and not as_json
    stop = threading.Event()

    last = [0.0]

    def state() -> dict[str, Any]:  # for the error document, whatever ends the command
        conn = mirror.connect(path, readonly=True)
        try:
            return _move_doc(moves.get(conn, move_id))
        finally:
            conn.close()

    JSON_OUT.state = state

    def tick(m: Move) -> None:
        if live and time.monotonic() - last[0] > 0.5:
            last[0] = time.monotonic()
            con.print(f"\r{_move_line(m)}"[: con.width], end="", highlight=False)

    with stop_on_signals(stop), Connections(inv.hosts, trust_store=inv.trust_store,
                                            state_dir=inv.state_dir) as conns:
        m = moves.Runner(inv, path, conns, progress=tick, stop=stop).run(move_id)
    if live:
        con.print()
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


@click.command("move")
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
@click.option("--live", is_flag=True,
              help="Cut over without stopping I/O: the attached hosts get a path to the copy, "
              "their I/O is held by ANA around the final incremental and resumes on the "
              "target node (kernel target on both nodes; docs/moves.md).")
@click.option("--dry-run", "-n", is_flag=True, help="Print the plan and the commands only.")
@json_option
@pass_ctx
def move_cmd(c: Ctx, volume: str, target: str, source: str | None, verify: str,
             compression: str | None, bwlimit: str | None, direct: bool, catchup_bytes: str,
             live: bool, dry_run: bool, as_json: bool) -> None:
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
      xfleet move tank/db/pg-main --to node7 --live
    """
    from xfleet import mirror
    from xfleet.core.units import parse_size
    from xfleet.fleet.connections import Connections
    from xfleet.ops import moves

    inv = c.inventory()
    opts: dict[str, Any] = {"verify": verify, "catchup_bytes": parse_size(catchup_bytes)}
    if compression:
        opts["compression"] = compression
    if bwlimit:
        opts["bwlimit"] = parse_size(bwlimit)
    if direct:
        opts["direct"] = True
    if live:
        opts["live"] = True
    conn = mirror.connect(c.mirror_path())
    try:
        p = moves.plan_move(inv, conn, volume, target, source_node=source, options=opts)
        if dry_run:
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


@click.command("drain")
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
    from xfleet.core.units import parse_size
    from xfleet.fleet.connections import Connections
    from xfleet.ops import moves
    from xfleet.remote.relay import TokenBucket

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
            emit(["volume", "target", "bytes"], rows, "table",
                 footer=f"{len(plans)} move(s) planned off {node}")
        for v, w in refused:
            click.echo(f"cannot move {v}: {w}", err=True)
        if dry_run or not plans:
            return
        confirm(yes, f"Start {len(plans)} move(s) off {node}?", "start a drain")
        ids = [m.id for m in moves.create_many(inv, conn, plans, opts)]
    finally:
        conn.close()
    limits = [TokenBucket(parse_size(bwlimit))] if bwlimit else []
    with Connections(inv.hosts, trust_store=inv.trust_store, state_dir=inv.state_dir) as conns:
        runner = moves.Runner(inv, path, conns, limits=limits)
        runner.give_uuids(ids)  # one command per node, not one per move
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


@click.group("moves")
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
    """All moves, newest first.

    \b
    Examples:
      xfleet moves list
      xfleet moves list --active --json
    """
    from xfleet.ops import moves

    with c.reader() as conn:
        rows = [m.to_dict() for m in moves.listing(conn, active_only=active)]
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        r["progress"] = "-" if r["progress"] is None else f"{100 * r['progress']:.0f}%"
        r["target"] = f"{r['target_node']}:{r['target_volume']}"
    emit(["id", "state", "volume", "source_node", "target", "progress", "rounds", "step",
          "operator", "error"], rows, "table")


@moves_group.command("show")
@click.argument("move_id", type=int)
@json_option
@pass_ctx
def moves_show(c: Ctx, move_id: int, as_json: bool) -> None:
    """One move: its state, flags, verification and log.

    \b
    Example:
      xfleet moves show 3
    """
    from xfleet.ops import moves

    with c.reader() as conn:
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
    """Continue a move from its last completed step (after a failure, Ctrl-C or a crash).

    \b
    Example:
      xfleet moves resume 3
    """
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
    the source volume is untouched.

    \b
    Example:
      xfleet moves abort 3 --yes
    """
    from xfleet.fleet.connections import Connections
    from xfleet.ops import moves

    inv = c.inventory()
    confirm(yes, f"Abort move {move_id} and destroy its copy on the target?", "abort a move")
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
    """Destroy a finished move's source (kept read-only and held since the move).

    \b
    Example:
      xfleet moves retire 3 --destroy --yes
    """
    from xfleet.fleet.connections import Connections
    from xfleet.ops import moves

    inv = c.inventory()
    with c.reader() as conn:
        m = moves.get(conn, move_id)
    confirm(yes, f"Destroy {m.source_node}:{m.retired_as} (and its snapshots)?",
            "destroy data")
    with Connections(inv.hosts, trust_store=inv.trust_store, state_dir=inv.state_dir) as conns:
        m = moves.retire(inv, c.mirror_path(), conns, move_id)
    click.echo(f"move {m.id}: {m.retired_as} destroyed on {m.source_node}")
