"""The initiators' host NQNs (docs/access.md): read from `/etc/nvme/hostnqn` on each
initiator of the inventory (one remote command each, in parallel), never typed by hand, and
kept in the mirror's `initiators` table, where attach and audit find them."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from xfleet import mirror
from xfleet.core.errors import UsageError
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory, unknown_initiator
from xfleet.mirror import claims, store
from xfleet.mirror.backend import Connection, Location
from xfleet.ops.initiator import InitiatorError, check_nqn
from xfleet.remote.host import Host
from xfleet.remote.transport import Transport

HOSTNQN_FILE = "/etc/nvme/hostnqn"  # nvme-cli's; written at its installation


def hostnqn_argv() -> list[str]:
    return ["cat", "--", HOSTNQN_FILE]


def parse_hostnqn(text: str, initiator: str = "") -> str:
    """The host NQN in the file's text (its one non-empty line), validated."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    who = f"{initiator}: " if initiator else ""
    if len(lines) != 1:
        raise InitiatorError(f"{who}{HOSTNQN_FILE} holds {len(lines)} lines, expected one "
                             "host NQN", where=initiator or None,
                             hint="nvme gen-hostnqn > /etc/nvme/hostnqn on the initiator")
    try:
        return check_nqn(lines[0])
    except UsageError:
        raise InitiatorError(f"{who}{HOSTNQN_FILE} does not hold a host NQN: "
                             f"{lines[0][:80]!r}", where=initiator or None,
                             hint="nvme gen-hostnqn > /etc/nvme/hostnqn on the initiator"
                             ) from None


def read_hostnqn(transport: Transport) -> str:
    """The host NQN of the initiator behind `transport` (one remote command)."""
    return parse_hostnqn(transport.run(hostnqn_argv()).stdout, transport.node)


@dataclass(frozen=True)
class Read:
    """One initiator's reading: its host NQN, or why it could not be read."""

    name: str
    hostnqn: str | None = None
    error: str | None = None
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "hostnqn": self.hostnqn, "error": self.error,
                "hint": self.hint}


def select(inv: Inventory, names: Sequence[str] = ()) -> list[str]:
    """Initiator names of the inventory (all when empty); an unknown one is a UsageError."""
    for n in names:
        if n not in inv.initiators:
            raise unknown(inv, n)
    return list(dict.fromkeys(names)) if names else list(inv.initiators)


unknown = unknown_initiator  # the inventory's error for a name it does not list


def read(inv: Inventory, where: Location, conns: Connections,
         names: Sequence[str] = ()) -> list[Read]:
    """Read the host NQN of each initiator (all when empty), at most `inv.parallel` at once,
    and record the ones read in the mirror. Two initiators with the same host NQN (a cloned
    VM) are both refused: the target could not tell them apart."""
    chosen = select(inv, names)
    results = conns.each(chosen, lambda _n, t: read_hostnqn(t), parallel=inv.parallel)
    out = [Read(r.node, r.value) if r.ok else
           Read(r.node, error=r.error.message if r.error else "failed",
                hint=r.error.hint if r.error else None) for r in results]
    seen: dict[str, list[str]] = {}
    for r in out:
        if r.hostnqn:
            seen.setdefault(r.hostnqn, []).append(r.name)
    out = [Read(r.name, error=f"{r.hostnqn} is also the host NQN of "
                f"{', '.join(n for n in seen[r.hostnqn] if n != r.name)}",
                hint="give each host its own host NQN in /etc/nvme/hostnqn (nvme gen-hostnqn, "
                "or nqn.2014-08.org.nvmexpress:uuid:A-NEW-UUID), then read again")
           if r.hostnqn and len(seen[r.hostnqn]) > 1 else r for r in out]
    conn = mirror.connect(where)
    try:
        record(conn, {r.name: (r.hostnqn, inv.initiators[r.name].address)
                      for r in out if r.hostnqn})
    finally:
        conn.close()
    return out


def record(conn: Connection, rows: dict[str, tuple[str, str | None]]) -> None:
    """Store {initiator: (hostnqn, address)} read now (one short transaction)."""
    if not rows:
        return
    now, who = time.time(), claims.operator()
    with store.transaction(conn, "the initiators' host NQNs"):
        conn.executemany(
            "INSERT INTO initiators (name, hostnqn, address, read_at, operator) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET hostnqn = excluded.hostnqn, "
            "address = excluded.address, read_at = excluded.read_at, "
            "operator = excluded.operator",
            [(name, check_nqn(nqn), address, now, who)
             for name, (nqn, address) in sorted(rows.items())])


def hostnqns(conn: Connection) -> dict[str, str]:
    """{initiator: hostnqn} as last read (empty on a mirror that never read one)."""
    if not store.has_table(conn, "initiators"):
        return {}
    return {r["name"]: r["hostnqn"] for r in
            conn.execute("SELECT name, hostnqn FROM initiators ORDER BY name")}


def rows(inv: Inventory, conn: Connection | None) -> Iterator[dict[str, Any]]:
    """Every initiator of the inventory with what the mirror (if any) knows of it, and the
    initiators the mirror knows that the inventory no longer lists (in_inventory false)."""
    known: dict[str, dict[str, Any]] = {}
    if conn is not None and store.has_table(conn, "initiators"):
        known = {r["name"]: dict(r) for r in conn.execute(
            "SELECT name, hostnqn, address, read_at, operator FROM initiators")}
    for name, host in inv.initiators.items():
        r = known.pop(name, None)
        yield {"name": name, "address": host.address, "in_inventory": True,
               "hostnqn": r["hostnqn"] if r else None, "read_at": r["read_at"] if r else None,
               "operator": r["operator"] if r else None, "dhchap": dhchap_source(host)}
    for name, r in sorted(known.items()):
        yield {"name": name, "address": r["address"], "in_inventory": False,
               "hostnqn": r["hostnqn"], "read_at": r["read_at"], "operator": r["operator"],
               "dhchap": None}


def dhchap_source(host: Host) -> str | None:
    """Where the initiator's DH-CHAP secret comes from (`file`, `command`), None without one;
    never the secret (docs/access.md "DH-CHAP")."""
    if host.dhchap_secret_file is not None:
        return "file"
    return "command" if host.dhchap_secret_command else None

