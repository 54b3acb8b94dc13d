"""The `upgrade_target` step kind: a rolling upgrade of the NVMe-oF target daemon
(xfleet.ops.rollout). It records its rollout; a resumed play resumes that rollout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xfleet.ops import rollout
from xfleet.playbook.engine import Field, StepCtx, step_kind
from xfleet.playbook.model import PlaybookError


@step_kind("upgrade_target", {
    "version": Field((str,), required=True, doc="the version to upgrade the target to"),
    "package": Field((str,), required=True, doc="its package on this host (relative to the "
                     "playbook; a .deb or VERSION=PATH)"),
    "rollback_packages": Field((list,), doc="packages of the versions the nodes run now"),
    "nodes": Field((list,), doc="nodes or groups (default: every node with a target)"),
    "canary": Field((str,), doc="the node upgraded first, alone"),
    "serial": Field((list, str, int), doc='batch sizes after the canary, e.g. [1, 2, "25%"]'),
    "max_failures": Field((int,), doc="failures a batch may have (more pauses); default 0"),
    "soak": Field((int, float), doc="seconds a node stays ready before the next (10)"),
    "ready_timeout": Field((int, float), doc="seconds for a restarted target to be ready"),
    "deadline": Field((int, float), doc="progress deadline per node, seconds"),
    "skip_checks": Field((list,), doc="preflight checks to skip, by name"),
    "allow_downgrade": Field((bool,), doc="allow an older version"),
})
def _upgrade_target(ctx: StepCtx, args: dict[str, Any]) -> dict[str, Any]:
    """A rolling upgrade of the NVMe-oF target daemon (xfleet upgrade target): preflight,
    staging, canary, batches; fails (with the rollout paused) when a batch exceeds its
    failure budget. Resuming the playbook resumes the rollout."""
    prev = ctx.previous or {}
    if "rollout" in prev and not ctx.check:
        rid = int(prev["rollout"])
        ctx.notes.append(f"resuming rollout {rid}")
    else:
        serial = args.get("serial", [1])
        opts = rollout.Options(
            serial=rollout.parse_serial(serial if isinstance(serial, (list, str))
                                        else [serial]),
            max_failures=int(args.get("max_failures", 0)),
            soak=float(args.get("soak", 10.0)),
            ready_timeout=float(args.get("ready_timeout", 120.0)),
            deadline=float(args.get("deadline", 600.0)),
            skip=tuple(map(str, args.get("skip_checks") or ())),
            allow_downgrade=bool(args.get("allow_downgrade", False)),
            canary=args.get("canary"))
        p = rollout.plan(ctx.inv, ctx.mirror_path, ctx.conns, str(args["version"]),
                         str(args["package"]), [str(x) for x in args.get("rollback_packages")
                                                or ()],
                         opts, [str(n) for n in args.get("nodes") or ()] or None,
                         base=Path(ctx.where.rsplit(":", 1)[0]).parent)
        ctx.commands.extend(f"batch {i + 1}: restart {', '.join(b)} into {p.version}"
                            for i, b in enumerate(p.batches))
        ctx.notes.extend(f"{c.node or ''} {c.name}: {c.message}" for c in p.checks
                         if not c.ok or c.warning)
        if p.refused:
            first = p.refused[0]
            raise PlaybookError(f"upgrade_target: preflight refused: {first.node or ''} "
                                f"{first.name}: {first.message}", where=ctx.where,
                                hint="fix it, or add the check's name to skip_checks")
        if ctx.check:
            return {"nodes": len(p.nodes), "batches": len(p.batches)}
        rid = rollout.start(ctx.mirror_path, p)
        ctx.journal({"rollout": rid})
    res = rollout.Runner(ctx.inv, ctx.mirror_path, ctx.conns).run(rid)
    if res.state != "done":
        raise PlaybookError(f"rollout {rid} {res.state}: {res.reason}", where=ctx.where,
                            hint=f"xfleet rollouts show {rid}; the playbook's --resume "
                            "resumes the rollout")
    return {"rollout": rid, "state": res.state, "nodes": len(res.nodes)}
