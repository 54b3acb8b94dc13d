"""`xfleet attach|detach VOLUME HOST`, `xfleet attachments`, `xfleet initiators`: the CLI
face of xfleet.ops.access (docs/access.md). `xfleet target audit` is with the other target
commands (xfleet/cli/upgrade.py).

The library is imported inside the commands, so that `xfleet --help` stays fast."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from xfleet.cli.output import Ctx, echo_json, emit, failed_doc, json_option, pass_ctx
from xfleet.core.errors import UsageError

if TYPE_CHECKING:
    from xfleet.ops.access.attach import Request, Result

ITEM_COLUMNS = ["node", "volume", "initiator", "shared", "outcome", "message"]


def _when(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else None


def _requests(action: str, volume: str | None, host: str | None, from_file: str | None,
              shared: bool) -> list[Request]:
    from xfleet.ops.access.attach import Request, parse_requests

    if from_file is not None:
        if volume is not None or host is not None:
            raise UsageError(f"give VOLUME HOST or --from FILE, not both ({action})")
        if from_file == "-":
            return parse_requests(sys.stdin.read(), "<stdin>", shared=shared)
        try:
            with open(from_file) as f:
                text = f.read()
        except OSError as exc:
            raise UsageError(f"cannot read {from_file}: {exc.strerror}") from None
        return parse_requests(text, from_file, shared=shared)
    if volume is None or host is None:
        raise UsageError(f"{action} needs VOLUME and HOST (or --from FILE)",
                         hint=f"xfleet {action} tank/db/a1 db-a-01")
    return [Request(volume, host, shared)]


def _run(c: Ctx, action: str, requests: list[Request], node: str | None) -> Result:
    from xfleet.fleet.connections import Connections
    from xfleet.ops.access import attach

    inv = c.inventory()
    with Connections(inv.hosts, trust_store=inv.trust_store,
                     state_dir=inv.state_dir) as conns:
        return attach.change(inv, c.mirror_path(), conns, action, requests, node=node)


def _report(result: Result, as_json: bool) -> None:
    counts = result.counts()
    summary = (f"{result.action} (batch {result.batch}): {counts['ok']} done, "
               f"{counts['unchanged']} unchanged, {counts['refused']} refused, "
               f"{counts['failed']} failed")
    if as_json:
        doc = result.to_dict()
        if not result.ok:
            first = next(i for i in result.items if i.outcome in ("refused", "failed"))
            doc = failed_doc(doc, f"{first.volume} {first.initiator}: {first.message}"
                             if len(result.items) == 1 else
                             f"{summary}; first: {first.volume} {first.initiator}: "
                             f"{first.message}", where=first.node,
                             hint="each request's outcome is in 'items'; xfleet attachments "
                             "shows the mirror, xfleet target audit the targets")
        echo_json(doc)
    else:
        rows = [i.to_dict() for i in result.items]
        if len(rows) <= 50:
            emit(ITEM_COLUMNS, rows, "table")
        else:
            emit(ITEM_COLUMNS, [r for r in rows if r["outcome"] in ("refused", "failed")][:50],
                 "table")
        click.echo(summary)
        for i in result.items:
            if i.outcome in ("refused", "failed"):
                click.echo(f"error: {i.volume} {i.initiator}: {i.message}", err=True)
                break
    if not result.ok:
        sys.exit(1)


_FROM_HELP = ("Read `VOLUME HOST [shared]` lines from FILE (`-`: stdin): the whole batch in "
              "three remote commands per node.")


@click.command("attach")
@click.argument("volume", required=False)
@click.argument("host", required=False)
@click.option("--shared", is_flag=True, help="The volume may have several hosts (a "
              "clustered filesystem): every attachment of it must be shared.")
@click.option("--from", "from_file", metavar="FILE", help=_FROM_HELP)
@click.option("--node", "-n", "node", metavar="NODE", help="The volume's node, if its name "
              "exists on several.")
@json_option
@pass_ctx
def attach_cmd(c: Ctx, volume: str | None, host: str | None, shared: bool,
               from_file: str | None, node: str | None, as_json: bool) -> None:
    """Allow initiator HOST (a database host of the inventory's `initiators:`) to connect to
    VOLUME's NVMe-oF subsystem: the target's allowed hosts and the zvol's `xfleet:hosts`
    property are set, and the attachment is journaled in the mirror.

    A volume has one writer: attaching a second host is refused unless every attachment of
    the volume is --shared. Input errors (unknown volume or host, a host NQN never read)
    refuse the whole batch before anything changes. Exit status 1 when a request was refused
    or failed.

    \b
    Examples:
      xfleet initiators --read
      xfleet attach tank/db/a1 db-a-01
      xfleet attach tank/shared/gfs db-a-01 --shared
      xfleet attach --from attach.txt --json
    """
    _report(_run(c, "attach", _requests("attach", volume, host, from_file, shared), node),
            as_json)


@click.command("detach")
@click.argument("volume", required=False)
@click.argument("host", required=False)
@click.option("--from", "from_file", metavar="FILE", help=_FROM_HELP)
@click.option("--node", "-n", "node", metavar="NODE", help="The volume's node, if its name "
              "exists on several.")
@json_option
@pass_ctx
def detach_cmd(c: Ctx, volume: str | None, host: str | None, from_file: str | None,
               node: str | None, as_json: bool) -> None:
    """Take HOST off VOLUME's allowed hosts (its connections to the subsystem are dropped),
    on the target and in the zvol's `xfleet:hosts` property; journaled. A volume whose last
    host is detached is closed to every host (`xfleet:hosts` = none), not opened.

    \b
    Examples:
      xfleet detach tank/db/a1 db-a-01
      xfleet detach --from detach.txt --json
    """
    _report(_run(c, "detach", _requests("detach", volume, host, from_file, False), node),
            as_json)


@click.command("attachments")
@click.option("--node", "-n", "node", metavar="NODE", help="Only this node's volumes.")
@click.option("--host", "host", metavar="HOST", help="Only this initiator's attachments.")
@click.option("--volume", "volume", metavar="VOLUME", help="Only this volume's.")
@click.option("--log", "log_lines", type=click.IntRange(0), default=0,
              help="Show the newest N attach/detach journal lines instead.")
@click.option("--limit", "-l", type=click.IntRange(1), default=None,
              help="At most N rows.")
@json_option
@pass_ctx
def attachments_cmd(c: Ctx, node: str | None, host: str | None, volume: str | None,
                    log_lines: int, limit: int | None, as_json: bool) -> None:
    """The mirror's attachments: which initiator may connect to which volume, shared or not,
    in which state, by whom; or the journal of attach/detach (--log N).

    \b
    Examples:
      xfleet attachments
      xfleet attachments --host db-a-01 --json
      xfleet attachments --log 20
    """
    from xfleet.ops.access import attach

    with c.reader() as conn:
        if log_lines:
            rows = attach.log(conn, volume=volume, limit=log_lines)
            if not as_json:
                rows = [{**r, "at": _when(r["at"])} for r in rows]
            emit(["at", "action", "node", "volume", "initiator", "outcome", "message",
                  "operator"], rows, "json" if as_json else "table")
            return
        emit(["node", "volume", "initiator", "hostnqn", "shared", "state", "operator",
              "error"], attach.attachments(conn, node=node, initiator=host, volume=volume,
                                           limit=limit), "json" if as_json else "table")


@click.command("initiators")
@click.argument("names", nargs=-1)
@click.option("--read", "read", is_flag=True, help="Read each initiator's host NQN from "
              "/etc/nvme/hostnqn over SSH (one command each) and keep it in the mirror.")
@json_option
@pass_ctx
def initiators_cmd(c: Ctx, names: tuple[str, ...], read: bool, as_json: bool) -> None:
    """The inventory's initiators (`all: initiators:`) and their host NQNs as the mirror
    keeps them. A host NQN is never typed: --read takes it from the host. Exit status 1 when
    one could not be read.

    \b
    Examples:
      xfleet initiators --read
      xfleet initiators db-a-01 --json
    """
    from xfleet.fleet.connections import Connections
    from xfleet.ops.access import initiators

    inv = c.inventory()
    chosen = initiators.select(inv, names)
    failed: list[initiators.Read] = []
    if read:
        with Connections(inv.initiators, trust_store=inv.trust_store,
                         state_dir=inv.state_dir) as conns:
            failed = [r for r in initiators.read(inv, c.mirror_path(), conns, chosen)
                      if r.error]
    from xfleet import mirror
    from xfleet.core.errors import MirrorError

    try:
        conn = mirror.connect(c.mirror_path(), readonly=not read)
    except MirrorError:
        conn = None  # no mirror yet: the inventory's initiators, none read
    try:
        rows = [r for r in initiators.rows(inv, conn) if not names or r["name"] in names]
    finally:
        if conn is not None:
            conn.close()
    errors = {r.name: r.error for r in failed}
    for r in rows:
        r["error"] = errors.get(r["name"])
    if as_json:
        doc = {"ok": not failed, "initiators": rows}
        if failed:
            doc = failed_doc(doc, f"{failed[0].name}: {failed[0].error}",
                             where=", ".join(r.name for r in failed), hint=failed[0].hint)
        echo_json(doc)
    else:
        emit(["name", "address", "hostnqn", "dhchap", "read_at", "error"],
             [{**r, "read_at": _when(r["read_at"])} for r in rows], "table")
        for bad in failed:
            click.echo(f"error: {bad.name}: {bad.error}"
                       + (f"\n  {bad.hint}" if bad.hint else ""), err=True)
    if failed:
        sys.exit(1)
