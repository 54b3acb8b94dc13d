"""A replica as the mirror records it: the Replica, its states, its row in `replicas` and its
log in `replica_log` (a journaled job kind, xfleet/mirror/jobs.py; docs/replicate.md).

A replica is standing: one row per (source node, volume, target node), kept by every round.
Its cursor is the newest source snapshot the target holds: held on the source with the
replica's tag and bookmarked (`VOLUME#TAG_SNAPSHOT`), so the next round's incremental always
has its base. `as_of` is the source time the replica's data is from; its lag is now - as_of.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from xfleet import mirror
from xfleet.core.errors import XfleetError
from xfleet.mirror import claims, jobs
from xfleet.mirror.backend import Connection, Row

# new: no data on the target yet; idle: between rounds; sending: a round streams it;
# failed: the last round failed (the next round retries, from the receive token if any);
# promoting: `replicate promote` runs its cutover; promoted: the replica is the primary now
STATES = ("new", "idle", "sending", "failed", "promoting", "promoted")
OPEN = frozenset(("new", "idle", "sending", "failed", "promoting"))
TAG_PREFIX = "xfleet-replica-"
# the user property every copy carries (received with it): which volume it replicates
REPLICA_OF = "xfleet:replica-of"


class ReplicaError(XfleetError):
    """A replica that cannot be kept or promoted; the message says why, the hint what to do."""


REPLICAS = jobs.register(jobs.JobKind(
    "replicas", "replica", "xfleet replicate status --all", OPEN, error=ReplicaError,
    missing="no replica with id {id}", log=("replica_log", "replica")))


@dataclass
class Replica:
    id: int
    policy: str
    source_node: str
    volume: str
    target_node: str
    target_volume: str
    rpo: float
    state: str
    step: str | None = None
    cursor: str | None = None  # the source snapshot (after '@') the target holds
    cursor_guid: str | None = None
    cursor_txg: int | None = None
    as_of: float | None = None  # the source time the replica's data is from
    send_flags: list[str] = field(default_factory=list)
    receive_properties: dict[str, str] = field(default_factory=dict)
    bytes_last: int | None = None
    bytes_total: int = 0
    rounds: int = 0
    last_round_at: float | None = None
    move: int | None = None  # the move of a planned promotion
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    operator: str | None = None
    held_by: str | None = None
    held_since: float | None = None

    @property
    def tag(self) -> str:
        """The hold tag and bookmark prefix of this replica's cursor on the source: one per
        destination node (a volume's replicas to two nodes keep their own bases), the same for
        all of a source's replicas to that node, so one `zfs hold` advances them all."""
        return f"{TAG_PREFIX}{self.target_node}"

    def lag(self, now: float) -> float | None:
        return None if self.as_of is None else max(0.0, now - self.as_of)

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        lag = self.lag(time.time() if now is None else now)
        d["lag"] = lag
        d["within_rpo"] = lag is not None and lag <= self.rpo
        return d


_JSON = {"send_flags": list, "receive_properties": dict}


def from_row(r: Row) -> Replica:
    d = {k: r[k] for k in r.keys() if k in Replica.__dataclass_fields__}  # noqa: SIM118 (a Row)
    for k, kind in _JSON.items():
        d[k] = json.loads(d[k]) if d.get(k) else kind()
    return Replica(**d)


def get(conn: Connection, replica_id: int) -> Replica:
    return from_row(jobs.get(conn, REPLICAS, replica_id))


def find(conn: Connection, spec: str) -> Replica:
    """A replica by id, or by `NODE:VOLUME` (its source, or its target)."""
    if spec.isdigit():
        return get(conn, int(spec))
    node, sep, volume = spec.partition(":")
    if not sep or not volume:
        raise ReplicaError(f"{spec!r} names no replica",
                           hint="give its id or NODE:VOLUME (xfleet replicate status --all)")
    rows = conn.execute("SELECT * FROM replicas WHERE (source_node = ? AND volume = ?) OR "
                        "(target_node = ? AND target_volume = ?) ORDER BY id",
                        (node, volume, node, volume)).fetchall()
    if not rows:
        raise ReplicaError(f"no replica of or at {spec}",
                           hint="xfleet replicate status --all lists them")
    if len(rows) > 1:
        raise ReplicaError(f"{spec} has {len(rows)} replicas: "
                           + ", ".join(f"{r['id']} -> {r['target_node']}" for r in rows),
                           hint="give the replica's id")
    return from_row(rows[0])


def save(conn: Connection, r: Replica, message: str | None = None) -> None:
    r.updated_at = time.time()
    jobs.save(conn, REPLICAS, r.id, {
        "state": r.state, "step": r.step, "cursor": r.cursor, "cursor_guid": r.cursor_guid,
        "cursor_txg": r.cursor_txg, "as_of": r.as_of, "send_flags": json.dumps(r.send_flags),
        "receive_properties": json.dumps(r.receive_properties, sort_keys=True),
        "bytes_last": r.bytes_last, "bytes_total": r.bytes_total, "rounds": r.rounds,
        "last_round_at": r.last_round_at, "move": r.move, "error": r.error,
        "updated_at": r.updated_at, "finished_at": r.finished_at}, message=message)


def log(conn: Connection, replica_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(
        "SELECT at, state, message, operator FROM replica_log WHERE replica = ? "
        "ORDER BY at, rowid", (replica_id,))]


def claim_many(conn: Connection, ids: Sequence[int]) -> list[int]:
    """Take the replicas `ids` for this process in one write transaction (those no other live
    process holds: a holder on this host whose pid is gone, or anywhere whose heartbeat is
    older than the lease, does not count); returns the ones taken. A round claims what it
    sends, so two rounds never send the same replica at once."""
    if not ids:
        return []
    me = claims.me()
    now = time.time()
    taken: list[int] = []
    mirror.begin(conn, "a replication round's claim")
    try:
        for chunk in (list(ids[i:i + 500]) for i in range(0, len(ids), 500)):
            marks = ", ".join("?" for _ in chunk)
            free = [r["id"] for r in conn.execute(
                f"SELECT id, pid, host, heartbeat FROM replicas WHERE id IN ({marks})", chunk)
                if (r["pid"], r["host"]) == me or claims.holder(r, stale=REPLICAS.stale)
                is None]
            for part in (free[i:i + 500] for i in range(0, len(free), 500)):
                conn.execute(
                    "UPDATE replicas SET pid = ?, host = ?, heartbeat = ?, held_by = ?, "
                    f"held_since = ? WHERE id IN ({', '.join('?' for _ in part)})",
                    (*me, now, claims.operator(), now, *part))
            taken += free
        conn.execute("COMMIT")
    except BaseException:
        mirror.rollback(conn)
        raise
    return taken


def beat_all(conn: Connection) -> None:
    """Refresh the heartbeat of every replica this process holds (one statement)."""
    pid, host = claims.me()
    conn.execute("UPDATE replicas SET heartbeat = ? WHERE pid = ? AND host = ?",
                 (time.time(), pid, host))


def release_all(conn: Connection, ids: Sequence[int]) -> None:
    pid, host = claims.me()
    for chunk in (list(ids[i:i + 500]) for i in range(0, len(ids), 500)):
        conn.execute(f"UPDATE replicas SET pid = NULL WHERE id IN "
                     f"({', '.join('?' for _ in chunk)}) AND pid = ? AND host = ?",
                     (*chunk, pid, host))
