"""`xfleet target audit` (docs/access.md): what the targets let in, against the mirror.

One export listing per node (the driver's, with each subsystem's ALLOW_ANY and HOSTS), read
as a stream and compared with the mirror's attachments of the node:

- `open`: an export any host may connect to (`attr_allow_any_host` 1: never restricted);
- `missing`: an attached host the target does not allow (it cannot connect);
- `extra`: a host the target allows that no attachment gives (a detach that did not reach
  the target, or a change made by hand);
- `no-export`: an attachment of a volume the target does not export;
- `unsettled`: an attachment left `attaching` or `detaching` (its batch was interrupted);
- `error`: a node whose listing could not be read (its findings are unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xfleet import mirror
from xfleet.core.errors import XfleetError
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror import store
from xfleet.mirror.backend import Connection, Location
from xfleet.ops.target import driver_for
from xfleet.remote.transport import Transport

KINDS = ("open", "missing", "extra", "no-export", "unsettled", "error")


@dataclass(frozen=True)
class Finding:
    kind: str
    node: str
    volume: str | None
    message: str
    nqn: str | None = None
    hostnqn: str | None = None
    initiator: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "node": self.node, "volume": self.volume, "nqn": self.nqn,
                "hostnqn": self.hostnqn, "initiator": self.initiator, "message": self.message}


@dataclass
class NodeAudit:
    node: str
    exports: int = 0
    open: int = 0
    restricted: int = 0
    attachments: int = 0
    commands: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "exports": self.exports, "open": self.open,
                "restricted": self.restricted, "attachments": self.attachments,
                "commands": self.commands, "error": self.error}


@dataclass
class Audit:
    nodes: list[NodeAudit] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    @property
    def failed_nodes(self) -> list[str]:
        return [n.node for n in self.nodes if n.error]

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in KINDS}
        for f in self.findings:
            out[f.kind] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.clean, "counts": self.counts(),
                "nodes": [n.to_dict() for n in self.nodes],
                "findings": [f.to_dict() for f in self.findings]}


def expected(conn: Connection, node: str) -> dict[str, dict[str, tuple[str, str]]]:
    """{volume: {hostnqn: (initiator, state)}} of the node's attachments in the mirror."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    if not store.has_table(conn, "attachments"):
        return out
    for r in conn.execute("SELECT volume, initiator, hostnqn, state FROM attachments "
                          "WHERE node = ?", (node,)):
        out.setdefault(r["volume"], {})[r["hostnqn"]] = (r["initiator"], r["state"])
    return out


def audit_node(inv: Inventory, node: str, t: Transport,
               want: dict[str, dict[str, tuple[str, str]]],
               names: dict[str, str]) -> tuple[NodeAudit, list[Finding]]:
    """One node: its listing (one remote command) against `want` (expected(...))."""
    drv = driver_for(node, t, inv.hosts[node].target)
    na = NodeAudit(node, attachments=sum(len(h) for h in want.values()))
    found: list[Finding] = []
    seen: set[str] = set()
    for e in drv.iter_exports():
        na.exports += 1
        vol = e.volume or ""
        if vol:
            seen.add(vol)
        if e.allow_any_host:
            na.open += 1
            owners = sorted(ini for ini, _ in want.get(vol, {}).values())
            found.append(Finding("open", node, vol, f"{e.nqn} allows any host" + (
                f", though attached to {', '.join(owners)} only" if owners else ""), e.nqn))
            continue
        na.restricted += 1
        attached = want.get(vol, {})
        live = {h for h, (_, state) in attached.items() if state != "detaching"}
        for h in sorted(live - set(e.hosts)):
            ini = attached[h][0]
            found.append(Finding("missing", node, vol, f"{ini} is attached to {vol} but the "
                                 f"target does not allow {h}", e.nqn, h, ini))
        for h in sorted(set(e.hosts) - set(attached)):
            who = names.get(h)
            found.append(Finding("extra", node, vol, f"the target allows {who or h} on {vol} "
                                 "but no attachment gives it", e.nqn, h, who))
    for vol in sorted(set(want) - seen):
        for h, (ini, _) in sorted(want[vol].items()):
            found.append(Finding("no-export", node, vol, f"{ini} is attached to {vol}, which "
                                 f"the target on {node} does not export", None, h, ini))
    for vol, hosts in sorted(want.items()):
        for h, (ini, state) in sorted(hosts.items()):
            if state not in ("attached",):
                found.append(Finding("unsettled", node, vol, f"the attachment of {ini} to "
                                     f"{vol} is still {state} (its batch was interrupted: "
                                     f"attach or detach it again)", None, h, ini))
    return na, found


def audit(inv: Inventory, where: Location, conns: Connections,
          nodes: Sequence[str] = ()) -> Audit:
    """Every selected node with a target (all by default), in parallel."""
    chosen = [h.name for h in inv.select(list(nodes)) if h.target is not None or nodes]
    conn = mirror.connect(where, readonly=True) if _exists(where) else None
    try:
        wants = {n: expected(conn, n) if conn else {} for n in chosen}
        names = {}
        if conn is not None and store.has_table(conn, "initiators"):
            names = {r["hostnqn"]: r["name"] for r in
                     conn.execute("SELECT name, hostnqn FROM initiators")}
    finally:
        if conn is not None:
            conn.close()
    before = {n: conns.commands(n) for n in chosen}
    results = conns.each(chosen, lambda n, t: audit_node(inv, n, t, wants[n], names),
                         parallel=inv.parallel)
    out = Audit()
    for r in results:
        if r.ok and r.value is not None:
            na, found = r.value
            out.findings.extend(found)
        else:
            err: XfleetError | None = r.error
            na = NodeAudit(r.node, error=err.message if err else "failed")
            out.findings.append(Finding("error", r.node, None, na.error or "failed"))
        na.commands = conns.commands(r.node) - before[r.node]
        out.nodes.append(na)
    return out


def _exists(where: Location) -> bool:
    return not isinstance(where, Path) or where.exists()
