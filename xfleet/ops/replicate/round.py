"""A replication round: every standing replica of the policies brought to its source's newest
snapshot, at the cost of what changed (docs/replicate.md).

1. **Replicas** are rows of `replicas`, one per volume a policy with `replicate:` takes and
   per destination, added in one INSERT ... SELECT per policy and destination.
2. **What to send** comes from the mirror in one query: the replicas whose source has a
   snapshot newer than the cursor with bytes `written` since it. A replica whose newer
   snapshots wrote nothing is current without a stream (its `as_of` moves on in the same
   statement): a round after 100 changed volumes of 100k sends 100 streams.
3. **Each stream** (per-node `max_streams`, the moves' bandwidth buckets): the target's state
   in one `zfs get` (the copy, its resume token, the snapshot already there?), then a resumed
   (`send -t`), incremental (`send -I @cursor`, or `-i #bookmark` when the cursor snapshot is
   gone) or first full send into `zfs receive -s -u` (never -F) with `volmode=none` and
   `xfleet:replica-of` set: the copy has no device and no policy snapshots it. Before the
   streams, the volumes of the first sends get their UUID if they have none, in one command
   per source node (identity.ensure_many): the copy is received with it (`-o xfleet:uuid`).
4. **Cursors** advance per source and destination node in one command (xfleet/remote/
   programs/replica_cursor.py): the new base held and bookmarked before the old one goes.
5. **The copies keep what their source keeps**: a replica's snapshots older than its cursor
   that the source no longer has are destroyed (lifecycle plans, journaled), never the cursor.
6. The touched nodes are synced into the mirror (incrementally).

A stopped or failed round leaves every replica with a held, bookmarked base and the partial
stream's resume token on the target: the next round resumes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xfleet import mirror
from xfleet.core.errors import XfleetError
from xfleet.core.identity import UUID_PROPERTY
from xfleet.core.names import pool_of
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror import claims
from xfleet.mirror.backend import Connection, Location
from xfleet.ops import identity, lifecycle
from xfleet.ops.moves.journal import SNAP_PREFIX
from xfleet.ops.moves.plan import preflight
from xfleet.ops.replicate.journal import (
    REPLICA_OF,
    Replica,
    ReplicaError,
    beat_all,
    claim_many,
    from_row,
    release_all,
    save,
)
from xfleet.ops.snapshots.plan import volumes_sql
from xfleet.ops.sync import sync
from xfleet.remote.programs import program
from xfleet.remote.relay import TokenBucket, relay

if TYPE_CHECKING:
    from xfleet.ops.snapshots.policy import Policies

CURSOR = program("replica_cursor")
log = logging.getLogger(__name__)
Progress = Callable[[Replica, str], None]  # (replica, what happened)


@dataclass
class RoundResult:
    now: float
    replicas: int = 0  # standing replicas of the policies
    added: int = 0  # new this round
    due: int = 0  # with something to send
    current: int = 0  # newer snapshots but nothing written: current without a stream
    sent: list[dict[str, Any]] = field(default_factory=list)  # per stream
    failed: list[dict[str, Any]] = field(default_factory=list)
    busy: int = 0  # held by another live round
    pruned: int = 0  # replica snapshots destroyed (gone from their source)
    commands: int = 0  # remote commands of the round
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# -- 1. the standing replicas ------------------------------------------------------------------

def ensure(conn: Connection, policies: Policies, inventory: Inventory | None = None,
           now: float | None = None) -> int:
    """Add a replica row for every volume a replicating policy takes that has none yet (one
    INSERT ... SELECT per policy and destination); returns how many were added. A volume on
    its own destination node, the replicas themselves, and a move's retired source
    (`VOL.xfleet-moved-ID`, e.g. the old primary of a promoted replica) are never replicated."""
    now = time.time() if now is None else now
    added = 0
    mirror.begin(conn, "new replicas")
    try:
        for p in policies.policies:
            for t in p.replicate:
                where, params = volumes_sql(policies, inventory)
                root = t.root or t.pool
                cur = conn.execute(
                    "INSERT INTO replicas (policy, source_node, volume, target_node, "
                    "target_volume, rpo, state, created_at, updated_at, operator) "
                    "SELECT ?, node, name, ?, ? || substr(name, length(pool) + 1), ?, 'new', ?, "
                    f"?, ? FROM datasets WHERE {where} AND node != ? AND name NOT LIKE ? "
                    "AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.source_node = "
                    "datasets.node AND r.volume = datasets.name AND r.target_node = ?)",
                    [p.name, t.node, root, t.rpo, now, now, claims.operator(),
                     *params, p.name, t.node, f"%{lifecycle.RETIRED_MARK}%", t.node])
                added += max(0, cur.rowcount or 0)
                conn.execute("UPDATE replicas SET rpo = ? WHERE policy = ? AND target_node = ? "
                             "AND rpo != ?", (t.rpo, p.name, t.node, t.rpo))
        conn.execute("COMMIT")
    except BaseException:
        mirror.rollback(conn)
        raise
    return added


def _policy_filter(policies: Policies, r: str = "r") -> tuple[str, list[Any]]:
    """The SQL condition on replica rows `r` (a table or its alias) of the policies'."""
    pairs = [(p.name, t.node) for p in policies.policies for t in p.replicate]
    if not pairs:
        return "0 = 1", []
    return ("(" + " OR ".join(f"({r}.policy = ? AND {r}.target_node = ?)" for _ in pairs)
            + ")", [x for pair in pairs for x in pair])


# -- 2. what to send ---------------------------------------------------------------------------

def _snaps(r: str) -> str:
    """The snapshots `s` of the source volume of replica row `r` (a table or its alias) that
    are not a move's."""
    return (f"s.node = {r}.source_node AND s.name >= {r}.volume || '@' AND s.name < "
            f"{r}.volume || 'A' AND s.type = 'snapshot' AND substr(s.name, length({r}.volume) "
            f"+ 2, {len(SNAP_PREFIX)}) != '{SNAP_PREFIX}'")


def _newest(r: str) -> str:
    return f"(SELECT max(s.createtxg) FROM datasets s WHERE {_snaps(r)})"


def _written(r: str) -> str:
    """The bytes written in the snapshots newer than the replica's cursor."""
    return (f"(SELECT coalesce(sum(s.written), 0) FROM datasets s WHERE {_snaps(r)} AND "
            f"s.createtxg > {r}.cursor_txg)")


def catch_up_quiet(conn: Connection, policies: Policies) -> int:
    """Replicas whose source has newer snapshots that wrote nothing since the cursor: their
    data is current as of the newest one; `as_of` moves on (one UPDATE, no stream)."""
    where, params = _policy_filter(policies, "replicas")
    # as_of: the creation of the newest snapshot, as the top one of the volume's snapshots
    # newer than the cursor (the WHERE below keeps only replicas that have one), not as the
    # one whose createtxg equals _newest: that correlated subquery was run again for every
    # snapshot of the volume (S^2 rows per replica: 36.5 s for 100k volumes of 31 snapshots,
    # benchmarks/bench_replicate.py)
    cur = conn.execute(
        "UPDATE replicas SET as_of = (SELECT s.creation FROM datasets s WHERE "
        f"{_snaps('replicas')} AND s.createtxg > replicas.cursor_txg "
        "ORDER BY s.createtxg DESC LIMIT 1) "
        f"WHERE {where} AND state = 'idle' AND cursor_txg IS NOT NULL AND "
        f"{_newest('replicas')} > cursor_txg AND {_written('replicas')} = 0", params)
    return max(0, cur.rowcount or 0)


def due(conn: Connection, where: str, params: list[Any], *, force: bool = False,
        ) -> Iterator[tuple[Replica, dict[str, Any]]]:
    """The replicas (rows `r` matching `where`) with something to send, each with its
    source's newest snapshot (name, guid, createtxg, creation), streamed in (source node,
    volume) order; `force`: those with a newer snapshot even if it wrote nothing."""
    changed = "" if force else f" AND {_written('r')} > 0"
    # the newest snapshot by its row id, one index probe per replica: joining on
    # `createtxg = max(createtxg)` let PostgreSQL match every replica against every snapshot
    # of the same txg (one `zfs snapshot` puts a whole pool's in one txg): N^2 rows
    cur = conn.execute(
        "SELECT r.*, n.name AS snap_name, n.guid AS snap_guid, n.createtxg AS snap_txg, "
        "n.creation AS snap_creation FROM replicas r JOIN datasets n ON n.id = (SELECT s.id "
        f"FROM datasets s WHERE {_snaps('r')} ORDER BY s.createtxg DESC LIMIT 1) WHERE {where} "
        "AND r.state IN ('new', 'idle', 'failed', 'sending') AND (r.cursor_txg IS NULL OR "
        f"(n.createtxg > r.cursor_txg{changed}) OR r.state IN ('failed', 'sending')) "
        "ORDER BY r.source_node, r.volume", params)
    for row in cur:
        snap = {"name": row["snap_name"].split("@", 1)[1], "guid": row["snap_guid"],
                "txg": row["snap_txg"], "creation": row["snap_creation"]}
        yield from_row(row), snap


# -- 3. one stream -----------------------------------------------------------------------------

@dataclass
class _Done:
    replica: Replica
    snap: dict[str, Any]
    bytes: int
    seconds: float
    how: str


class Round:
    """One replication round over `policies` (see the module's docstring)."""

    def __init__(self, inv: Inventory, location: Location, conns: Connections, *,
                 limits: list[TokenBucket] | None = None, progress: Progress | None = None,
                 stop: threading.Event | None = None, attempts: int = 3) -> None:
        self.inv, self.location, self.conns = inv, location, conns
        self.progress = progress
        self.stop = stop or threading.Event()
        self.attempts = attempts
        self.limits = list(limits or [])
        if inv.move_bwlimit:
            self.limits.append(TokenBucket(inv.move_bwlimit))
        self.node_limits = {n: TokenBucket(h.bwlimit) for n, h in inv.hosts.items()
                            if h.bwlimit}
        self.slots = {n: threading.Semaphore(h.max_streams) for n, h in inv.hosts.items()}
        self._lock = threading.Lock()
        # the UUIDs of the volumes whose replicas get their first stream, looked up (given)
        # before the streams: (source node, volume) -> UUID or None; node -> why not
        self._uuids: dict[tuple[str, str], str | None] = {}
        self._uuid_errors: dict[str, str] = {}

    def _tell(self, r: Replica, what: str) -> None:
        if self.progress is not None:
            self.progress(r, what)

    def run(self, policies: Policies, *, now: float | None = None) -> RoundResult:
        now = time.time() if now is None else now
        res = RoundResult(now)
        start = {n: self.conns.commands(n) for n in self.inv.hosts}
        conn = mirror.connect(self.location)
        try:
            for p in policies.policies:
                for t in p.replicate:
                    if t.node not in self.inv.hosts:
                        raise ReplicaError(f"policy {p.name!r} (line {t.line}) replicates to "
                                           f"node {t.node!r}, which is not in the inventory",
                                           hint="xfleet inventory show lists the nodes")
            res.added = ensure(conn, policies, self.inv, now)
            where, params = _policy_filter(policies)
            res.replicas = conn.execute(f"SELECT count(*) FROM replicas r WHERE {where} AND "
                                        "state != 'promoted'", params).fetchone()[0]
            res.pruned = self._prune(conn, policies)
            res.current = catch_up_quiet(conn, policies)
            work = list(due(conn, where, params))  # only the replicas that changed
            res.due = len(work)
            ids = claim_many(conn, [r.id for r, _ in work])
            res.busy = len(work) - len(ids)
            mine = set(ids)
            self._send(conn, [(r, s) for r, s in work if r.id in mine], res)
        finally:
            conn.close()
        res.commands = sum(self.conns.commands(n) - c for n, c in start.items())
        return res

    def bring(self, conn: Connection, replica_id: int) -> RoundResult:
        """Bring one replica (claimed by the caller) to its source's newest snapshot."""
        res = RoundResult(time.time())
        work = list(due(conn, "r.id = ?", [replica_id], force=True))
        res.due = len(work)
        self._send(conn, work, res, release=False)
        if res.failed:
            raise ReplicaError(f"replica {replica_id} could not be brought up to date: "
                               f"{res.failed[0]['error']}")
        return res

    def _send(self, conn: Connection, work: list[tuple[Replica, dict[str, Any]]],
              res: RoundResult, *, release: bool = True) -> None:
        done = self._stream_all(conn, work, res, release=release)
        self._advance(conn, done, res)
        touched = sorted({n for d in done for n in (d.replica.source_node,
                                                    d.replica.target_node)})
        if touched:
            sync(self.inv, self.location, touched, connections=self.conns)

    def _stream_all(self, conn: Connection, work: list[tuple[Replica, dict[str, Any]]],
                    res: RoundResult, *, release: bool = True) -> list[_Done]:
        if not work:
            return []
        done: list[_Done] = []
        beat_stop = threading.Event()

        def beat() -> None:
            c = mirror.connect(self.location)
            try:
                while not beat_stop.wait(20):
                    beat_all(c)
            finally:
                c.close()

        beater = threading.Thread(target=beat, daemon=True, name="xfleet-replicate-beat")
        beater.start()
        width = max(1, min(32, sum(h.max_streams for h in self.inv.hosts.values())))
        try:
            self._volume_uuids(work)  # under the heartbeat: a first pass may take a while
            with ThreadPoolExecutor(max_workers=width,
                                    thread_name_prefix="xfleet-replicate") as ex:
                for out in ex.map(lambda w: self._one(w[0], w[1]), work):
                    if isinstance(out, _Done):
                        done.append(out)
                        res.bytes += out.bytes
                        res.sent.append({"id": out.replica.id, "volume": out.replica.volume,
                                         "source_node": out.replica.source_node,
                                         "target_node": out.replica.target_node,
                                         "snapshot": out.snap["name"], "how": out.how,
                                         "bytes": out.bytes, "seconds": round(out.seconds, 3)})
                    elif out is not None:
                        res.failed.append(out)
        finally:
            beat_stop.set()
            if release:
                release_all(conn, [r.id for r, _ in work])
        return done

    @staticmethod
    def _new(r: Replica) -> bool:
        """The replica has never begun a first stream: `_first` prepares it."""
        return not r.receive_properties

    def _volume_uuids(self, work: list[tuple[Replica, dict[str, Any]]]) -> None:
        """The UUIDs of the volumes of the replicas about to begin their first stream (the
        copy is received with it), given now to those without one: one `identity.ensure_many`
        per source node, so one remote command per node for any number of them. A node that
        cannot be asked fails those replicas in `_first` (the next round asks again)."""
        self._uuids, self._uuid_errors = {}, {}
        by_node: dict[str, list[str]] = defaultdict(list)
        for r, _ in work:
            if self._new(r):
                by_node[r.source_node].append(r.volume)
        for node, volumes in sorted(by_node.items()):
            if self.stop.is_set():
                return
            try:
                got = identity.ensure_many(self.inv, self.location, self.conns, node, volumes)
            except XfleetError as exc:
                self._uuid_errors[node] = exc.message
                continue
            self._uuids.update(((node, v), u) for v, u in got.items())

    def _one(self, r: Replica, snap: dict[str, Any]) -> _Done | dict[str, Any] | None:
        """Stream one replica to `snap` in its own mirror connection; a _Done, or the failure
        as a dict (journaled on the replica: the next round resumes it), or None if stopped
        before it began."""
        if self.stop.is_set():
            return None
        nodes = sorted({r.source_node, r.target_node})
        for n in nodes:
            self.slots[n].acquire()
        conn = mirror.connect(self.location)
        try:
            if self.stop.is_set():
                return None
            return self._stream(conn, r, snap)
        except Exception as exc:  # journaled on the replica: the next round resumes it
            if isinstance(exc, XfleetError):
                error = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
            else:  # a bug: the traceback to the log
                log.exception("replica %s failed unexpectedly", r.id)
                error = f"internal error: {type(exc).__name__}: {exc}"
            r.state, r.step, r.error = "failed", None, error
            save(conn, r, f"failed: {error}")
            self._tell(r, "failed")
            return {"id": r.id, "volume": r.volume, "source_node": r.source_node,
                    "target_node": r.target_node, "error": error}
        finally:
            conn.close()
            for n in reversed(nodes):
                self.slots[n].release()

    def _target_state(self, r: Replica, snap: str) -> tuple[bool, str | None, str | None]:
        """(the copy exists, its resume token, the guid of copy@snap) in one command."""
        tv = r.target_volume
        res = self.conns.get(r.target_node).run(
            ["zfs", "get", "-H", "-p", "-o", "name,property,value",
             f"receive_resume_token,guid,{REPLICA_OF}", tv, f"{tv}@{snap}"], check=False)
        got = {(a, b): c for a, b, c in (line.split("\t") for line in res.stdout.splitlines()
                                         if line.count("\t") == 2)}
        exists = (tv, "guid") in got
        token = got.get((tv, "receive_resume_token"))
        if exists and r.cursor is None and got.get((tv, REPLICA_OF), "-") != \
                f"{r.source_node}:{r.volume}":
            raise ReplicaError(
                f"{r.target_node} already has {tv}, which is not a replica of "
                f"{r.source_node}:{r.volume}", hint="xfleet never overwrites (no receive "
                "-F): rename or destroy it, or give the policy's replicate target a `root`")
        return exists, (token if token and token != "-" else None), got.get((f"{tv}@{snap}",
                                                                            "guid"))

    def _stream(self, conn: Connection, r: Replica, snap: dict[str, Any]) -> _Done:
        src, dst = self.conns.get(r.source_node), self.conns.get(r.target_node)
        name = snap["name"]
        t0 = time.monotonic()
        sent = 0
        how = "already there"
        for _attempt in range(self.attempts):
            exists, token, guid = self._target_state(r, name)
            if guid is not None:
                if str(guid) != str(snap["guid"]):
                    raise ReplicaError(f"{r.target_node}:{r.target_volume}@{name} has guid "
                                       f"{guid}, the source's has {snap['guid']}",
                                       hint="the copy is not this volume's replica; "
                                       "investigate before going on")
                return _Done(r, snap, sent, time.monotonic() - t0, how)
            if token is not None:
                send = ["zfs", "send", "-t", token]
                recv = ["zfs", "receive", "-s", "-u", r.target_volume]
                how = "resumed"
            else:
                if not exists:
                    self._first(r)
                send = ["zfs", "send", *r.send_flags]
                if exists and r.cursor:
                    send += ["-I", f"@{r.cursor}"]
                    how = "incremental"
                else:
                    how = "full"
                send.append(f"{r.volume}@{name}")
                recv = ["zfs", "receive", "-s", "-u",
                        *(a for k, v in sorted(r.receive_properties.items())
                          for a in ("-o", f"{k}={v}")), r.target_volume]
            r.state, r.step, r.error = "sending", f"{how}: @{name}", None
            save(conn, r, f"sending @{name} ({how}" + (f" from @{r.cursor}" if how ==
                                                       "incremental" else "") + ")")
            self._tell(r, r.step)
            out = relay(src, send, dst, recv, limits=self._limits(r), stop=self.stop)
            sent += out.bytes
            if out.ok:
                continue  # the next pass finds the snapshot on the target
            if out.stopped:
                raise ReplicaError("stopped", hint="the next round resumes it from its "
                                   "receive token")
            # both sides: a send that cannot start (its base gone) leaves the receive with
            # only "failed to read from stream"
            reason = " ".join((" ".join(x for x in (out.dst_stderr, out.src_stderr) if x)
                               or "the stream ended early").split())[:400]
            save(conn, r, f"attempt failed: {reason}")
            if how == "incremental" and ("does not exist" in reason or "not an earlier" in
                                          reason):
                # the cursor snapshot is gone (its hold released by hand): the bookmark
                send_bm = ["zfs", "send", *r.send_flags, "-i",
                           f"{r.volume}#{r.tag}_{r.cursor}", f"{r.volume}@{name}"]
                out = relay(src, send_bm, dst, recv, limits=self._limits(r), stop=self.stop)
                sent += out.bytes
                if out.ok:
                    how = "incremental from the bookmark"
                    continue
            if "has been modified" in reason or "does not match incremental source" in reason \
                    or "most recent snapshot" in reason:
                raise ReplicaError(f"the copy {r.target_node}:{r.target_volume} was changed "
                                   f"since @{r.cursor}: {reason}",
                                   hint="xfleet never rolls a copy back (no receive -F): "
                                   f"zfs rollback {r.target_volume}@{r.cursor} on "
                                   f"{r.target_node} if nothing there is wanted")
            if "out of space" in reason or "quota exceeded" in reason:
                raise ReplicaError(f"{r.target_node} ran out of space receiving @{name}")
            if token is not None and ("token" in reason or "resume" in reason):
                dst.run(["zfs", "receive", "-A", r.target_volume], check=False)
                save(conn, r, "discarded a stale receive token (receive -A)")
        raise ReplicaError(f"could not send @{name} after {self.attempts} attempts",
                           hint="the next round resumes it (from the receive token)")

    def _first(self, r: Replica) -> None:
        """Before a replica's first full send: the target pool's features against the volume
        (the moves' preflight: raw sends for encrypted volumes), its parent on the target."""
        if not self._new(r):
            return
        # the copy keeps the volume's UUID (looked up, or given at first sight, before the
        # round's streams: _volume_uuids): promoted, it is the same NVMe identity. Checked
        # before the replica is prepared: prepared (receive_properties saved), it is never
        # asked again, so a copy is never received without a UUID its volume has
        key = (r.source_node, r.volume)
        if key not in self._uuids:
            raise ReplicaError(
                f"the UUID of {r.source_node}:{r.volume} could not be looked up: "
                + self._uuid_errors.get(r.source_node, "not asked before the round's streams"),
                hint="the next round asks again; its copy is received with its UUID")
        vol_uuid = self._uuids[key]
        src, dst = self.conns.get(r.source_node), self.conns.get(r.target_node)
        pf = preflight(src, dst, r.volume, r.target_volume, ["-L", "-c"], {})
        r.send_flags = pf.send_flags
        r.receive_properties = {**pf.receive_properties, "volmode": "none",
                                REPLICA_OF: f"{r.source_node}:{r.volume}"}
        if vol_uuid is not None:
            r.receive_properties[UUID_PROPERTY] = vol_uuid
        if "/" in r.target_volume:
            parent = r.target_volume.rsplit("/", 1)[0]
            if parent != pool_of(r.target_volume):
                res = dst.run(["zfs", "create", "-p", parent], check=False)
                if not res.ok and "already exists" not in res.stderr:
                    raise ReplicaError(f"cannot create {parent} on {r.target_node}: "
                                       f"{res.stderr.strip()}")

    def _limits(self, r: Replica) -> list[TokenBucket]:
        return [*self.limits, *(self.node_limits[n] for n in (r.source_node, r.target_node)
                                if n in self.node_limits)]

    # -- 4. cursors --------------------------------------------------------------------------
    def _advance(self, conn: Connection, done: list[_Done], res: RoundResult) -> None:
        by_node: dict[str, list[_Done]] = defaultdict(list)
        for d in done:
            by_node[d.replica.source_node].append(d)
        for node, items in sorted(by_node.items()):
            by_tag: dict[str, list[_Done]] = defaultdict(list)
            for d in items:
                by_tag[d.replica.tag].append(d)
            for tag, group in sorted(by_tag.items()):
                self._advance_tag(conn, node, tag, group, res)

    def _advance_tag(self, conn: Connection, node: str, tag: str, group: list[_Done],
                     res: RoundResult) -> None:
        args = [x for d in group for x in (d.replica.volume, d.snap["name"],
                                          d.replica.cursor or "")]
        out = self.conns.get(node).run(CURSOR.argv(tag, *args), check=False)
        problems = [line for line in out.stdout.splitlines() if "\tERR\t" in line]
        if not out.ok:  # the hold failed: nothing changed; the next round finds the copies
            for d in group:
                d.replica.state = "failed"
                d.replica.error = f"cursor not advanced on {node}: " + " ".join(
                    (out.stderr + " ".join(problems)).split())[:300]
                save(conn, d.replica, d.replica.error)
                res.failed.append({"id": d.replica.id, "volume": d.replica.volume,
                                   "error": d.replica.error})
            return
        now = time.time()
        for d in group:
            r = d.replica
            r.cursor, r.cursor_guid, r.cursor_txg = d.snap["name"], str(d.snap["guid"]), \
                d.snap["txg"]
            r.as_of = float(d.snap["creation"]) if d.snap["creation"] is not None else now
            r.state, r.step, r.error = "idle", None, None
            r.bytes_last, r.rounds, r.last_round_at = d.bytes, r.rounds + 1, now
            r.bytes_total += d.bytes
            note = "; ".join(p.split("\t", 3)[-1] for p in problems if r.volume in p)
            save(conn, r, f"at @{d.snap['name']} ({d.how}, {d.bytes:,} bytes in "
                 f"{d.seconds:.1f}s)" + (f"; {note}" if note else ""))
            self._tell(r, f"at @{d.snap['name']}")

    # -- 5. the copies keep what their source keeps ------------------------------------------
    def _prune(self, conn: Connection, policies: Policies) -> int:
        where, params = _policy_filter(policies)
        # the copy's cursor snapshot `c` joined once per replica (a correlated subquery in
        # the WHERE was looked up again for each of the copy's snapshots)
        rows = conn.execute(
            "SELECT t.node, t.name FROM replicas r JOIN datasets c ON c.node = r.target_node "
            "AND c.name = r.target_volume || '@' || r.cursor JOIN datasets t ON t.node = "
            "r.target_node AND t.name >= r.target_volume || '@' AND t.name < r.target_volume "
            f"|| 'A' AND t.type = 'snapshot' WHERE {where} AND r.state = 'idle' AND r.cursor "
            "IS NOT NULL AND t.name != c.name AND t.createtxg < c.createtxg AND NOT EXISTS "
            "(SELECT 1 FROM datasets s WHERE s.node = r.source_node AND s.name = r.volume || "
            "substr(t.name, length(r.target_volume) + 1)) ORDER BY t.node, t.name",
            params).fetchall()
        if not rows:
            return 0
        targets = [lifecycle.Target(n, name, "snapshot") for n, name in rows]
        plan = lifecycle.plan_destroy(conn, targets)
        if not plan.commands:
            return 0
        out = lifecycle.execute(self.inv, self.location, plan, self.conns,
                                source="replicate")
        if not out.ok:  # journaled in lifecycle_log; the next round tries again
            log.warning("pruning replica snapshots: %s", out.to_dict())
        return len(plan.destroyed) if out.ok else 0
