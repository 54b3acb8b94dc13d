"""The `sync` and `query` step kinds: the mirror brought up to date, and read. Also how a resumed
run syncs first when an item was interrupted (@resync)."""

from __future__ import annotations

from typing import Any

from xfleet import mirror
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror.backend import ERRORS, Location
from xfleet.mirror.query import read_only
from xfleet.ops.sync import sync
from xfleet.playbook.engine import Field, StepCtx, resync, step_kind
from xfleet.playbook.model import PlaybookError
from xfleet.playbook.template import bind

DEFAULT_MAX_ROWS = 100_000


@resync
def _resync(inv: Inventory, mirror_path: Location, conns: Connections) -> None:
    """Before a resumed run retries interrupted items, an incremental sync: an interrupted
    item may have changed nodes the mirror has not seen yet."""
    sync(inv, mirror_path, refresh=False, connections=conns)


@step_kind("sync", {"nodes": Field((list,), doc="nodes or groups (default: all)"),
                    "full": Field((bool,))})
def _sync(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Bring the mirror up to date (incremental unless `full`)."""
    nodes = [str(n) for n in args.get("nodes") or []]
    ctx.inv.select(nodes)  # unknown names are errors, in check mode too
    if ctx.check:
        ctx.notes.append(f"sync {', '.join(nodes) or 'all nodes'}"
                         + (" (full)" if args.get("full") else ""))
        return {"nodes": nodes}
    rep = sync(ctx.inv, ctx.mirror_path, nodes, full=bool(args.get("full")), refresh=False,
               connections=ctx.conns)
    ctx.remote += sum(n.commands for n in rep.nodes)
    if not rep.ok:
        raise PlaybookError("sync failed: " + "; ".join(
            f"{n.node}: {n.error}" for n in rep.failed), where=ctx.where)
    return {"nodes": [n.node for n in rep.nodes],
            "datasets": sum(n.datasets for n in rep.nodes)}


@step_kind("query", {"sql": Field((str,), required=True, doc="a SELECT on the mirror",
                                 sql=True),
                     "max_rows": Field((int,))},
           needs_register="its rows are bound to a variable")
def _query(ctx: StepCtx, args: dict[str, Any]) -> list[dict[str, Any]]:
    """SQL on the mirror (read-only); the rows (dicts) are bound to `register`."""
    limit = int(args.get("max_rows") or DEFAULT_MAX_ROWS)
    conn = read_only(mirror.connect(ctx.mirror_path, readonly=True))
    try:
        try:
            sql, params = bind(str(args["sql"]), ctx.vars, ctx.where)
            cur = conn.execute(sql, params)
        except ERRORS as exc:
            raise PlaybookError(f"query: {exc}", where=ctx.where,
                                hint="a read-only SELECT on the mirror (docs/mirror.md)") from None
        cols = [d[0] for d in cur.description or ()]
        rows: list[dict[str, Any]] = []
        for r in cur:
            if len(rows) >= limit:
                raise PlaybookError(f"query: more than {limit} rows", where=ctx.where,
                                    hint="narrow it, or raise max_rows")
            rows.append(dict(zip(cols, r, strict=True)))
    finally:
        conn.close()
    ctx.notes.append(f"query: {len(rows)} row(s)")
    return rows
