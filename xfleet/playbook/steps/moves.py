"""The `move` and `drain` step kinds (xfleet.ops.moves). An item records its move ids before
the moves start; a resumed run continues those moves."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from xfleet.ops import moves
from xfleet.playbook.engine import Field, StepCtx, step_kind
from xfleet.playbook.model import PlaybookError


def _run_moves(ctx: StepCtx, ids: list[int], parallel: int) -> list[dict[str, Any]]:
    runner = moves.Runner(ctx.inv, ctx.mirror_path, ctx.conns)
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as ex:
        done = list(ex.map(runner.run, ids))
    failed = [m for m in done if m.state != "done"]
    if failed:
        raise PlaybookError("; ".join(f"move {m.id} ({m.volume}) {m.state}: {m.error}"
                                      for m in failed[:5]), where=ctx.where,
                            hint="xfleet moves show ID; xfleet play --resume continues")
    return [{"id": m.id, "volume": m.volume, "target": f"{m.target_node}:{m.target_volume}",
             "retired_as": m.retired_as} for m in done]


@step_kind("move", {"volume": Field((str,), required=True), "to": Field((str,), required=True,
                                                                        doc="NODE[/POOL]"),
                    "from": Field((str,)), "options": Field((dict,))})
def _move(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Move a volume to another node (xfleet.ops.moves: verified send/receive with cutover)."""
    prev = ctx.previous or {}
    if "move" in prev and not ctx.check:  # an interrupted attempt: continue that move
        ctx.notes.append(f"resuming move {prev['move']}")
        return _run_moves(ctx, [int(prev["move"])], 1)[0]
    conn = ctx.reader()
    try:
        p = moves.plan_move(ctx.inv, conn, str(args["volume"]), str(args["to"]),
                            source_node=args.get("from"), options=args.get("options"))
        ctx.commands.extend(p.commands)
        if ctx.check:
            return {"volume": p.volume, "target": f"{p.target_node}:{p.target_volume}"}
        m = moves.create(ctx.inv, conn, p, args.get("options"))
    finally:
        conn.close()
    ctx.journal({"move": m.id})
    return _run_moves(ctx, [m.id], 1)[0]


@step_kind("drain", {"node": Field((str,), required=True), "to": Field((list,)),
                     "parallel": Field((int,), doc="moves at once (default 1)")})
def _drain(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Move every volume off a node (xfleet.ops.moves.plan_drain), balancing by free space."""
    prev = ctx.previous or {}
    parallel = int(args.get("parallel") or 1)
    if "moves" in prev and not ctx.check:
        ctx.notes.append(f"resuming moves {prev['moves']}")
        return {"moves": _run_moves(ctx, [int(i) for i in prev["moves"]], parallel),
                "refused": prev.get("refused", [])}
    conn = ctx.reader()
    try:
        plans, refused = moves.plan_drain(ctx.inv, conn, str(args["node"]),
                                          [str(t) for t in args.get("to") or []])
        for p in plans:
            ctx.commands.append(f"move {p.volume} ({p.source_node}) -> "
                                f"{p.target_node}:{p.target_volume} ({p.needed_bytes:,} bytes)")
        ctx.notes.extend(f"cannot move {v}: {w}" for v, w in refused)
        if refused:
            raise PlaybookError(f"drain: {len(refused)} volume(s) cannot move: "
                                + "; ".join(f"{v}: {w}" for v, w in refused[:5]),
                                where=ctx.where)
        if ctx.check:
            return {"moves": len(plans)}
        ids = []
        for p in plans:
            ids.append(moves.create(ctx.inv, conn, p).id)
            ctx.journal({"moves": ids})
    finally:
        conn.close()
    return {"moves": _run_moves(ctx, ids, parallel), "refused": []}
