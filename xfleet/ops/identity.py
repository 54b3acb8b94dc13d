"""Volume identity (docs/identity.md): every volume gets a fleet-wide UUID, kept on the zvol in
the user property `xfleet:uuid` (xfleet.core.identity.UUID_PROPERTY), from which its NVMe
subsystem NQN and namespace UUID/NGUID derive: the same on any node, so a move or a promoted
replica keeps the identity the database host knows.

- **First sight.** `assign` gives a UUID to the volumes the mirror knows without one, in one
  remote command per node (xfleet/remote/programs/assign_uuids.py): only to the volume the
  mirror saw (same guid: a re-created name is a new volume and gets a new UUID), never over a
  local value. Copies that replicas keep, and moves' retired sources, are left alone (they
  carry their volume's UUID, `zfs receive -o`).
- **Carried.** The property is mirrored like the tenant property, and moves and replicas
  receive with `-o` every mirrored user property: the copy has the same UUID.
- `of(conn, node, volume)`: the UUID the mirror knows, or None (the legacy node/guid
  identity applies until one is assigned).

The mirror learns what was set at once (the rows' user_properties), without a sync.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from xfleet import mirror
from xfleet.core.errors import RemoteCommandError, UsageError
from xfleet.core.identity import UUID_PROPERTY, new_volume_uuid, valid_volume_uuid
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror.backend import Connection, Location
from xfleet.ops.lifecycle import RETIRED_MARK
from xfleet.remote.programs import program

ASSIGN = program("assign_uuids")
_PATH = f'$."{UUID_PROPERTY}"'


@dataclass
class NodeAssign:
    node: str
    asked: int = 0
    set: int = 0  # given a new UUID
    had: int = 0  # already had one the mirror did not know (now it does)
    gone: int = 0  # destroyed or re-created since the mirror saw it
    failed: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None


@dataclass
class AssignResult:
    nodes: list[NodeAssign] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(n.error is None and not n.failed for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "set": sum(n.set for n in self.nodes),
                "had": sum(n.had for n in self.nodes),
                "gone": sum(n.gone for n in self.nodes),
                "nodes": [dict(n.__dict__) for n in self.nodes]}


def of(conn: Connection, node: str, volume: str) -> str | None:
    """The UUID of `volume` on `node` as the mirror knows it (None: none yet, or only one
    inherited from a parent filesystem, which is no identity)."""
    row = conn.execute(f"SELECT json_extract(user_properties, '{_PATH}') FROM datasets "
                       "WHERE node = ? AND name = ?", (node, volume)).fetchone()
    value = row[0] if row else None
    if not (isinstance(value, str) and valid_volume_uuid(value)):
        return None
    return None if _inherited(conn, node, volume, value, {}) else value


def _inherited(conn: Connection, node: str, name: str, value: str,
               seen: dict[str, str | None]) -> bool:
    """True when `name`'s `value` is its nearest ancestor's (the mirror keeps effective
    values: an inherited one looks like a set one). `seen` caches the ancestors' values."""
    parent = name.rsplit("/", 1)[0] if "/" in name else None
    while parent is not None:
        if parent not in seen:
            row = conn.execute(f"SELECT json_extract(user_properties, '{_PATH}') FROM "
                               "datasets WHERE node = ? AND name = ?", (node, parent)).fetchone()
            seen[parent] = row[0] if row and isinstance(row[0], str) else None
        got = seen[parent]
        if got is not None:
            return got == value
        parent = parent.rsplit("/", 1)[0] if "/" in parent else None
    return False


def without(conn: Connection, node: str, limit: int | None = None,
            volumes: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(volume, guid) of `node`'s volumes the mirror knows without a UUID of their own (none,
    or one inherited from a filesystem) (of `volumes`, when given), in name order, at most
    `limit`: never a replica's copy or a retired source. Streamed from one query."""
    sql = (f"SELECT d.name, d.guid, json_extract(coalesce(d.user_properties, '{{}}'), "
           f"'{_PATH}') FROM datasets d WHERE d.node = ? AND d.type = 'volume' AND d.guid IS "
           "NOT NULL AND d.name NOT LIKE ? AND NOT EXISTS (SELECT 1 FROM replicas r WHERE "
           "r.target_node = d.node AND r.target_volume = d.name)")
    params: list[Any] = [node, f"%{RETIRED_MARK}%"]
    if volumes is not None:
        names = sorted(set(volumes))
        if not names:
            return []
        sql += f" AND d.name IN ({', '.join('?' for _ in names)})"
        params += names
    out: list[tuple[str, str]] = []
    seen: dict[str, str | None] = {}
    for name, guid, value in conn.execute(sql + " ORDER BY d.name", params):
        if limit is not None and len(out) >= limit:
            break
        if isinstance(value, str) and valid_volume_uuid(value) and \
                not _inherited(conn, node, name, value, seen):
            continue
        out.append((str(name), str(guid)))
    return out


def parse_assign_output(text: str) -> list[tuple[str, str, str]]:
    """(volume, state, value) per line of assign_uuids.py's output (pure)."""
    out = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1] in ("set", "had", "gone", "err"):
            out.append((parts[0], parts[1], parts[2]))
    return out


def assign(inv: Inventory, location: Location, conns: Connections, *,
           nodes: Iterable[str] | None = None, limit: int | None = None,
           volumes: Iterable[tuple[str, str]] | None = None,
           progress: Callable[[str, NodeAssign], None] | None = None) -> AssignResult:
    """Give every volume of `nodes` (all) the mirror knows without a UUID its own, at most
    `limit` per node; `volumes`: only these (node, volume) pairs. One remote command per node;
    the mirror's rows are updated as the node answers."""
    wanted = list(nodes) if nodes is not None else sorted(inv.hosts)
    for n in wanted:
        if n not in inv.hosts:
            raise UsageError(f"no node {n!r} in the inventory",
                             hint="xfleet inventory show lists the nodes")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    only: dict[str, list[str]] | None = None
    if volumes is not None:
        only = {}
        for n, v in volumes:
            only.setdefault(n, []).append(v)
        wanted = [n for n in wanted if n in only]
    conn = mirror.connect(location)
    try:
        todo = {n: without(conn, n, limit, only.get(n) if only is not None else None)
                for n in wanted}
    finally:
        conn.close()
    result = AssignResult()
    for node in wanted:
        rows = todo[node]
        got = NodeAssign(node, asked=len(rows))
        result.nodes.append(got)
        if not rows:
            continue
        choice = {v: new_volume_uuid() for v, _ in rows}
        stdin = "".join(f"{v}\t{g}\t{choice[v]}\n" for v, g in rows).encode()
        try:
            res = conns.get(node).run(ASSIGN.argv(UUID_PROPERTY), stdin=stdin,
                                      timeout=max(60.0, len(rows) * 0.5))
        except RemoteCommandError as exc:
            got.error = exc.message
            continue
        learned: list[tuple[str, str]] = []
        for vol, state, value in parse_assign_output(res.stdout):
            if state in ("set", "had") and valid_volume_uuid(value):
                setattr(got, state, getattr(got, state) + 1)
                learned.append((vol, value))
            elif state == "gone":
                got.gone += 1
            else:
                got.failed.append({"volume": vol, "error": value or f"bad value {value!r}"})
        _learn(location, node, learned)
        if progress is not None:
            progress(node, got)
    return result


def _learn(location: Location, node: str, values: list[tuple[str, str]]) -> None:
    """Write what the node now has into the mirror's rows (short transactions)."""
    if not values:
        return
    conn = mirror.connect(location)
    try:
        for i in range(0, len(values), 5000):
            chunk = values[i:i + 5000]
            mirror.begin(conn, "volume uuids")
            try:
                rows = dict(conn.execute(
                    "SELECT name, user_properties FROM datasets WHERE node = ? AND name IN ("
                    + ", ".join("?" for _ in chunk) + ")",
                    [node, *(v for v, _ in chunk)]).fetchall())
                updates = []
                for vol, value in chunk:
                    if vol in rows:
                        props = json.loads(rows[vol] or "{}")
                        props[UUID_PROPERTY] = value
                        updates.append((json.dumps(props, sort_keys=True), node, vol))
                conn.executemany("UPDATE datasets SET user_properties = ? WHERE node = ? AND "
                                 "name = ?", updates)
                conn.execute("COMMIT")
            except BaseException:
                mirror.rollback(conn)
                raise
    finally:
        conn.close()


def ensure(inv: Inventory, location: Location, conns: Connections, node: str,
           volume: str) -> str | None:
    """The UUID of `volume` on `node`: the mirror's, or given now (one remote command); None
    if the node could not give it one (it keeps the legacy identity). Moves and replicas call
    this before their first stream, so the copy is received with the same UUID."""
    conn = mirror.connect(location)
    try:
        known = of(conn, node, volume)
    finally:
        conn.close()
    if known is not None:
        return known
    assign(inv, location, conns, nodes=[node], volumes=[(node, volume)])
    conn = mirror.connect(location)
    try:
        return of(conn, node, volume)
    finally:
        conn.close()
