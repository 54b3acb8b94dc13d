"""Making a replica the primary (docs/replicate.md).

- **Planned** (`promote`): the replica is brought to its source's newest snapshot, then its
  volume is moved onto the copy through the move engine (xfleet/ops/moves): a move that adopts
  the copy as its base and starts in catchup, so the cutover (pre_cutover hooks, final
  snapshot and incremental, device back, verified hashes, the source retired read-only and
  held, post_cutover hooks) is the moves' own. Nothing is destroyed.
- **Source lost** (`promote --source-lost`): the source node is gone; the copy becomes the
  primary as it is: a partial receive is discarded (`receive -A`), the volume's allowed hosts
  (its attachments in the mirror) are set on the copy, the device comes back,
  `xfleet:replica-of` is cleared, and the attachments follow it. Its data is as of its
  newest received snapshot; what the source wrote after that is not in it (the log and the
  result say so).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from xfleet import mirror
from xfleet.core.errors import XfleetError
from xfleet.core.identity import HOSTS_PROPERTY
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror.backend import Location
from xfleet.ops import moves
from xfleet.ops.access import attach
from xfleet.ops.replicate.journal import (
    REPLICA_OF,
    Replica,
    ReplicaError,
    claim_many,
    find,
    release_all,
    save,
)
from xfleet.ops.replicate.round import Round
from xfleet.ops.sync import sync


@dataclass
class Promotion:
    replica: Replica
    mode: str  # "planned" or "source lost"
    as_of: float | None  # the source time the primary's data is from
    move: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"replica": self.replica.to_dict(), "mode": self.mode, "as_of": self.as_of,
                "move": self.move}


def _take(location: Location, spec: str) -> Replica:
    conn = mirror.connect(location)
    try:
        r = find(conn, spec)
        if r.state == "promoted":
            raise ReplicaError(f"replica {r.id} was promoted already: "
                               f"{r.target_node}:{r.target_volume} is the primary")
        if r.cursor is None:
            raise ReplicaError(f"replica {r.id} has no data yet (state {r.state})",
                               hint="run xfleet replicate run first")
        if not claim_many(conn, [r.id]):
            raise ReplicaError(f"replica {r.id} is being sent by another process",
                               hint="wait for its round to end")
        return r
    finally:
        conn.close()


def promote(inv: Inventory, location: Location, conns: Connections, spec: str, *,
            progress: moves.Progress | None = None) -> Promotion:
    """The planned failover: the move engine's cutover onto the copy."""
    r = _take(location, spec)
    conn = mirror.connect(location)
    try:
        Round(inv, location, conns).bring(conn, r.id)  # the copy at the newest snapshot
        r = find(conn, str(r.id))
        p = moves.Plan(r.volume, r.source_node, r.target_node, r.target_volume,
                       r.send_flags, {k: v for k, v in r.receive_properties.items()
                                      if k != REPLICA_OF}, 0, None, [],
                       [f"promotes replica {r.id}"], [])
        m = moves.adopt(conn, p, r.cursor or "", {"verify": "sampled"})
        r.state, r.move, r.step = "promoting", m.id, f"move {m.id}"
        save(conn, r, f"promoting through move {m.id}")
    except BaseException:
        release_all(conn, [r.id])
        conn.close()
        raise
    try:
        runner = moves.Runner(inv, location, conns, progress=progress)
        m = runner.run(m.id)
        if m.state != "done":
            r.state, r.error = "failed", f"move {m.id} stopped in {m.state}: {m.error}"
            save(conn, r, r.error)
            raise ReplicaError(r.error, hint=f"xfleet moves resume {m.id}, then xfleet "
                               f"replicate promote {r.id} again")
        dst = conns.get(r.target_node)
        dst.run(["zfs", "inherit", REPLICA_OF, r.target_volume])
        if m.retired_as:  # the retired source keeps the move's hold, not the replica's
            conns.get(r.source_node).run(["zfs", "release", r.tag,
                                          f"{m.retired_as}@{r.cursor}"], check=False)
        r.state, r.step, r.error, r.finished_at = "promoted", None, None, time.time()
        save(conn, r, f"promoted: {r.target_node}:{r.target_volume} is the primary (move "
             f"{m.id}: {m.verified}); the source is kept as {m.retired_as} until xfleet "
             f"moves retire {m.id}")
        sync(inv, location, [r.target_node], connections=conns)
        return Promotion(r, "planned", time.time(), m.to_dict())
    finally:
        release_all(conn, [r.id])
        conn.close()


def promote_lost(inv: Inventory, location: Location, conns: Connections,
                 spec: str) -> Promotion:
    """The copy becomes the primary without its source (which is gone): as it is."""
    r = _take(location, spec)
    conn = mirror.connect(location)
    try:
        dst = conns.get(r.target_node)
        tv = r.target_volume
        token = dst.run(["zfs", "get", "-H", "-o", "value", "receive_resume_token", tv]
                        ).stdout.strip()
        if token and token != "-":
            dst.run(["zfs", "receive", "-A", tv])
            save(conn, r, "discarded a partial receive (receive -A)")
        rows = dst.run(["zfs", "list", "-H", "-p", "-o", "name,creation,createtxg", "-t",
                        "snapshot", "-d", "1", tv]).stdout.splitlines()
        # the newest by createtxg (sorted here: the simulator has no `zfs list -s`)
        snaps = sorted((int(txg), float(creation)) for _, creation, txg in
                       (line.split("\t") for line in rows))
        as_of = snaps[-1][1] if snaps else r.as_of
        # the volume's allowed hosts before its device: the copy was received without them,
        # and a target exporting it now would let any host in
        hosts = sorted({a.hostnqn for a in attach.allowed(conn, r.source_node, r.volume)})
        if hosts:
            dst.run(["zfs", "set", f"{HOSTS_PROPERTY}={','.join(hosts)}", tv])
        dst.run(["zfs", "inherit", "volmode", tv])  # the device back (received as none)
        dst.run(["zfs", "inherit", REPLICA_OF, tv])
        if hosts:
            attach.follow_move(conn, r.source_node, r.volume, r.target_node, tv, 0,
                               batch=f"promote-{r.id}",
                               why=f"replica {r.id} promoted, {r.source_node} lost")
            save(conn, r, f"attachments of {', '.join(hosts)} follow the volume to "
                 f"{r.target_node} ({HOSTS_PROPERTY} set before its device came back)")
        r.state, r.step, r.error, r.finished_at = "promoted", None, None, time.time()
        r.as_of = as_of
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(as_of)) if as_of else "?"
        save(conn, r, f"promoted without its source ({r.source_node} lost): "
             f"{r.target_node}:{tv} is the primary, its data as of {when}; what "
             f"{r.source_node} wrote after that is not in it. When {r.source_node} comes "
             f"back, its {r.volume} is stale: retire it (do not let both serve)")
    except XfleetError:
        r.state = "failed"
        save(conn, r, "promotion without the source failed")
        raise
    finally:
        release_all(conn, [r.id])
        conn.close()
    sync(inv, location, [r.target_node], connections=conns)
    return Promotion(r, "source lost", as_of)
