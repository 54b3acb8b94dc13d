"""The `compression_apply` and `compression_report` step kinds (xfleet.ops.compression,
xfleet.ops.report). An apply records its compression run; a resumed play continues that run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xfleet.ops import compression, report
from xfleet.playbook.engine import Field, StepCtx, step_kind
from xfleet.playbook.model import PlaybookError


def _compression_scope(ctx: StepCtx, args: dict[str, Any]) -> Any:
    where = args.get("where") or ()
    return compression.scope_for(
        ctx.inv, [str(n) for n in args.get("nodes") or ()],
        [str(w) for w in ([where] if isinstance(where, str) else where)],
        args.get("pattern"), [str(args["tenant"])] if args.get("tenant") else [])


_COMPRESSION_SCOPE = {
    "policy": Field((str,), doc="a policy file (default: the inventory's compression_policy)"),
    "nodes": Field((list,), doc="nodes or groups (default: all)"),
    "tenant": Field((str,), doc="only this tenant's volumes"),
    "pattern": Field((str,), doc="a name glob, e.g. tank/t0001/*"),
    "where": Field((list, str), doc="conditions like xfleet ls --where (compression=off)"),
}


@step_kind("compression_apply", dict(_COMPRESSION_SCOPE))
def _compression_apply(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Apply the compression policy (xfleet compression apply): one `zfs set` per 500
    volumes per node, audited, resumable. New settings affect newly written data only."""
    conn = ctx.reader()
    try:
        prev = ctx.previous or {}
        if "run" in prev and not ctx.check:
            run_id = int(prev["run"])
            ctx.notes.append(f"resuming compression run {run_id}")
        else:
            pol = compression.policy_for(ctx.inv, args.get("policy"))
            plan = compression.plan(conn, pol, ctx.inv, scope=_compression_scope(ctx, args),
                                    tenant_property=ctx.inv.tenant_property)
            cmds = list(compression.dry_run_commands(conn, plan))
            ctx.commands.extend(f"{node}: {' '.join(argv[:4])} ... ({len(argv) - 3} "
                                "volume(s))" for node, argv in cmds)
            ctx.notes.append("a new setting applies to newly written data only; existing "
                             "data is recompressed by a rewrite (a move without -c)")
            if ctx.check or not cmds:
                return {"changes": sum(g.volumes for g in plan.groups), "commands": len(cmds)}
            run_id = compression.create_run(conn, plan).id
            ctx.journal({"run": run_id})
    finally:
        conn.close()
    run, per_node = compression.Applier(ctx.mirror_path, ctx.conns).run(run_id)
    ctx.remote += sum(n.commands for n in per_node)
    failed = [n for n in per_node if n.error]
    if failed:
        raise PlaybookError(f"compression run {run_id}: {failed[0].node}: {failed[0].error}",
                            where=ctx.where, hint=f"xfleet compression apply --resume {run_id}")
    return {"run": run_id, "changes": run.done, "commands": run.commands}


@step_kind("compression_report", {
    **_COMPRESSION_SCOPE,
    "by": Field((str,), doc="node, pool, tenant, compression, volume or label:KEY"),
    "html": Field((str,), doc="write the self-contained HTML report to this file"),
    "json": Field((str,), doc="write the report as JSON to this file"),
})
def _compression_report(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """The compression cost report (xfleet report compression), written to files; records
    today's totals for the trend."""
    scope = _compression_scope(ctx, args)
    outputs = [(k, str(args[k])) for k in ("html", "json") if args.get(k)]
    ctx.commands.extend(f"write the compression report ({k}) to {f}" for k, f in outputs)
    if ctx.check:
        return {"files": [f for _, f in outputs]}
    pol = None
    if args.get("policy") or ctx.inv.compression_policy is not None:
        pol = compression.policy_for(ctx.inv, args.get("policy"))
    conn = ctx.reader()
    try:
        report.record_daily(conn)
        node_clause = "1" if not scope.nodes else \
            f"node IN ({', '.join('?' for _ in scope.nodes)})"
        rep = report.build(conn, by=str(args.get("by") or "node"), policy=pol,
                           inventory=ctx.inv, price_per_gb_month=ctx.inv.price_per_gb_month,
                           where=f"({scope.where}) AND {node_clause}",
                           params=[*scope.params, *scope.nodes],
                           tenant_property=ctx.inv.tenant_property)
    finally:
        conn.close()
    for kind, path in outputs:
        Path(path).write_text(report.render_html(rep) if kind == "html"
                              else json.dumps(rep.to_dict(), indent=2))
    return {"files": [f for _, f in outputs], "groups": len(rep.to_dict().get("rows", []))}
