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
- **Before a first stream.** `ensure_many` gives the volumes of one node that a replication
  round is about to copy for the first time their UUID, in one remote command for them all
  (`ensure`: one volume, for a move), so the copy is received with it.
- `of(conn, node, volume)` (`known`: many): the UUID the mirror knows, or None (the legacy
  node/guid identity applies until one is assigned).

The mirror learns what was set at once (the rows' user_properties), without a sync.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
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
CHUNK = 500  # names per IN (...) query: far below SQLite's and PostgreSQL's parameter limits
log = logging.getLogger(__name__)
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
    return known(conn, node, [volume])[volume]


def known(conn: Connection, node: str, volumes: Iterable[str]) -> dict[str, str | None]:
    """`of` for each of `volumes` (a name the mirror does not have: None), in one query per
    CHUNK names."""
    out: dict[str, str | None] = {}
    seen: dict[str, str | None] = {}
    for chunk in _chunks(volumes):
        got = dict(conn.execute(
            f"SELECT name, json_extract(user_properties, '{_PATH}') FROM datasets WHERE "
            f"node = ? AND name IN ({', '.join('?' for _ in chunk)})", [node, *chunk]))
        for name in chunk:
            out[name] = _own(conn, node, name, got.get(name), seen)
    return out


def _chunks(names: Iterable[str]) -> Iterator[list[str]]:
    """`names`, once each and sorted, in lists of at most CHUNK (one IN (...) query each)."""
    ordered = sorted(set(names))
    for i in range(0, len(ordered), CHUNK):
        yield ordered[i:i + CHUNK]


def _own(conn: Connection, node: str, name: str, value: Any,
         seen: dict[str, str | None]) -> str | None:
    """`value` (`name`'s xfleet:uuid in the mirror) if it is `name`'s own UUID: a valid one,
    not inherited from a parent filesystem."""
    if isinstance(value, str) and valid_volume_uuid(value) and \
            not _inherited(conn, node, name, value, seen):
        return value
    return None


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
    `limit`: never a replica's copy or a retired source. Streamed from one query (one per
    CHUNK of `volumes`)."""
    sql = (f"SELECT d.name, d.guid, json_extract(coalesce(d.user_properties, '{{}}'), "
           f"'{_PATH}') FROM datasets d WHERE d.node = ? AND d.type = 'volume' AND d.guid IS "
           "NOT NULL AND d.name NOT LIKE ? AND NOT EXISTS (SELECT 1 FROM replicas r WHERE "
           "r.target_node = d.node AND r.target_volume = d.name)")
    params: list[Any] = [node, f"%{RETIRED_MARK}%"]
    queries: Iterable[tuple[str, list[Any]]] = [(sql, params)] if volumes is None else (
        (sql + f" AND d.name IN ({', '.join('?' for _ in chunk)})", [*params, *chunk])
        for chunk in _chunks(volumes))  # sorted chunks: their rows stay in name order
    out: list[tuple[str, str]] = []
    seen: dict[str, str | None] = {}
    for query, args in queries:
        for name, guid, value in conn.execute(query + " ORDER BY d.name", args):
            if limit is not None and len(out) >= limit:
                return out
            if _own(conn, node, name, value, seen) is None:
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


def ensure_many(inv: Inventory, location: Location, conns: Connections, node: str,
                volumes: Iterable[str]) -> dict[str, str | None]:
    """The UUID of each of `volumes` on `node`: the mirror's, or given now to those without one
    (`assign`: one remote command for all of them, however many; none if every one has its
    UUID); None for a volume the node could not give one (it keeps the legacy identity: the
    node's error is logged). A replication round calls this once per source node before its
    first streams, so every copy is received with its volume's UUID. Holds the asked names,
    the assign command's input and output and the answer (all of the size of `volumes`); the
    mirror is read CHUNK names at a time."""
    names = sorted(set(volumes))
    if not names:
        return {}
    res = assign(inv, location, conns, nodes=[node], volumes=[(node, v) for v in names])
    for n in res.nodes:
        if n.error is not None or n.failed:
            log.warning("volume UUIDs on %s: %s", n.node,
                        n.error or f"{len(n.failed)} failed, e.g. {n.failed[0]}")
    conn = mirror.connect(location)
    try:
        return known(conn, node, names)
    finally:
        conn.close()


def ensure(inv: Inventory, location: Location, conns: Connections, node: str,
           volume: str) -> str | None:
    """`ensure_many` for one volume (a move, before its first stream: one remote command if
    the volume has no UUID yet)."""
    return ensure_many(inv, location, conns, node, [volume])[volume]
