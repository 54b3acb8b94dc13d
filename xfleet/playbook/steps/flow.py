"""The step kinds that steer a run: `wait` (until a condition on the mirror holds), `assert`
(stop unless it holds) and `run` (a command on nodes)."""

from __future__ import annotations

import threading
import time
from typing import Any

from xfleet import mirror
from xfleet.mirror.query import read_only
from xfleet.ops.sync import sync
from xfleet.playbook.engine import Field, StepCtx, step_kind
from xfleet.playbook.model import PlaybookError, typename
from xfleet.playbook.template import condition
from xfleet.remote.transport import check_argv, quote_command


@step_kind("wait", {"that": Field((str,), required=True, sql=True,
                                  doc="an SQL expression on the mirror"),
                    "timeout": Field((int, float)), "interval": Field((int, float)),
                    "sync": Field((bool, list), doc="sync (these nodes) before each check")})
def _wait(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Wait until a condition on the mirror holds (syncing first when `sync`)."""
    timeout = float(args.get("timeout", 600))
    interval = float(args.get("interval", 5))
    expr = str(args["that"])
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        if args.get("sync") and not ctx.check:
            nodes = args["sync"] if isinstance(args["sync"], list) else []
            sync(ctx.inv, ctx.mirror_path, [str(n) for n in nodes], refresh=False,
                 connections=ctx.conns)
        conn = mirror.connect(ctx.mirror_path, readonly=True)
        try:
            ok = condition(conn, expr, ctx.vars, ctx.where)
        finally:
            conn.close()
        polls += 1
        if ok:
            return {"polls": polls, "met": True}
        if ctx.check:
            ctx.notes.append(f"wait: not met now; would wait up to {timeout:g}s")
            return {"polls": polls, "met": False}
        if time.monotonic() >= deadline:
            raise PlaybookError(f"wait: {args['that']!r} not met after {timeout:g}s",
                                where=ctx.where)
        time.sleep(interval)


@step_kind("assert", {"that": Field((str,), required=True, sql=True,
                                    doc="an SQL expression on the mirror"),
                      "message": Field((str,), doc="said when it fails")})
def _assert(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Stop the run unless a condition holds (in --check too)."""
    conn = read_only(mirror.connect(ctx.mirror_path, readonly=True))
    try:
        ok = condition(conn, str(args["that"]), ctx.vars, ctx.where)
    finally:
        conn.close()
    message = str(args.get("message") or f"assertion failed: {args['that']}")
    if not ok and ctx.check and ctx.after_changes:
        ctx.notes.append(f"does not hold now ({message}); earlier steps would change that")
        return {"ok": None}
    if not ok:
        raise PlaybookError(message, where=ctx.where)
    return {"ok": True}


@step_kind("run", {"argv": Field((list,), required=True, doc="an argument list, never a shell "
                                 "line"),
                   "nodes": Field((list,), required=True, doc="nodes or groups"),
                   "check_exit": Field((bool,))})
def _run(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """Run a command (an argument list) on nodes; a node that already ran it in this run is
    not run again on resume."""
    raw = args["argv"]
    if not raw:
        raise PlaybookError("run: argv is empty", where=ctx.where,
                            hint="argv: [program, arg, ...] (an argument list, never a shell "
                            "line)")
    wrong = [a for a in raw if a is None or isinstance(a, (bool, dict, list))]
    if wrong:
        raise PlaybookError(f"run: argv holds {typename(wrong[0])}, not a string or a number",
                            where=ctx.where, hint="quote every argument; a template that "
                            "renders to nothing is an empty string: \"\"")
    argv = [str(a) for a in raw]
    check_argv(argv)
    hosts = [h.name for h in ctx.inv.select([str(n) for n in args["nodes"]])]

    prev = {n: r for n, r in (ctx.previous or {}).get("nodes", {}).items() if r["exit"] == 0}
    todo = [h for h in hosts if h not in prev]
    ctx.commands.extend(f"{h}: {quote_command(argv)}" for h in todo)
    if ctx.check:
        return {"nodes": hosts}
    results: dict[str, Any] = dict(prev)
    lock = threading.Lock()

    def one(node: str, t: Any) -> None:
        res = t.run(argv, check=False)
        with lock:
            results[node] = {"exit": res.exit_status, "stdout": res.stdout[-4000:],
                             "stderr": res.stderr[-2000:]}
            ctx.journal({"nodes": results})

    outs = ctx.conns.each(todo, one, parallel=ctx.inv.parallel)
    ctx.remote += len(todo)
    bad = [f"{r.node}: {r.error.message}" for r in outs if r.error is not None]
    if args.get("check_exit", True):
        bad += [f"{n}: exit {r['exit']}: {r['stderr'].strip()[-200:]}"
                for n, r in results.items() if r["exit"] != 0]
    if bad:
        raise PlaybookError("run: " + "; ".join(bad[:5]), where=ctx.where)
    return {"nodes": results}
