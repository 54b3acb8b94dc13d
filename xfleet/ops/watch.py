"""`xfleet watch`: follow every node's change feed and keep the mirror current within seconds.

Per node, one long-lived `zpool events -f -H -v` channel over the node's SSH connection. Events
are applied in small debounced batches (`sync.apply_events`: one batched `zfs list` of the
touched names per batch). Every `refresh_interval` an incremental sync runs as well: it re-reads
the queue (catching anything the stream missed: ids that jumped, a reboot, a re-import), and
refreshes space figures of pools that moved. Every `reconcile_interval`, a structural
reconcile. A node whose stream or connection drops is retried with exponential backoff; the
mirror keeps its rows meanwhile (marked stale if a sync fails).

Each node's watch state (pid, heartbeat, state) is in the mirror's `nodes` table, which
`xfleet status` and the dashboard read.
"""

from __future__ import annotations

import itertools
import os
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from xfleet import mirror
from xfleet.core.errors import TransportError, XfleetError
from xfleet.core.events import ZEvent, parse_events, unreadable_after, zpool_events
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror.backend import DatabaseError, Location, location
from xfleet.ops.sync import apply_events, sync

# How long the events stream may stay silent before the transport gives up on it: a day.
# A dead connection is noticed sooner (the SSH transport checks it every second).
FOLLOW_IDLE = 86400.0
HEARTBEAT = 2.0
MAX_BATCH = 2000


@dataclass
class NodeWatch:
    node: str
    state: str = "starting"
    last_eid: int | None = None
    events: int = 0  # events applied since start
    batches: int = 0
    syncs: int = 0
    reconnects: int = 0
    last_apply: float | None = None  # unix time of the last applied batch
    lag: float | None = None  # seconds from the last event's kernel time to its row in the mirror
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _End:
    error: BaseException | None


@dataclass
class Watcher:
    inv: Inventory
    mirror_path: str | Location | None = None  # an SQLite path or a PostgreSQL URL
    nodes: Sequence[str] = ()
    refresh_interval: float = 30.0
    reconcile_interval: float = 3600.0
    debounce: float = 0.2
    max_backoff: float = 30.0
    connections: Connections | None = None
    on_change: Callable[[NodeWatch], None] | None = None
    status: dict[str, NodeWatch] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path: Location = (location(self.mirror_path) if self.mirror_path is not None
                               else self.inv.mirror)
        self.hosts = [h.name for h in self.inv.select(list(self.nodes))]
        self.status = {n: NodeWatch(n) for n in self.hosts}
        self._own = self.connections is None
        self.conns = self.connections or Connections(
            self.inv.hosts, trust_store=self.inv.trust_store, state_dir=self.inv.state_dir)

    # -- public ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> dict[str, NodeWatch]:
        """Follow every node until `stop` is set; then close the streams and return."""
        threads = [threading.Thread(target=self._node_loop, args=(n, stop), daemon=True,
                                    name=f"xfleet-watch-{n}") for n in self.hosts]
        for t in threads:
            t.start()
        try:
            while not stop.wait(HEARTBEAT):
                self._heartbeat()
        finally:
            stop.set()
            if self._own:
                self.conns.close()  # ends the followed channels
            for t in threads:
                t.join(timeout=10)
            for n in self.hosts:
                self._update(n, state="stopped")
            self._heartbeat(final=True)
        return self.status

    # -- per node -------------------------------------------------------------------------
    def _update(self, node: str, **changes: Any) -> None:
        st = self.status[node]
        for k, v in changes.items():
            setattr(st, k, v)
        if self.on_change is not None:
            self.on_change(st)

    def _heartbeat(self, final: bool = False) -> None:
        conn = mirror.connect(self.path)
        try:
            # a heartbeat that cannot be written now is skipped: the next one comes soon
            mirror.begin(conn, "the watch heartbeat", patience=HEARTBEAT)
            for n, st in self.status.items():
                conn.execute(
                    "UPDATE nodes SET watch_pid = ?, watch_host = ?, watch_heartbeat = ?, "
                    "watch_state = ? WHERE name = ?",
                    (None if final else os.getpid(), None if final else socket.gethostname(),
                     time.time(), st.state, n))
            conn.execute("COMMIT")
        except (XfleetError, sqlite3.Error, DatabaseError):
            mirror.rollback(conn)
        finally:
            conn.close()

    def _sync(self, node: str, *, reconcile: bool = False) -> int | None:
        """One incremental sync of `node` (full if it has no checkpoint); returns its eid."""
        report = sync(self.inv, self.path, [node], reconcile=reconcile,
                      connections=self.conns, parallel=1)
        r = report.nodes[0]
        self._update(node, syncs=self.status[node].syncs + 1)
        if not r.ok:
            raise XfleetError(r.error or "sync failed")
        conn = mirror.connect(self.path)
        try:
            cp = mirror.checkpoint(conn, node)
        finally:
            conn.close()
        return cp.eid if cp else None

    def _node_loop(self, node: str, stop: threading.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                self._update(node, state="syncing", error=None)
                eid = self._sync(node)
                self._update(node, last_eid=eid)
                backoff = 1.0
                self._follow(node, stop)
            except XfleetError as exc:
                if stop.is_set():
                    break
                self._update(node, state=f"reconnecting in {backoff:.0f}s", error=exc.message,
                             reconnects=self.status[node].reconnects + 1)
                self.conns.reset(node)
                stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def _follow(self, node: str, stop: threading.Event) -> None:
        transport = self.conns.get(node)
        q: queue.Queue[ZEvent | _End] = queue.Queue()

        def reader() -> None:
            try:
                for ev in parse_events(transport.lines(zpool_events(follow=True),
                                                       timeout=FOLLOW_IDLE)):
                    q.put(ev)
                    if stop.is_set():
                        break
                q.put(_End(None))
            except BaseException as exc:  # noqa: BLE001 - handed to the follower thread
                q.put(_End(exc))

        threading.Thread(target=reader, daemon=True, name=f"xfleet-events-{node}").start()
        self._update(node, state="following")
        now = time.monotonic()
        next_refresh = now + self.refresh_interval
        next_reconcile = now + self.reconcile_interval
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_reconcile or now >= next_refresh:
                reconcile = now >= next_reconcile
                self._update(node, last_eid=self._sync(node, reconcile=reconcile))
                next_refresh = time.monotonic() + self.refresh_interval
                if reconcile:
                    next_reconcile = time.monotonic() + self.reconcile_interval
                continue
            try:
                item = q.get(timeout=min(HEARTBEAT, max(0.05, next_refresh - now)))
            except queue.Empty:
                continue
            batch: list[ZEvent] = []
            end: _End | None = None
            deadline = time.monotonic() + self.debounce
            while True:
                if isinstance(item, _End):
                    end = item
                    break
                batch.append(item)
                if len(batch) >= MAX_BATCH:
                    break
                try:
                    item = q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            if batch:
                self._apply(node, batch)
            if end is not None:
                if stop.is_set():
                    return
                err = end.error
                if isinstance(err, XfleetError):
                    raise err
                raise TransportError(
                    f"the event stream ended{f': {err}' if err else ''}", where=node)

    def _apply(self, node: str, batch: list[ZEvent]) -> None:
        st = self.status[node]
        last = st.last_eid or 0
        unreadable = bool(unreadable_after(batch, last))
        fresh = [e for e in batch if e.eid > last]  # the stream starts with the queue: skip
        if not fresh and not unreadable:
            return
        if unreadable or fresh[0].eid != last + 1 or \
                any(b.eid != a.eid + 1 for a, b in itertools.pairwise(fresh)):
            # ids jumped (lost events), restarted, or an event could not be read whole (a
            # property value imitating the event format): the incremental sync judges the gap
            # and catches up from history or reconciles.
            self._update(node, last_eid=self._sync(node))
            return
        r = apply_events(self.inv, self.path, node, self.conns.get(node), fresh)
        kernel = fresh[-1].time[0] + fresh[-1].time[1] / 1e9
        self._update(node, last_eid=fresh[-1].eid, events=st.events + r.events,
                     batches=st.batches + 1, last_apply=time.time(),
                     lag=max(0.0, time.time() - kernel))
