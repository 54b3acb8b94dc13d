"""The lifecycle step kinds (xfleet.ops.lifecycle): `snapshot`, `clone`, `destroy`, `set`,
`resize`. Their plans skip what exists, so a resumed run re-plans and does not act twice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xfleet.core.errors import UsageError
from xfleet.core.yamlsrc import plain
from xfleet.mirror import query
from xfleet.ops import lifecycle
from xfleet.playbook.engine import Field, StepCtx, step_kind
from xfleet.playbook.model import PlaybookError, typename
from xfleet.playbook.template import is_template


def _targets(ctx: StepCtx, args: dict[str, Any]) -> list[lifecycle.Target]:
    """`targets` (names, or rows with name/node, e.g. a query's) or `select` (like xfleet ls:
    node, pool, type, tenant, pattern, where)."""
    conn = ctx.reader()
    try:
        if "select" in args:
            s = args["select"]
            if not isinstance(s, dict):
                raise PlaybookError("select: a mapping (node, pool, type, tenant, pattern, "
                                    "where)", where=ctx.where)
            unknown = set(s) - {"node", "pool", "type", "tenant", "pattern", "where", "label"}
            if unknown:
                raise PlaybookError(f"select: unknown key {sorted(unknown)[0]!r}",
                                    where=ctx.where, hint="node, pool, type, tenant, label, "
                                    "pattern, where")

            def many(k: str) -> tuple[str, ...]:
                v = s.get(k)
                return () if v is None else tuple(map(str, v)) if isinstance(v, list) \
                    else (str(v),)

            sel = query.Selection(nodes=many("node"), pools=many("pool"),
                                  types=many("type") or ("volume",), tenants=many("tenant"),
                                  labels=many("label"), pattern=s.get("pattern"),
                                  where=many("where"),
                                  columns=("node", "name", "type", "volsize", "volblocksize",
                                           "origin"))
            return lifecycle.targets_from_rows(query.ls(conn, sel))
        raw = args["targets"]
        if isinstance(raw, (str, dict)):
            raw = [raw]
        if not isinstance(raw, list):
            raise PlaybookError(f"targets: a list of names or rows, got {typename(raw)}",
                                where=ctx.where)
        out = []
        node = args.get("node")
        for t in raw:
            if isinstance(t, dict):
                if "name" not in t:
                    raise PlaybookError("targets: a row needs a 'name' column",
                                        where=ctx.where, hint="SELECT node, name FROM ...")
                out.extend(lifecycle.resolve(conn, [str(t["name"])], t.get("node") or node,
                                             where=ctx.where))
            else:
                out.extend(lifecycle.resolve(conn, [str(t)], node, where=ctx.where))
        return out
    finally:
        conn.close()


def _apply(ctx: StepCtx, plan: lifecycle.LifecyclePlan) -> dict[str, Any]:
    ctx.commands.extend(c.line() for c in plan.commands)
    ctx.notes.extend(f"skip {n}:{x}: {w}" for n, x, w in plan.skipped[:5])
    if len(plan.skipped) > 5:
        ctx.notes.append(f"... {len(plan.skipped) - 5} more skipped")
    if ctx.check:
        ctx.planned.update(plan.created)
    summary: dict[str, Any] = {
        "op": plan.op, "commands": len(plan.commands),
        "created": [x for _, x in plan.created], "destroyed": len(plan.destroyed),
        "changed": len(plan.changed), "skipped": len(plan.skipped)}
    if ctx.check or not plan.commands:
        return summary
    out = lifecycle.execute(ctx.inv, ctx.mirror_path, plan, ctx.conns, source="play")
    ctx.remote += out.commands
    if not out.ok:
        raise PlaybookError("; ".join(f"{n.node}: {n.error}" for n in out.nodes if not n.ok),
                            where=ctx.where)
    return summary


_TARGETS = {"targets": Field((list, str, dict), doc="dataset names or rows with name/node"),
            "select": Field((dict,), doc="like xfleet ls: node, pool, type, tenant, where"),
            "node": Field((str,), doc="the node, when names are ambiguous")}


def _props_ok(key: str) -> Callable[[dict[str, Any], str], None]:
    def check(args: dict[str, Any], file: str) -> None:
        if key in args and isinstance(args[key].value, dict):
            props = plain(args[key])
            if not any(isinstance(v, str) and is_template(v) for v in props.values()):
                try:
                    lifecycle.validate_properties(props, types=(),
                                                  where=f"{file}:{args[key].at}")
                except UsageError as exc:
                    raise PlaybookError(exc.message, where=exc.where, hint=exc.hint) from None

    return check


@step_kind("snapshot", {**_TARGETS, "name": Field((str,), required=True, doc="after the @"),
                        "properties": Field((dict,))}, one_of=(("targets", "select"),))
def _snapshot(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Snapshot the targets: one `zfs snapshot` per pool (existing snapshots are skipped)."""
    conn = ctx.reader()
    try:
        plan = lifecycle.plan_snapshot(conn, _targets(ctx, args), str(args["name"]),
                                       properties=args.get("properties"))
    finally:
        conn.close()
    return _apply(ctx, plan)


@step_kind("clone", {"source": Field((str,), required=True, doc="a volume or a snapshot"),
                     "target": Field((str,), required=True, doc="the clone's name"),
                     "snapshot": Field((str,), doc="pin an existing snapshot of source"),
                     "node": Field((str,)), "properties": Field((dict,))},
           validate=_props_ok("properties"))
def _clone(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Branch a volume: a clone of a snapshot (pinned, or a new one)."""
    conn = ctx.reader()
    try:
        source = str(args["source"])
        would = [n for n, x in ctx.planned if x == source and n == args.get("node", n)]
        if ctx.check and would and not lifecycle.resolve_optional(conn, source, would[0]):
            src = lifecycle.Target(would[0], source, "snapshot")  # an earlier step creates it
        else:
            (src,) = lifecycle.resolve(conn, [source], args.get("node"), where=ctx.where)
        stamp = str(ctx.vars.get("time")) if "time" in ctx.vars else None
        plan = lifecycle.plan_clone(conn, src, str(args["target"]), snapshot=args.get("snapshot"),
                                    properties=args.get("properties"), stamp=stamp)
    finally:
        conn.close()
    return _apply(ctx, plan)


@step_kind("destroy", {**_TARGETS, "clones": Field((str,), doc="refuse, destroy or promote"),
                       "release": Field((bool,))}, one_of=(("targets", "select"),))
def _destroy(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Destroy volumes (with their snapshots) or snapshots; refusals as `xfleet destroy`.
    Targets already gone are skipped."""
    conn = ctx.reader()
    try:
        try:
            targets = _targets(ctx, args)
        except UsageError as exc:
            if "not in the mirror" not in exc.message:
                raise
            ctx.notes.append(f"destroy: {exc.message} (gone already)")
            return {"op": "destroy", "commands": 0, "destroyed": 0}
        plan = lifecycle.plan_destroy(conn, targets, clones=str(args.get("clones", "refuse")),
                                      release=bool(args.get("release")),
                                      holds=lifecycle.RemoteHolds(ctx.conns))
    finally:
        conn.close()
    ctx.notes.extend(f"destroy {n}:{x} ({t})" for n, x, t in plan.destroyed[:50])
    return _apply(ctx, plan)


@step_kind("set", {**_TARGETS, "properties": Field((dict,), required=True)},
           one_of=(("targets", "select"),), validate=_props_ok("properties"))
def _set(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Set properties on the targets: one `zfs set` per node and batch."""
    conn = ctx.reader()
    try:
        plan = lifecycle.plan_set(conn, _targets(ctx, args), dict(args["properties"]))
    finally:
        conn.close()
    return _apply(ctx, plan)


@step_kind("resize", {**_TARGETS, "size": Field((str,), required=True, doc="20G or +10G")},
           one_of=(("targets", "select"),))
def _resize(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Grow volumes (volsize); shrinking is refused."""
    conn = ctx.reader()
    try:
        plan = lifecycle.plan_resize(conn, _targets(ctx, args), str(args["size"]))
    finally:
        conn.close()
    return _apply(ctx, plan)
