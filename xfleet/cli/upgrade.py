"""`xfleet upgrade target VERSION`, `xfleet rollouts list|show|pause|resume|stop`, `xfleet
target status`: the CLI face of xfleet.ops.rollout (docs/upgrades.md).

The library is imported inside the commands, so that `xfleet --help` stays fast."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
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
)
from xfleet.core.errors import XfleetError

if TYPE_CHECKING:
    from xfleet.mirror.backend import Location
    from xfleet.ops.rollout import Result

EXIT_PAUSED = 4  # the rollout paused (a failure beyond its budget, or asked to)
EXIT_FINDINGS = 5  # target audit: an export open to any host, or a drift from the mirror


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def _say_fn(as_json: bool) -> Callable[[str], None]:
    """Progress lines on stderr, each with the time (none with --json)."""
    err = console(stderr=True)
    return (lambda m: None) if as_json else (
        lambda m: err.print(f"[{time.strftime('%H:%M:%S')}] {m}", highlight=False,
                            markup=False))


def _finish(result: Result, as_json: bool) -> None:
    if as_json:
        doc = {"ok": result.state != "paused", **result.to_dict()}
        if result.state == "paused":
            doc = failed_doc(doc, f"rollout {result.id} paused"
                             + (f": {result.reason}" if result.reason else ""),
                             hint=f"xfleet rollouts show {result.id}; xfleet rollouts resume "
                             f"{result.id} retries, xfleet rollouts stop {result.id} ends it")
        echo_json(doc)
    else:
        _nodes_table(result.nodes)
        click.echo(f"rollout {result.id}: {result.state}"
                   + (f": {result.reason}" if result.reason else ""))
        if result.state == "paused":
            click.echo(f"  xfleet rollouts show {result.id}; xfleet rollouts resume "
                       f"{result.id} retries, xfleet rollouts stop {result.id} ends it",
                       err=True)
    if result.state == "paused":
        sys.exit(EXIT_PAUSED)


def _rollout_state(path: Location, rid: int) -> Callable[[], dict[str, Any]]:
    """The rollout's summary from the journal, for the error document of --json."""

    def state() -> dict[str, Any]:
        from xfleet import mirror
        from xfleet.ops import rollout

        conn = mirror.connect(path, readonly=True)
        try:
            d: dict[str, Any] = rollout.summary(conn, rid)
            return d
        finally:
            conn.close()

    return state


def _nodes_table(nodes: list[dict[str, Any]]) -> None:
    emit(["batch", "node", "from", "state", "step", "seconds", "error"],
         [{"batch": n["batch"] + 1, "node": n["node"], "from": n["from_version"],
           "state": n["state"], "step": n["step"],
           "seconds": n["seconds"], "error": n["error"]} for n in nodes], "table")


@click.group("upgrade")
def upgrade_group() -> None:
    """Rolling upgrades across the fleet.

    \b
    Example:
      xfleet upgrade target 1.1 --package t_1.1_all.deb --rollback-package t_1.0_all.deb \\
          --dry-run
    """


@upgrade_group.command("target")
@click.argument("version")
@click.option("--package", "package_path", required=True, metavar="PATH",
              help="The new version's package on this host (a .deb, or VERSION=PATH).")
@click.option("--rollback-package", "rollback", multiple=True, metavar="[VERSION=]PATH",
              help="A package of a version nodes run now, to roll back to (repeatable).")
@click.option("--nodes", "-n", "nodes", multiple=True, metavar="NODE",
              help="Only these nodes (default: every node with a target; nodes added to "
              "the inventory during the rollout are then picked up).")
@click.option("--canary", metavar="NODE", help="The node upgraded first, alone "
              "(default: the first node).")
@click.option("--serial", default="1", show_default=True, metavar="SIZES",
              help="Batch sizes after the canary: counts or percentages of the nodes, "
              "the last repeats, e.g. 1,2,25%.")
@click.option("--max-failures", type=click.IntRange(0), default=0, show_default=True,
              help="Failures a batch may have and still continue (more than this, not "
              "equal, pauses; the canary's budget is always 0).")
@click.option("--soak", type=click.FloatRange(0), default=10.0, show_default=True,
              help="Seconds a node must stay ready before the next one.")
@click.option("--ready-timeout", type=click.FloatRange(1), default=120.0,
              show_default=True, help="Seconds for a restarted target to be ready.")
@click.option("--deadline", type=click.FloatRange(0), default=600.0, show_default=True,
              help="Progress deadline: seconds one node may take, start to done "
              "(0: none).")
@click.option("--skip-check", "skip", multiple=True, metavar="CHECK",
              help="Skip one preflight check by name (repeatable): reachable, version, "
              "rollback, pools, moves, exports, identities, clients.")
@click.option("--allow-downgrade", is_flag=True,
              help="Allow VERSION to be older than what a node runs.")
@click.option("--dry-run", is_flag=True,
              help="Run the preflight checks and show the batches; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_ctx
def upgrade_target(c: Ctx, version: str, package_path: str, rollback: tuple[str, ...],
                   nodes: tuple[str, ...], canary: str | None, serial: str,
                   max_failures: int, soak: float, ready_timeout: float, deadline: float,
                   skip: tuple[str, ...], allow_downgrade: bool, dry_run: bool, yes: bool,
                   as_json: bool) -> None:
    """Upgrade the NVMe-oF target daemon node by node, without I/O errors for clients.

    Preflight first (each check skippable only with --skip-check NAME): every node
    reachable, no silent downgrade, a package to roll back to, pools healthy with no
    scrub or resilver, no move in progress, exports matching the mirror with pinned
    identities, initiators' reconnect budget. Then the package is copied to every node and
    its sha256 verified there, before any restart. Then the canary alone, then batches:
    each node is checked again, restarted, must be ready at VERSION with the same exports,
    soaks, and is verified from the initiators in the inventory. A failed node is rolled
    back and the rollout pauses (exit status 4) with the reason. The rollout is journaled:
    after a crash, `xfleet rollouts resume ID` continues it.

    \b
    Examples:
      xfleet upgrade target 1.1 --package dist/xfleet-lab-target_1.1_all.deb \\
          --rollback-package dist/xfleet-lab-target_1.0_all.deb --dry-run
      xfleet upgrade target 1.1 --package t_1.1_all.deb --rollback-package t_1.0_all.deb \\
          --serial 1,25% --soak 30 --yes
    """
    from xfleet.fleet.connections import Connections
    from xfleet.ops import rollout

    opts = rollout.Options(serial=rollout.parse_serial(serial), max_failures=max_failures,
                           soak=soak, ready_timeout=ready_timeout, deadline=deadline,
                           skip=tuple(skip), allow_downgrade=allow_downgrade,
                           canary=canary)
    inv = c.inventory()
    path = c.mirror_path()
    say = _say_fn(as_json)
    with Connections(inv.hosts, trust_store=inv.trust_store,
                     state_dir=inv.state_dir) as conns:
        p = rollout.plan(inv, path, conns, version, package_path, rollback, opts, nodes)
        JSON_OUT.state = p.to_dict  # a refused plan is the state of the error document
        if as_json and dry_run and not p.refused:
            echo_json(p.to_dict())
        elif not as_json:
            for ch in p.checks:
                mark = "ok " if ch.ok and not ch.warning else "WARN" if ch.ok else (
                    "skip" if ch.name in opts.skip else "FAIL")
                click.echo(f"{mark:4} {ch.name:10} {ch.node or '':12} {ch.message}")
            click.echo("batches: " + " | ".join(", ".join(b) for b in p.batches))
        if dry_run and not p.refused:
            if not as_json:
                click.echo("dry run: nothing was changed")
            return
        if not p.refused:
            confirm(yes, f"Upgrade the target on {len(p.nodes)} node(s) to {version}?",
                    f"upgrade {len(p.nodes)} node(s)")
        rid = rollout.start(path, p)
        JSON_OUT.state = _rollout_state(path, rid)
        say(f"rollout {rid}: {len(p.nodes)} node(s) in {len(p.batches)} batch(es)")
        result = rollout.Runner(inv, path, conns, say=say).run(rid)
    _finish(result, as_json)


@click.group("rollouts")
def rollouts_group() -> None:
    """List, show, pause, resume and stop journaled rollouts.

    \b
    Examples:
      xfleet rollouts list
      xfleet rollouts show 3
      xfleet rollouts pause 3
      xfleet rollouts resume 3
      xfleet rollouts stop 3
    """


@rollouts_group.command("list")
@click.option("--limit", "-l", type=click.IntRange(1), default=50, show_default=True)
@json_option
@pass_ctx
def rollouts_list(c: Ctx, limit: int, as_json: bool) -> None:
    """The latest rollouts with their progress.

    \b
    Example:
      xfleet rollouts list
    """
    from xfleet.ops import rollout

    with c.reader() as conn:
        rows = rollout.list_rollouts(conn, limit=limit)
    if as_json:
        echo_json([{k: v for k, v in r.items() if k != "nodes"} for r in rows])
        return
    emit(["id", "version", "state", "nodes", "current", "started", "operator", "reason"],
         [{"id": r["id"], "version": r["version"],
           "state": r["state"] + (f" ({r['control']} requested)" if r["control"] else ""),
           "nodes": f"{r['nodes_done']}/{r['nodes_total']}",
           "current": "; ".join(r["current"]), "started": _when(r["created_at"]),
           "operator": r["operator"], "reason": r["reason"]} for r in rows], "table")


@rollouts_group.command("show")
@click.argument("rollout_id", metavar="ID", type=int)
@click.option("--log", "log_lines", type=click.IntRange(0), default=20, show_default=True,
              help="How many of the latest log lines to show (0: all).")
@json_option
@pass_ctx
def rollouts_show(c: Ctx, rollout_id: int, log_lines: int, as_json: bool) -> None:
    """A rollout's nodes (batch, state, step, time per node) and its log.

    \b
    Example:
      xfleet rollouts show 3
    """
    from xfleet.ops import rollout

    with c.reader() as conn:
        d = rollout.summary(conn, rollout_id)
        d["log"] = rollout.log(conn, rollout_id, log_lines or None)
    if as_json:
        echo_json(d)
        return
    click.echo(f"rollout {d['id']} to {d['version']}: {d['state']}, "
               f"{d['nodes_done']}/{d['nodes_total']} node(s) done"
               + (f" — {d['reason']}" if d["reason"] else ""))
    _nodes_table(d["nodes"])
    for e in d["log"]:
        click.echo(f"  {_when(e['at'])} {e['node'] or '-':10} {e['state']:12} "
                   f"{e['message']}")


def _request(c: Ctx, rollout_id: int, what: str, as_json: bool) -> None:
    """Ask the process running the rollout to pause or stop (through its journal)."""
    from xfleet.ops import rollout

    state = rollout.request(c.mirror_path(), rollout_id, what)
    if as_json:
        echo_json({"id": rollout_id, "state": state}, indent=None)
    else:
        click.echo(f"rollout {rollout_id}: {state}")


@rollouts_group.command("pause")
@click.argument("rollout_id", metavar="ID", type=int)
@json_option
@pass_ctx
def rollouts_pause(c: Ctx, rollout_id: int, as_json: bool) -> None:
    """Pause a rollout after the nodes being upgraded now finish.

    A node mid-restart always finishes (or rolls back) first.

    \b
    Example:
      xfleet rollouts pause 3
    """
    _request(c, rollout_id, "pause", as_json)


@rollouts_group.command("stop")
@click.argument("rollout_id", metavar="ID", type=int)
@json_option
@pass_ctx
def rollouts_stop(c: Ctx, rollout_id: int, as_json: bool) -> None:
    """Stop a rollout for good (it cannot be resumed); nodes being upgraded
    finish first. Upgraded nodes stay upgraded.

    \b
    Example:
      xfleet rollouts stop 3
    """
    _request(c, rollout_id, "stop", as_json)


@rollouts_group.command("resume")
@click.argument("rollout_id", metavar="ID", type=int)
@json_option
@pass_ctx
def rollouts_resume(c: Ctx, rollout_id: int, as_json: bool) -> None:
    """Continue a paused rollout, or one whose xfleet process died (crash, SIGKILL).

    Nodes that failed are tried again; a node caught mid-restart continues where it
    was (waits for readiness, or rolls back).

    \b
    Example:
      xfleet rollouts resume 3
    """
    from xfleet.fleet.connections import Connections
    from xfleet.ops import rollout

    inv = c.inventory()
    JSON_OUT.state = _rollout_state(c.mirror_path(), rollout_id)
    with Connections(inv.hosts, trust_store=inv.trust_store,
                     state_dir=inv.state_dir) as conns:
        result = rollout.resume(inv, c.mirror_path(), conns, rollout_id,
                                say=_say_fn(as_json))
    _finish(result, as_json)


@click.group("target")
def target_group() -> None:
    """The NVMe-oF target daemon of the nodes.

    \b
    Examples:
      xfleet target status --json
      xfleet target audit --node st-a1
    """


@target_group.command("status")
@click.argument("nodes", nargs=-1)
@json_option
@pass_ctx
def target_status(c: Ctx, nodes: tuple[str, ...], as_json: bool) -> None:
    """Installed and running version, readiness and export count of each node's target
    (two or three commands per node, in parallel).

    \b
    Example:
      xfleet target status
      xfleet target status st-a1 --json
    """
    from concurrent.futures import ThreadPoolExecutor  # lazy: pulls in logging

    from xfleet.fleet.connections import Connections
    from xfleet.ops import rollout
    from xfleet.ops.target import driver_for

    inv = c.inventory()
    names = rollout.target_nodes(inv, list(nodes) or None)
    with Connections(inv.hosts, trust_store=inv.trust_store,
                     state_dir=inv.state_dir) as conns:
        def one(n: str) -> dict[str, Any]:
            try:
                drv = driver_for(n, conns.get(n), inv.hosts[n].target)
                v = drv.versions()
                count = sum(1 for _ in drv.iter_exports())
                return {"node": n, "installed": v.installed, "running": v.running,
                        "ready": v.running is not None, "exports": count, "error": None}
            except XfleetError as exc:
                return {"node": n, "installed": None, "running": None, "ready": False,
                        "exports": None, "error": exc.message}

        with ThreadPoolExecutor(max_workers=max(1, min(inv.parallel, len(names)))) as pool:
            rows = list(pool.map(one, names))
    emit(["node", "installed", "running", "ready", "exports", "error"], rows,
         "json" if as_json else "table")


@target_group.command("audit")
@click.option("--node", "-n", "nodes", multiple=True, metavar="NODE",
              help="Only these nodes or groups (repeatable). Default: every node with a "
              "target.")
@click.option("--limit", "-l", type=click.IntRange(0), default=50, show_default=True,
              help="Findings shown in the table (0: all); --json has them all.")
@json_option
@pass_ctx
def target_audit(c: Ctx, nodes: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Every export open to any host, and every drift between the mirror's attachments and
    what the target allows: a host missing or extra, an attachment of a volume the target
    does not export, an attachment left half done (one listing command per node, in
    parallel; docs/access.md).

    Exit status: 0 nothing found, 5 findings, 1 a node could not be listed (its findings
    are unknown; the others' are shown).

    \b
    Examples:
      xfleet target audit
      xfleet target audit --node st-a1 --json
    """
    from xfleet.fleet.connections import Connections
    from xfleet.ops.access.audit import audit

    inv = c.inventory()
    with Connections(inv.hosts, trust_store=inv.trust_store,
                     state_dir=inv.state_dir) as conns:
        result = audit(inv, c.mirror_path(), conns, nodes)
    failed = result.failed_nodes
    counts = result.counts()
    summary = (f"{sum(n.exports for n in result.nodes)} export(s) on {len(result.nodes)} "
               f"node(s): " + (", ".join(f"{v} {k}" for k, v in counts.items() if v)
                              or "nothing found"))
    if as_json:
        doc = result.to_dict()
        if not result.clean:
            first = result.findings[0]
            doc = failed_doc(doc, f"{summary}; first: {first.node}: {first.message}",
                             where=", ".join(failed) or first.node,
                             hint="each finding is in 'findings' (docs/access.md)")
        echo_json(doc)
    else:
        rows = [f.to_dict() for f in result.findings]
        emit(["kind", "node", "volume", "initiator", "message"],
             rows[:limit] if limit else rows, "table")
        if limit and len(rows) > limit:
            click.echo(f"... {len(rows) - limit} more (--limit 0 shows them all)")
        click.echo(summary)
    if failed:
        sys.exit(1)
    if not result.clean:
        sys.exit(EXIT_FINDINGS)
