"""`xfleet snapshot|clone|destroy|set|resize`: the CLI face of xfleet.ops.lifecycle.

The library is imported inside the commands, so that `xfleet --help` stays fast."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from xfleet.cli.output import (
    FC,
    Ctx,
    confirm,
    console,
    echo_json,
    emit,
    failed_doc,
    json_option,
    nodes_option,
    pass_ctx,
    where_option,
)
from xfleet.core.errors import UsageError

if TYPE_CHECKING:
    from xfleet.ops.lifecycle import LifecyclePlan, Target


def _selection_options(fn: FC) -> FC:
    """The selection options of `xfleet ls`, with --dry-run, --yes and --json."""
    opts = [
        nodes_option("Only on these nodes.", metavar=None),
        click.option("--pool", "pools", multiple=True, help="Only in these pools."),
        click.option("--type", "-t", "types", multiple=True,
                     help="volume, snapshot, filesystem or clone (default with --where/"
                     "--tenant: volume)."),
        click.option("--tenant", "tenants", multiple=True, help="Only these tenants."),
        click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
                     help="Only on nodes with this inventory label."),
        where_option("Condition like xfleet ls: 'used>10G', 'name~*db*' (repeatable)."),
        click.option("--dry-run", is_flag=True,
                     help="Print exactly the commands that would run, and change nothing."),
        click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation."),
        json_option,
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _targets(c: Ctx, names: tuple[str, ...], nodes: tuple[str, ...], pools: tuple[str, ...],
             types: tuple[str, ...], tenants: tuple[str, ...], labels: tuple[str, ...],
             where: tuple[str, ...], default_types: tuple[str, ...] = ("volume",)
             ) -> list[Target]:
    """Mirror rows selected like `xfleet ls` does: exact names, globs, filters."""
    from xfleet.mirror import query
    from xfleet.ops import lifecycle

    if not (names or where or tenants or pools or labels):
        raise UsageError("nothing selected", hint="name datasets, or select with --where, "
                         "--tenant, --pool or --label (xfleet ls shows what they match)")
    cols = ("node", "name", "type", "volsize", "volblocksize", "origin")
    out: dict[tuple[str, str], Target] = {}
    exact = [n for n in names if not any(ch in n for ch in "*?[")]
    globs = [n for n in names if n not in exact]
    with c.reader() as conn:
        if exact and not (where or tenants or pools or labels or types):
            for t in lifecycle.resolve(conn, exact, nodes[0] if len(nodes) == 1 else None):
                out[(t.node, t.name)] = t
        patterns: list[str | None] = list(globs) or [None]
        if exact and (where or tenants or pools or labels or types):
            patterns = []
            for n in exact:
                rows = list(query.ls(conn, query.Selection(
                    nodes=nodes, pools=pools, types=types, tenants=tenants, labels=labels,
                    where=(*where, f"name={n}"), columns=cols)))
                for t in lifecycle.targets_from_rows(rows):
                    out[(t.node, t.name)] = t
        if globs or not exact:
            for pattern in patterns:
                sel = query.Selection(nodes=nodes, pools=pools,
                                      types=types or (default_types if not globs else ()),
                                      tenants=tenants, labels=labels, pattern=pattern,
                                      where=where, columns=cols)
                for t in lifecycle.targets_from_rows(query.ls(conn, sel)):
                    out[(t.node, t.name)] = t
    if not out:
        raise UsageError("no dataset in the mirror matches the selection",
                         hint="check it with xfleet ls (same options)")
    return list(out.values())


def _props(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise UsageError(f"{p!r} is not PROPERTY=VALUE", hint="e.g. -o compression=zstd")
        out[k] = v
    return out


def _show_plan(plan: LifecyclePlan, as_json: bool, dry_run: bool) -> None:
    if as_json and dry_run:
        echo_json({**plan.to_dict(), "dry_run": True})
        return
    if as_json:
        return
    con = console(stderr=not dry_run)
    for node, name, why in plan.skipped[:20]:
        con.print(f"skip {node}:{name}: {why}", style="dim")
    if len(plan.skipped) > 20:
        con.print(f"... and {len(plan.skipped) - 20} more skipped", style="dim")
    for c in plan.commands:
        if dry_run:
            click.echo(c.line())
        else:
            con.print(c.line(), highlight=False)
    con.print(f"{len(plan.commands)} command(s) on {len(plan.nodes())} node(s)"
              + (" (dry run: nothing changed)" if dry_run else ""), style="dim")


def carry_out(c: Ctx, plan: LifecyclePlan, as_json: bool, dry_run: bool, *, yes: bool = False,
               ask: tuple[str, str] | None = None) -> None:
    """Show the plan; unless it is a dry run, ask first when `ask` is given (question, what
    --yes stands for) and there is something to do, then run it."""
    _show_plan(plan, as_json, dry_run)
    if dry_run:
        return
    if ask and plan.commands:
        confirm(yes, *ask)
    _run(c, plan, as_json)


def _run(c: Ctx, plan: LifecyclePlan, as_json: bool) -> None:
    from xfleet.fleet.connections import Connections
    from xfleet.ops import lifecycle

    inv = c.inventory()
    if not plan.commands:
        if as_json:
            echo_json({"op": plan.op, "ok": True, "commands": 0, "nodes": []}, indent=None)
        else:
            click.echo("nothing to do")
        return
    with Connections(inv.hosts, trust_store=inv.trust_store, state_dir=inv.state_dir) as conns:
        out = lifecycle.execute(inv, c.mirror_path(), plan, conns)
    if as_json:
        doc = out.to_dict()
        if not out.ok:
            bad = [n for n in out.nodes if not n.ok]
            doc = failed_doc(doc, f"{plan.op} failed on {len(bad)} of {len(out.nodes)} "
                             f"node(s); first {bad[0].node}: {bad[0].error}",
                             where=", ".join(n.node for n in bad),
                             hint="each node stopped at its first failure; its changes so "
                             "far are in 'nodes' (and in the mirror)")
        echo_json(doc)
    else:
        for n in out.nodes:
            click.echo(f"{n.node}: {'ok' if n.ok else 'FAILED'}, {len(n.done)} change "
                       f"command(s), {n.commands} remote command(s) in all, {n.refetched} "
                       "mirror row(s) refreshed" + (f"\n  error: {n.error}" if n.error else "")
                       + "".join(f"\n  warning: {u}" for u in n.unrecorded))
    if not out.ok:
        sys.exit(1)


@click.command("snapshot")
@click.argument("names", nargs=-1)
@click.option("--name", "snapname", required=True, metavar="SNAP",
              help="The snapshot name (after '@').")
@click.option("--property", "-o", "props", multiple=True, metavar="PROP=VALUE",
              help="User property on the new snapshots (repeatable).")
@_selection_options
@pass_ctx
def snapshot_cmd(c: Ctx, names: tuple[str, ...], snapname: str, props: tuple[str, ...],
                 nodes: tuple[str, ...], pools: tuple[str, ...], types: tuple[str, ...],
                 tenants: tuple[str, ...], labels: tuple[str, ...], where: tuple[str, ...],
                 dry_run: bool, yes: bool, as_json: bool) -> None:
    """Snapshot volumes: one `zfs snapshot a@s b@s ...` per pool (atomic per pool).

    NAMES are dataset names or globs; or select with the filters of `xfleet ls`.
    Volumes that have the snapshot already are skipped, so a re-run is harmless.

    \b
    Examples:
      xfleet snapshot tank/db/pg-main --name before-upgrade
      xfleet snapshot --tenant acme --name nightly-20260501 --dry-run
      xfleet snapshot 'tank/t0001/*' --type volume --name pre-move --json
    """
    from xfleet.ops import lifecycle

    targets = _targets(c, names, nodes, pools, types, tenants, labels, where)
    with c.reader() as conn:
        plan = lifecycle.plan_snapshot(conn, targets, snapname, properties=_props(props))
    carry_out(c, plan, as_json, dry_run)


@click.command("clone")
@click.argument("source")
@click.argument("target")
@click.option("--snapshot", "-s", metavar="SNAP",
              help="Branch from this existing snapshot of SOURCE (pinned); default: a new "
              "snapshot SOURCE@branch-TIME (or SOURCE itself if it is a snapshot).")
@click.option("--node", "-n", "node", help="SOURCE's node, if the name is ambiguous.")
@click.option("--property", "-o", "props", multiple=True, metavar="PROP=VALUE",
              help="Property of the clone (repeatable), e.g. -o xfleet:tenant=acme-test.")
@click.option("--dry-run", is_flag=True, help="Print the commands only.")
@json_option
@pass_ctx
def clone_cmd(c: Ctx, source: str, target: str, snapshot: str | None, node: str | None,
              props: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Branch a volume: a copy-on-write clone of one of its snapshots, on its node.

    \b
    Examples:
      xfleet clone tank/acme/db tank/acme/db-test            # new branch point now
      xfleet clone tank/acme/db tank/acme/db-0501 --snapshot nightly-20260501
      xfleet clone tank/acme/db@nightly-20260501 tank/acme/db-0501 -o xfleet:tenant=qa
    """
    from xfleet.ops import lifecycle

    with c.reader() as conn:
        (src,) = lifecycle.resolve(conn, [source], node)
        plan = lifecycle.plan_clone(conn, src, target, snapshot=snapshot,
                                    properties=_props(props))
    carry_out(c, plan, as_json, dry_run)


@click.command("destroy")
@click.argument("names", nargs=-1)
@click.option("--clones", type=click.Choice(["refuse", "destroy", "promote"]),
              default="refuse", show_default=True,
              help="Clones that depend on what is destroyed: refuse, destroy them too "
              "(-R), or promote them first (they keep the shared snapshots).")
@click.option("--release", is_flag=True,
              help="Release holds on held snapshots (and allow retired move sources).")
@_selection_options
@pass_ctx
def destroy_cmd(c: Ctx, names: tuple[str, ...], clones: str, release: bool,
                nodes: tuple[str, ...], pools: tuple[str, ...], types: tuple[str, ...],
                tenants: tuple[str, ...], labels: tuple[str, ...], where: tuple[str, ...],
                dry_run: bool, yes: bool, as_json: bool) -> None:
    """Destroy volumes (with their snapshots) or snapshots, after showing what goes.

    Refused while clones depend on it (see --clones), for held snapshots and retired
    move sources (see --release) and for volumes in an unfinished move. Snapshots of one
    volume go in one command (`zfs destroy vol@a,b,c`). Always asks first (or --yes).

    \b
    Examples:
      xfleet destroy tank/acme/db-test --dry-run
      xfleet destroy 'tank/acme/db@auto-2026*' --yes
      xfleet destroy tank/acme/db --clones promote
    """
    from xfleet.fleet.connections import Connections
    from xfleet.ops import lifecycle

    inv = c.inventory()
    targets = _targets(c, names, nodes, pools, types, tenants, labels, where)
    with c.reader() as conn, Connections(inv.hosts, trust_store=inv.trust_store,
                                         state_dir=inv.state_dir) as conns:
        plan = lifecycle.plan_destroy(conn, targets, clones=clones, release=release,
                                      holds=lifecycle.RemoteHolds(conns))
    rows = [{"node": n, "name": x, "type": t} for n, x, t in plan.destroyed]
    if not as_json:
        emit(["node", "name", "type"], rows[:200], "table",
             title="would be destroyed" if dry_run else "to be destroyed",
             footer=f"{len(rows)} dataset(s)"
             + (", first 200 shown (--json lists all)" if len(rows) > 200 else ""))
    carry_out(c, plan, as_json, dry_run, yes=yes,
               ask=(f"Destroy these {len(rows)} dataset(s)?", "destroy datasets"))


@click.command("set")
@click.argument("args", nargs=-1, required=True)
@_selection_options
@pass_ctx
def set_cmd(c: Ctx, args: tuple[str, ...], nodes: tuple[str, ...], pools: tuple[str, ...],
            types: tuple[str, ...], tenants: tuple[str, ...], labels: tuple[str, ...],
            where: tuple[str, ...], dry_run: bool, yes: bool, as_json: bool) -> None:
    """Set properties: `xfleet set PROP=VALUE... [NAME|GLOB...] [filters]`.

    Validated first (known properties and value shapes; read-only ones refused; user
    properties MODULE:NAME allowed); one `zfs set p=v ... a b c` per node and batch.

    \b
    Examples:
      xfleet set compression=zstd tank/acme/db
      xfleet set xfleet:tier=free --where 'used<1G' --dry-run
      xfleet set volmode=none 'tank/t0001/*' --type volume --yes
    """
    from xfleet.ops import lifecycle

    assigns = tuple(a for a in args if "=" in a)
    names = tuple(a for a in args if "=" not in a)
    if not assigns:
        raise UsageError("no PROPERTY=VALUE given", hint="e.g. xfleet set compression=zstd "
                         "tank/acme/db")
    targets = _targets(c, names, nodes, pools, types, tenants, labels, where)
    with c.reader() as conn:
        plan = lifecycle.plan_set(conn, targets, _props(assigns))
    carry_out(c, plan, as_json, dry_run, yes=yes, ask=(
        f"Set {', '.join(assigns)} on {len(targets)} datasets?", "change many datasets")
        if len(targets) > 1 else None)


@click.command("resize")
@click.argument("names", nargs=-1)
@click.option("--size", required=True, metavar="SIZE|+DELTA",
              help="New volsize (e.g. 20G) or growth (+10G). Shrinking is refused.")
@_selection_options
@pass_ctx
def resize_cmd(c: Ctx, names: tuple[str, ...], size: str, nodes: tuple[str, ...],
               pools: tuple[str, ...], types: tuple[str, ...], tenants: tuple[str, ...],
               labels: tuple[str, ...], where: tuple[str, ...], dry_run: bool, yes: bool,
               as_json: bool) -> None:
    """Grow volumes (volsize). The new size must be a multiple of volblocksize.

    \b
    Examples:
      xfleet resize tank/acme/db --size +10G
      xfleet resize --tenant acme --size 200G --dry-run
    """
    from xfleet.ops import lifecycle

    targets = _targets(c, names, nodes, pools, types, tenants, labels, where)
    with c.reader() as conn:
        plan = lifecycle.plan_resize(conn, targets, size)
    carry_out(c, plan, as_json, dry_run, yes=yes, ask=(
        f"Resize {len(targets)} volumes?", "resize many volumes") if len(targets) > 1
        else None)
