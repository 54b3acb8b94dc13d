"""`xfleet compression plan|apply|estimate|runs|audit` and `xfleet report compression`:
thin faces over xfleet.ops.compression, .estimate and .report (docs/compression.md).

The library is imported inside the commands, so that `xfleet --help` stays fast."""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from xfleet.cli.output import (
    Ctx,
    confirm,
    console,
    csv_option,
    echo_json,
    emit,
    failed_doc,
    json_option,
    nodes_option,
    output_format,
    pass_ctx,
    report_options,
    say,
    where_option,
)
from xfleet.core.errors import MirrorError, UsageError
from xfleet.mirror.backend import Connection

if TYPE_CHECKING:

    from xfleet.ops.compression import Plan, Scope
    from xfleet.ops.estimate import Estimate, Failure

_policy = click.option("--policy", "policy_path", metavar="FILE",
                       help="Policy YAML (default: the inventory's compression_policy).")
_nodes = nodes_option("Only these nodes or inventory groups (repeatable).")
_where = where_option("Only volumes matching, like 'used>10G' (repeatable).")
_batch = click.option("--batch", "batch_size", type=click.IntRange(1, 5000), default=500,
                      show_default=True, help="Volumes per zfs set command.")


def _scope(c: Ctx, nodes: tuple[str, ...], where: tuple[str, ...] = (),
           pattern: str | None = None) -> Scope:
    from xfleet.ops import compression

    return compression.scope_for(c.inventory(), nodes, where, pattern)


@contextlib.contextmanager
def _writer(c: Ctx) -> Iterator[Connection]:
    """A read-write connection to the mirror, which must exist already; closed after."""
    from xfleet import mirror

    path = c.mirror_path()
    if isinstance(path, Path) and not path.exists():
        raise MirrorError(f"the mirror {path} does not exist yet",
                          hint="run 'xfleet sync' first (or 'xfleet demo')")
    conn = mirror.connect(path)
    try:
        yield conn
    finally:
        conn.close()


def _when(t: float | None) -> str:
    return "-" if t is None else dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _size(n: float | None) -> str:
    from xfleet.ops.report import fmt_bytes

    return fmt_bytes(n)


@click.group("compression")
def compression_group() -> None:
    """Compression policy: plan, apply (batched, audited), estimate compressibility.

    A new setting only affects data written afterwards; existing data keeps its
    compression until it is rewritten (a move without send -c). See docs/compression.md.

    \b
    Examples:
      xfleet -i inventory/demo.yaml compression plan
      xfleet -i inventory/demo.yaml compression apply --dry-run
    """


@compression_group.command("plan")
@_policy
@_nodes
@_where
@_batch
@click.option("--show", "show", type=click.IntRange(0), default=15, show_default=True,
              help="How many single changes to list (largest estimated effect first).")
@json_option
@pass_ctx
def plan_cmd(c: Ctx, policy_path: str | None, nodes: tuple[str, ...],
             where: tuple[str, ...], batch_size: int, show: int, as_json: bool) -> None:
    """Show what the policy would change: desired vs current, with estimated effects.

    Reads the mirror only (no remote command). Estimated effects come from
    `xfleet compression estimate` (volumes without one show '-').

    \b
    Examples:
      xfleet -i inventory/demo.yaml compression plan
      xfleet compression plan --policy inventory/compression.yaml --node n1 --json
    """
    from xfleet.ops import compression

    inv = c.inventory()
    pol = compression.policy_for(inv, policy_path)
    scope = _scope(c, nodes, where)
    with _writer(c) as conn:
        p = compression.plan(conn, pol, inv, scope=scope, batch_size=batch_size,
                             tenant_property=inv.tenant_property)
        top = list(compression.changes(conn, p, limit=show)) if show else []
    if as_json:
        echo_json({**p.to_dict(), "changes": top})
        return
    _print_plan(p, top)


@compression_group.command("apply")
@_policy
@_nodes
@_where
@_batch
@click.option("--dry-run", is_flag=True, help="Print the commands, change nothing.")
@click.option("--resume", "resume_id", type=int, metavar="RUN",
              help="Continue an interrupted run (its pending changes).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before changing the nodes.")
@json_option
@pass_ctx
def apply_cmd(c: Ctx, policy_path: str | None, nodes: tuple[str, ...],
              where: tuple[str, ...], batch_size: int, dry_run: bool, resume_id: int | None,
              yes: bool, as_json: bool) -> None:
    """Apply the policy: `zfs set compression=X NAME...` in batches per node, audited.

    Every change is recorded in the mirror (compression_runs, compression_changes: who,
    when, node, old -> new, batch); an interrupted run resumes with --resume RUN.
    Applying twice changes nothing the second time. Existing data is NOT recompressed:
    the plan lists the volumes that need a rewrite to get the savings.

    \b
    Examples:
      xfleet -i inventory/demo.yaml compression apply --dry-run
      xfleet -i inventory/demo.yaml compression apply --node n1 --yes
      xfleet compression apply --resume 3 --yes
    """
    from xfleet.fleet.connections import Connections
    from xfleet.ops import compression

    inv = c.inventory()
    with _writer(c) as conn:
        if resume_id is not None:
            run = compression.get_run(conn, resume_id)
            if run.state == "done":
                raise UsageError(f"compression run {run.id} is already done")
        else:
            pol = compression.policy_for(inv, policy_path)
            p = compression.plan(conn, pol, inv, scope=_scope(c, nodes, where),
                                 batch_size=batch_size, tenant_property=inv.tenant_property)
            if dry_run:
                cmds = [(n, argv) for n, argv in compression.dry_run_commands(conn, p)]
                if as_json:
                    echo_json({**p.to_dict(), "commands": [
                        {"node": n, "argv": a} for n, a in cmds]})
                    return
                _print_plan(p, [])
                click.echo(f"\ndry run: {len(cmds)} command(s) would run:")
                for n, argv in cmds:
                    shown = argv[:6] + ([f"... ({len(argv) - 6} more)"]
                                        if len(argv) > 6 else [])
                    click.echo(f"  {n}: {' '.join(shown)}")
                return
            if p.volumes == 0:
                if as_json:
                    echo_json({"run": None, "volumes": 0}, indent=None)
                else:
                    click.echo("nothing to change: every volume already has the "
                               "compression the policy asks for")
                return
            if not as_json:
                _print_plan(p, [])
            confirm(yes, f"apply {p.volumes:,} changes with {p.commands:,} commands on "
                    f"{len(p.nodes())} node(s)?", "change compression on the nodes")
            run = compression.create_run(conn, p)
    with Connections(inv.hosts, trust_store=inv.trust_store,
                     state_dir=inv.state_dir) as conns:
        done, per_node = compression.Applier(c.mirror_path(), conns,
                                             parallel=inv.parallel).run(run.id)
    ok = done.state == "done" and not done.failed
    if as_json:
        doc = {"ok": ok, "run": done.to_dict(), "nodes": [n.to_dict() for n in per_node]}
        if not ok:
            bad = [n for n in per_node if n.error]
            doc = failed_doc(doc, f"compression run {done.id} is {done.state}: "
                             f"{done.failed:,} change(s) failed"
                             + (f"; {bad[0].node}: {bad[0].error}" if bad else ""),
                             where=", ".join(n.node for n in bad) or None,
                             hint=f"xfleet compression apply --resume {done.id} retries "
                             "what is pending")
        echo_json(doc)
    else:
        emit(["node", "done", "failed", "commands", "batches", "error"],
             [n.to_dict() for n in per_node], "table",
             title=f"compression run {done.id}: {done.state}")
        click.echo(f"run {done.id}: {done.done:,} set, {done.failed:,} failed, "
                   f"{done.commands:,} commands. New data is written with the new setting;"
                   " existing data needs a rewrite (see docs/compression.md).")
        if done.state != "done":
            click.echo(f"resume with: xfleet compression apply --resume {done.id}")
    if not ok:
        sys.exit(1)


@compression_group.command("estimate")
@click.argument("volume", required=False)
@_nodes
@where_option("Volumes matching, like 'compression=off' 'used>10G' (repeatable).")
@click.option("--algorithm", "-a", "algorithms", multiple=True, metavar="ALGO",
              help="Setting to estimate (repeatable; default: lz4, zstd and the "
              "policy's settings).")
@_policy
@click.option("--blocks", type=click.IntRange(1, 4096), default=256, show_default=True,
              help="Data blocks sampled per volume.")
@click.option("--max-bytes", default="8M", show_default=True, metavar="SIZE",
              help="Bytes read per volume at most.")
@click.option("--limit", "-l", type=click.IntRange(1), default=100, show_default=True,
              help="At most this many volumes (largest logical data first).")
@json_option
@pass_ctx
def estimate_cmd(c: Ctx, volume: str | None, nodes: tuple[str, ...],
                 where: tuple[str, ...], algorithms: tuple[str, ...],
                 policy_path: str | None, blocks: int, max_bytes: str, limit: int,
                 as_json: bool) -> None:
    """Estimate how well volumes compress: sample blocks over SSH, compress them here.

    One remote command per volume reads a bounded random sample of volblocksize-aligned
    blocks (no full read); ZFS's rules are applied (a block stays compressed only if it
    saves >= 12.5 % and a whole 2^ashift sector; zero blocks become holes). Results are
    stored in the mirror (compression_estimates) for plan and report.

    \b
    Examples:
      xfleet -i inventory/demo.yaml compression estimate --where compression=off --limit 20
      xfleet compression estimate tank/db/pg-main -a zstd-3 -a zstd-9 --blocks 1024
    """
    from xfleet.core.names import validate_dataset
    from xfleet.core.units import parse_size
    from xfleet.fleet.connections import Connections
    from xfleet.mirror import query
    from xfleet.ops import compression, estimate

    inv = c.inventory()
    if not volume and not where and not nodes:
        raise UsageError("say which volumes to estimate",
                         hint="give a VOLUME, --where EXPR or --node NODE")
    algos = [compression.validate_compression(a) for a in algorithms]
    if not algos:
        algos = ["lz4", "zstd"]
        try:
            pol = compression.policy_for(inv, policy_path)
            algos += [r.compression for r in pol.rules]
        except UsageError:
            pass
    algos = list(dict.fromkeys(compression.canonical(a) for a in algos))
    sel = query.Selection(where=where, tenant_property=inv.tenant_property,
                          nodes=[h.name for h in inv.select(nodes)] if nodes else ())
    clause, params = sel.compile()
    if volume:
        validate_dataset(volume, allow_snapshot=False)
        clause, params = f"({clause}) AND name = ?", [*params, volume]
    with _writer(c) as conn:
        items = estimate.targets(conn, clause, params, limit=limit)
        if not items:
            raise UsageError("no volume in the mirror matches",
                             hint="check the name (xfleet ls --type volume) or sync first")
        err = console(stderr=True)

        def progress(x: Estimate | Failure) -> None:
            if isinstance(x, estimate.Failure):
                err.print(f"{x.node}:{x.name}: {x.error}", style="red", markup=False)

        with Connections(inv.hosts, trust_store=inv.trust_store,
                         state_dir=inv.state_dir) as conns:
            ests, fails = estimate.estimate_fleet(
                conn, conns, items, algos, blocks=blocks, max_bytes=parse_size(max_bytes),
                parallel=inv.parallel, progress=progress)
    rows: list[dict[str, Any]] = [{"node": e.node, "volume": e.volume,
                                   "algorithm": e.algorithm,
             "ratio": None if e.ratio is None else round(e.ratio, 3),
             "ratio_low": None if e.ratio_low is None else round(e.ratio_low, 3),
             "ratio_high": None if e.ratio_high is None else round(e.ratio_high, 3),
             "holes": round(e.zero_fraction, 3), "blocks": e.blocks,
             "read": e.blocks_read, "of": e.blocks_total, "ashift": e.ashift,
             "ashift_assumed": e.ashift_assumed} for e in ests]
    if as_json:
        doc: dict[str, Any] = {"estimates": rows, "failed": [f.__dict__ for f in fails]}
        if fails:
            doc = failed_doc(doc, f"{len(fails)} volume(s) could not be estimated; first "
                             f"{fails[0].node}:{fails[0].name}: {fails[0].error}",
                             where=fails[0].node,
                             hint="each failure is in 'failed'; the others are stored")
        echo_json(doc)
    else:
        table = [{**r, "ratio (95%)": "-" if r["ratio"] is None else
                  f"{r['ratio']:.2f}x ({r['ratio_low']:.2f}..{r['ratio_high']:.2f})",
                  "sample": f"{r['blocks']} data + {r['read'] - r['blocks']} holes of "
                  f"{r['of']:,} blocks"} for r in rows]
        emit(["node", "volume", "algorithm", "ratio (95%)", "holes", "sample", "ashift"],
             table, "table")
        if any(r["ashift_assumed"] for r in rows):
            click.echo("note: the pool's ashift is not in the mirror; assumed 12 (4 KiB "
                       "sectors). Sync to record it.")
        click.echo("ratio = logical/physical of the stored blocks (what refcompressratio "
                   "shows after a rewrite); it applies to data written or rewritten with "
                   "that setting only.")
    if fails:
        sys.exit(1)


@compression_group.command("runs")
@click.option("--limit", "-l", type=click.IntRange(1), default=20, show_default=True)
@json_option
@pass_ctx
def runs_cmd(c: Ctx, limit: int, as_json: bool) -> None:
    """List compression apply runs (newest first).

    \b
    Examples:
      xfleet -i inventory/demo.yaml compression runs
    """
    from xfleet.ops import compression

    with _writer(c) as conn:
        rows = [r.to_dict() for r in compression.runs(conn, limit)]
    emit(["id", "state", "changes", "done", "failed", "commands", "operator", "created_at",
          "policy"], rows, "json" if as_json else "table")


@compression_group.command("audit")
@click.option("--run", "run_id", type=int, help="Only this run.")
@click.option("--volume", help="Only this volume.")
@click.option("--limit", "-l", type=click.IntRange(1), default=100, show_default=True)
@json_option
@csv_option
@pass_ctx
def audit_cmd(c: Ctx, run_id: int | None, volume: str | None, limit: int, as_json: bool,
              as_csv: bool) -> None:
    """Show the audit of applied changes: who, when, node, volume, old -> new, batch.

    \b
    Examples:
      xfleet -i inventory/demo.yaml compression audit --run 1 --limit 20
      xfleet compression audit --volume tank/db/pg-main --json
    """
    from xfleet.ops import compression

    with _writer(c) as conn:
        fmt = output_format(as_json, as_csv)
        rows = compression.audit(conn, run_id=run_id, volume=volume, limit=limit)
        if fmt == "table":
            rows = ({**r, "at": _when(r["at"])} for r in rows)
        emit(["run", "operator", "at", "node", "name", "old", "new", "rule", "batch", "state",
              "error"], rows, fmt)


# the `report` group: the compression report here, the capacity report in cli/capacity.py
@click.group("report")
def report_group() -> None:
    """Reports over the mirror.

    \b
    Examples:
      xfleet -i inventory/demo.yaml report compression --by tenant
      xfleet -i inventory/demo.yaml report capacity --html capacity.html
    """


@report_group.command("compression")
@click.option("--by", "by", default="node", show_default=True, metavar="GROUPING",
              help="node, pool, tenant, compression, volume or label:KEY (e.g. "
              "label:zone).")
@_policy
@click.option("--no-policy", is_flag=True, help="Leave the 'possible' columns out.")
@_nodes
@_where
@report_options("At most this many groups (largest savings first; 0: all).")
@pass_ctx
def report_compression(c: Ctx, by: str, policy_path: str | None, no_policy: bool,
                       nodes: tuple[str, ...], where: tuple[str, ...], limit: int,
                       html_path: str | None, as_json: bool, as_csv: bool) -> None:
    """Compression cost report: logical vs physical, savings in bytes and money.

    Columns: achieved now (logical, physical, ratio, saved, saved/month at the
    inventory's price_per_gb_month, in its currency), 'possible by policy' (estimated,
    95 % interval; needs apply AND a rewrite) and 'needs rewrite' (setting changed, data
    not yet recompressed), kept apart. Each run records today's totals (the trend).

    \b
    Examples:
      xfleet -i inventory/demo.yaml report compression --by label:zone
      xfleet -i inventory/demo.yaml report compression --by tenant --csv > tenants.csv
      xfleet -i inventory/demo.yaml report compression --html report.html
    """
    from xfleet.ops import compression, report

    fmt = output_format(as_json, as_csv)
    inv = c.inventory()
    pol = None
    if not no_policy and (policy_path or inv.compression_policy is not None):
        pol = compression.policy_for(inv, policy_path)
    scope = _scope(c, nodes, where)
    clause, params = scope.where, list(scope.params)
    if scope.nodes:
        clause = f"({clause}) AND d.node IN ({', '.join('?' for _ in scope.nodes)})"
        params += list(scope.nodes)
    with _writer(c) as conn:
        report.record_daily(conn)
        rep = report.build(conn, by=by, policy=pol, inventory=inv,
                           price_per_gb_month=inv.price_per_gb_month, where=clause,
                           params=params, limit=limit or None,
                           tenant_property=inv.tenant_property)
    if html_path:
        Path(html_path).write_text(report.render_html(rep))
        say(f"wrote {html_path}")
    if fmt == "json":
        echo_json(rep.to_dict())
    elif fmt == "csv":
        emit(list(report.COLUMNS), report.csv_rows(rep), "csv")
    else:
        emit(report.table_columns(rep), report.table_rows(rep), "table",
             title=f"compression by {by} (price {inv.price_per_gb_month:g} {rep.currency}"
             "/GB-month)")
        for note in rep.notes:
            console().print(f"  {note}", style="dim")


def _print_plan(p: Plan, top: list[dict[str, Any]]) -> None:
    from xfleet.ops.compression import NOTE_REWRITE

    rows = [{"node": g.node, "rule": g.rule, "from": g.old or "-", "to": g.new,
             "volumes": f"{g.volumes:,}", "referenced": g.referenced,
             "thick": f"{g.thick:,}",
             "estimated": f"{g.estimated:,}/{g.volumes:,}",
             "after rewrite (est.)": "-" if g.referenced_after is None else
             f"{_size(g.referenced_estimated)} -> {_size(g.referenced_after)}"}
            for g in p.groups]
    per_node = ", ".join(f"{n}: {c}" for n, c in p.commands_by_node().items())
    emit(["node", "rule", "from", "to", "volumes", "referenced", "thick", "estimated",
          "after rewrite (est.)"], rows, "table",
         title=f"compression plan: {p.volumes:,} volumes, {p.commands:,} zfs set commands "
         f"(batches of {p.batch_size}; {per_node or 'none'})")
    if top:
        emit(["node", "name", "old", "new", "referenced", "estimated ratio",
              "after rewrite"],
             [{**t,
               "estimated ratio": "-" if t["estimated_ratio"] is None else
               f"{t['estimated_ratio']:.2f}x ({t['ratio_low']:.2f}..{t['ratio_high']:.2f})",
               "after rewrite": _size(t["referenced_after"])} for t in top], "table",
             title="largest changes (each needs a rewrite to take effect on existing data)")
    console().print(f"note: {NOTE_REWRITE}; thick volumes (refreservation) keep their "
                    "reservation, so savings do not show in 'used'.", style="dim")
