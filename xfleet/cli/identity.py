"""`xfleet identity`: the volumes' fleet-wide UUIDs and the NVMe identity derived from them
(xfleet.ops.identity; docs/identity.md)."""

from __future__ import annotations

import sys

import click

from xfleet.cli.output import Ctx, echo_json, emit, json_option, pass_ctx


@click.group("identity")
def identity_group() -> None:
    """Volume identity: a UUID per volume (user property xfleet:uuid), the same on any node.

    The NVMe subsystem NQN and namespace UUID/NGUID derive from it, so a moved volume or a
    promoted replica is the same disk to the database host (docs/identity.md). Moves and
    replicas give a volume its UUID when they first touch it; `assign` gives it to every
    volume the mirror knows without one.

    \b
    Examples:
      xfleet identity assign --node n1 --limit 1000
      xfleet identity show tank/db/pg-main --node n1
    """


@identity_group.command("assign")
@click.option("--node", "nodes", multiple=True, metavar="NODE",
              help="Only this node (repeatable); default: every node.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="At most this many volumes per node (a first pass over a big fleet in "
              "steps: each `zfs set` is a transaction group on the node).")
@json_option
@pass_ctx
def assign_cmd(c: Ctx, nodes: tuple[str, ...], limit: int | None, as_json: bool) -> None:
    """Give every volume the mirror knows without a UUID of its own one (an inherited value
    is not one). One remote command per node; only the volume the mirror saw gets it (a name
    destroyed and re-created since is left for the next sync and run). Never replaces a
    UUID a volume has. Exit status 1 if a node or a volume failed.

    \b
    Examples:
      xfleet identity assign
      xfleet identity assign --node n1 --limit 1000 --json
    """
    from xfleet.fleet.connections import Connections
    from xfleet.ops import identity

    inv = c.inventory()
    with Connections(inv.hosts, trust_store=inv.trust_store,
                     state_dir=inv.state_dir) as conns:
        res = identity.assign(inv, c.mirror_path(), conns, nodes=list(nodes) or None,
                              limit=limit)
    if as_json:
        echo_json(res.to_dict())
    else:
        emit(["node", "asked", "set", "had", "gone", "failed", "error"],
             [{**n.__dict__, "failed": len(n.failed), "error": n.error or ""}
              for n in res.nodes], "table",
             footer="set: given a UUID now; had: already had one (the mirror now knows it); "
             "gone: destroyed or re-created since the last sync")
        for n in res.nodes:
            for f in n.failed:
                click.echo(f"  {n.node}:{f['volume']}: {f['error']}", err=True)
    if not res.ok:
        sys.exit(1)


@identity_group.command("show")
@click.argument("volume")
@click.option("--node", default=None, help="The volume's node (if the name is on several).")
@json_option
@pass_ctx
def show_cmd(c: Ctx, volume: str, node: str | None, as_json: bool) -> None:
    """The volume's UUID and the NVMe identity any node exports it under (from the mirror).
    Without a UUID: the legacy per-node identity, and how to give it one.

    \b
    Examples:
      xfleet identity show tank/db/pg-main
      xfleet identity show tank/db/pg-main --node n1 --json
    """
    from xfleet.core.identity import subsystem_nqn, volume_identity
    from xfleet.fleet.target_spec import NVMET_DEFAULTS
    from xfleet.ops import identity, lifecycle

    inv = c.inventory()
    with c.reader() as conn:
        t = lifecycle.resolve(conn, [volume], node)[0]
        if t.type != "volume":
            raise click.UsageError(f"{t.node}:{t.name} is a {t.type}, not a volume")
        value = identity.of(conn, t.node, t.name)
    spec = inv.hosts[t.node].target if t.node in inv.hosts else None
    prefix = str((spec.settings if spec else {}).get("nqn_prefix")
                 or NVMET_DEFAULTS["nqn_prefix"])
    doc = {"node": t.node, "volume": t.name, "uuid": value,
           "nqn": subsystem_nqn(prefix, t.node, t.name, value),
           "namespace_uuid": volume_identity(value)[0] if value else None,
           "nguid": volume_identity(value)[1] if value else None}
    if as_json:
        echo_json(doc)
        return
    for k, v in doc.items():
        click.echo(f"{k + ':':16}{v if v is not None else '-'}")
    if value is None:
        click.echo("no UUID yet: the node exports it under its legacy per-node identity; "
                   "xfleet identity assign gives it one", err=True)
