"""`xfleet auth apply|status`: the initiators' DH-CHAP secrets on the targets and on the hosts'
connections; the CLI face of xfleet.ops.access.auth (docs/access.md "DH-CHAP").

The library is imported inside the commands, so that `xfleet --help` stays fast."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from xfleet.cli.output import Ctx, echo_json, emit, failed_doc, json_option, pass_ctx

if TYPE_CHECKING:
    from xfleet.ops.access.auth import Report

COLUMNS = ["node", "host", "target", "connections", "error"]


def _report(report: Report, as_json: bool, what: str) -> None:
    bad = [s for s in report.steps if not s.ok]
    if as_json:
        doc = report.to_dict()
        if not report.ok:
            first = bad[0] if bad else None
            doc = failed_doc(doc, f"{first.node} {first.host}: {first.error}" if first else
                             f"{what}: nodes left: {', '.join(report.left)}",
                             where=first.node if first else None,
                             hint=first.hint if first else None)
        echo_json(doc)
    else:
        emit(COLUMNS, [{**s.to_dict(), "connections": ", ".join(s.connections)}
                       for s in report.steps], "table")
        for s in bad:
            click.echo(f"error: {s.node} {s.host}: {s.error}"
                       + (f"\n  {s.hint}" if s.hint else ""), err=True)
        if report.left:
            click.echo(f"not reached: {', '.join(report.left)} (run the same command again "
                       "once the error is fixed)", err=True)
    if not report.ok:
        sys.exit(1)


@click.group("auth")
def auth_group() -> None:
    """DH-CHAP: each initiator's secret on the kernel targets and on its connections.

    A secret comes from the inventory (dhchap_secret_file or dhchap_secret_command of an
    initiator), never from the mirror; it is never printed or logged.

    \b
    Examples:
      xfleet auth apply                 # every initiator with a secret, every nvmet node
      xfleet auth apply db-a-01 --json  # after changing db-a-01's secret at its source
      xfleet auth status
      xfleet auth log db-a-01
    """


@auth_group.command("apply")
@click.argument("hosts", nargs=-1)
@click.option("--node", "nodes", multiple=True, help="Only this node (repeatable; default: "
              "every node with the kernel target).")
@json_option
@pass_ctx
def apply_cmd(c: Ctx, hosts: tuple[str, ...], nodes: tuple[str, ...], as_json: bool) -> None:
    """Give HOSTS' current secrets (every initiator with one when none is named) to each
    node's target and to the hosts' connections to that node, node by node like a rollout.
    It stops at the first node that fails; run it again to carry on. This is also how a
    secret is rotated: change it at its source, then apply. Exit status 1 on a failure.

    \b
    Examples:
      xfleet auth apply
      xfleet auth apply db-a-01 --node st-a1 --node st-a2
    """
    from xfleet.fleet.connections import Connections
    from xfleet.ops.access import auth

    inv = c.inventory()
    with Connections(inv.hosts, trust_store=inv.trust_store,
                     state_dir=inv.state_dir) as conns:
        report = auth.apply(inv, c.mirror_path(), conns, hosts, nodes,
                            progress=None if as_json else
                            (lambda m: click.echo(m, err=True)))
    _report(report, as_json, "auth apply")


@auth_group.command("status")
@click.argument("hosts", nargs=-1)
@click.option("--node", "nodes", multiple=True, help="Only this node (repeatable).")
@json_option
@pass_ctx
def status_cmd(c: Ctx, hosts: tuple[str, ...], nodes: tuple[str, ...], as_json: bool) -> None:
    """Whether each node's target holds each host's current secret: match, differs (its
    secret changed at the source since: apply it) or none. One command per node; nothing
    changes. Exit status 1 when one is not `match`.

    \b
    Examples:
      xfleet auth status
      xfleet auth status db-a-01 --json
    """
    from xfleet.fleet.connections import Connections
    from xfleet.ops.access import auth

    inv = c.inventory()
    with Connections(inv.hosts, trust_store=inv.trust_store,
                     state_dir=inv.state_dir) as conns:
        report = auth.status(inv, c.mirror_path(), conns, hosts, nodes)
    for s in report.steps:
        if s.ok and s.target != "match":
            s.error = f"the target's secret for {s.host}: {s.target}"
            s.hint = f"xfleet auth apply {s.host} --node {s.node}"
    _report(report, as_json, "auth status")


@auth_group.command("log")
@click.argument("hosts", nargs=-1)
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True,
              help="The newest N lines.")
@json_option
@pass_ctx
def log_cmd(c: Ctx, hosts: tuple[str, ...], limit: int, as_json: bool) -> None:
    """The journal of `auth apply` (the mirror's auth_log), newest first: when each host's
    secret was given to each node, from which source, by whom, with what outcome. Never a
    secret.

    \b
    Examples:
      xfleet auth log
      xfleet auth log db-a-01 --limit 10 --json
    """
    from xfleet import mirror
    from xfleet.ops.access import auth

    conn = mirror.connect(c.mirror_path(), readonly=True)
    try:
        rows = auth.log(conn, hosts, limit)
    finally:
        conn.close()
    if as_json:
        echo_json({"ok": True, "log": rows})
        return
    emit(["at", "batch", "node", "initiator", "source", "target", "connections", "outcome",
          "message", "operator"],
         [{**r, "at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["at"]))}
          for r in rows], "table")
