"""`xfleet inventory check|show|trust`: the nodes of the inventory, their settings and keys.

The inventory and SSH modules are imported inside the commands (paramiko is slow to import,
and `xfleet --help` should not wait for it)."""

from __future__ import annotations

import click

from xfleet.cli.output import Ctx, confirm, emit, json_option, pass_ctx
from xfleet.core.errors import UsageError


@click.group("inventory")
def inventory_group() -> None:
    """Check, show and trust the nodes of the inventory.

    \b
    Examples:
      xfleet -i inventory/example.yaml inventory check
      xfleet inventory show n1
      xfleet inventory trust n1
    """


@inventory_group.command("check")
@json_option
@pass_ctx
def inventory_check(c: Ctx, as_json: bool) -> None:
    """Validate the inventory and list its nodes.

    \b
    Example:
      xfleet -i inventory/example.yaml inventory check
    """
    inv = c.inventory()  # loading validates everything, pinned host keys included
    rows = [
        {"node": h.name, "kind": h.kind,
         "address": f"{h.address}:{h.port}" if h.kind == "ssh" else "-",
         "pools": ",".join(h.pools) or "(all)", "groups": ",".join(h.groups),
         "host_key": "pinned" if h.host_key else ("known_hosts" if h.known_hosts else "trust store")
         if h.kind == "ssh" else "-"}
        for h in inv.hosts.values()
    ]
    if as_json:
        emit([], rows, "json")
        return
    emit(["node", "kind", "address", "pools", "groups", "host_key"], rows, "table",
         footer=f"{inv.path}: OK, {len(rows)} nodes, {len(inv.groups)} groups, "
         f"mirror {inv.mirror}")


@inventory_group.command("show")
@click.argument("host")
@json_option
@pass_ctx
def inventory_show(c: Ctx, host: str, as_json: bool) -> None:
    """Show a node's effective settings and where each value came from.

    Settings the inventory leaves unset are filled from ~/.ssh/config.

    \b
    Example:
      xfleet inventory show n1
    """
    import json  # lazy, like the others: keeps --help fast
    from dataclasses import fields

    from xfleet.remote.ssh_config import apply_ssh_config

    inv = c.inventory()
    (h,) = inv.select([host]) if host in inv.hosts else (None,)
    if h is None:
        inv.select([host])  # raises a helpful error for unknown names
        raise UsageError(f"{host!r} is a group, not a host",
                         hint=f"its hosts: {', '.join(inv.groups.get(host, []))}")
    if h.kind == "ssh":
        apply_ssh_config(h)
    rows = []
    for f in fields(h):
        if f.name in ("sources", "name") or f.name.startswith("dhchap_"):
            continue  # the DH-CHAP secret sources are an initiator's, never a node's
        val = getattr(h, f.name)
        if isinstance(val, (tuple, list)):
            val = ",".join(map(str, val))
        elif isinstance(val, dict):
            val = json.dumps(val) if val else ""
        rows.append({"setting": f.name, "value": "" if val is None else str(val),
                     "source": h.sources.get(f.name, "default")})
    if as_json:
        emit([], rows, "json")
        return
    emit(["setting", "value", "source"], rows, "table", title=f"{h.name}")


@inventory_group.command("trust")
@click.argument("host")
@click.option("--replace", is_flag=True, help="Replace a different key already trusted.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask; trust the key shown.")
@pass_ctx
def inventory_trust(c: Ctx, host: str, replace: bool, yes: bool) -> None:
    """Fetch a node's SSH host key, show its fingerprint and record it as trusted.

    Unknown host keys are always rejected; this is the explicit opt-in. Compare the
    fingerprint with the node's own (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)
    before you accept.

    \b
    Example:
      xfleet inventory trust n1
    """
    from xfleet.remote.hostkeys import TRUST_STORE
    from xfleet.remote.ssh import SSHTransport, fetch_host_key, fingerprint, record_trust

    inv = c.inventory()
    if host not in inv.hosts:
        inv.select([host])
    h = inv.hosts[host]
    if h.kind != "ssh":
        raise UsageError(f"{host} is a {h.kind} node; only ssh nodes have host keys")
    key = fetch_host_key(h, trust_store=inv.trust_store)
    click.echo(f"{host} ({h.address}:{h.port}) presents {key.get_name()} {fingerprint(key)}")
    confirm(yes, "Trust this key?", "trust a key",
            hint="run interactively, or pass --yes once you checked the fingerprint")
    added = record_trust(inv.trust_store, h, key, replace=replace)
    click.echo(f"{'recorded in' if added else 'already trusted in'} {inv.trust_store}")
    decision = SSHTransport(h, trust_store=inv.trust_store).host_keys()
    if decision.source not in (None, TRUST_STORE) and not any(
            k.asbytes() == key.asbytes() for k in decision.keys):
        click.echo(f"warning: {decision.source} lists another key for {host} and outranks "
                   "the trust store: update it, or connections stay refused", err=True)
