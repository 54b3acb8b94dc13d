"""The snapshot policies on their schedules, inside a long-running process (`xfleet serve
--snapshot-policy FILE`; docs/snapshots.md "Scheduling"). The one-shot equivalents for cron and
systemd timers are `xfleet snapshots run` and `xfleet replicate run`.

- **Ticks** fall on the policies' slots (the union of their schedules), each policy's shifted
  by a stable offset within `spread` seconds (a hash of its name), so policies on the same
  schedule do not all start in the slot's first second.
- **A tick** is one snapshot run of the policies as of that time (`run_policies`: only the
  volumes due a snapshot are taken, in one atomic `zfs snapshot` per pool; pruning within
  `max_prune` per tick), then, if a policy replicates, one replication round (streams within
  each node's `max_streams` and `bwlimit`: the per-node budgets).
- **Catching up**: the first tick runs at start. A volume is due when its newest snapshot is
  older than its schedule's latest slot, so after downtime each volume gets one snapshot, not
  one per missed slot; replicas catch up in one incremental each (`-I` carries every snapshot
  between).
- The policy file is read again at every tick: an edit applies from the next one; a broken
  file is reported and the last good one kept.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xfleet.core.errors import XfleetError
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror.backend import Location
from xfleet.ops.replicate.round import Round
from xfleet.ops.snapshots.apply import DEFAULT_MAX_PRUNE
from xfleet.ops.snapshots.policy import Policies, SnapshotPolicy, load_policies
from xfleet.ops.snapshots.run import run_policies

log = logging.getLogger(__name__)


def offset(p: SnapshotPolicy, spread: float) -> float:
    """Policy `p`'s stable shift within `spread` seconds (less than its period)."""
    if spread <= 0:
        return 0.0
    span = min(spread, p.schedule.period / 2)
    return (zlib.crc32(p.name.encode()) % 10_000) / 10_000 * span


def next_tick(policies: Policies, after: float, spread: float = 0.0) -> float:
    """The first tick strictly after `after`: the earliest of the policies' next slots, each
    shifted by its offset."""
    best: float | None = None
    for p in policies.policies:
        off = offset(p, spread)
        s = p.schedule
        t = s.last_slot(after - off) + off
        k = 1
        while t <= after:  # the next slot: a period on (two across a 25-hour day)
            t = s.last_slot(after - off + k * s.period) + off
            k += 1
        best = t if best is None else min(best, t)
    return best if best is not None else after + 3600


@dataclass
class TickResult:
    at: float
    snapshots: dict[str, Any] | None = None
    replication: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Scheduler:
    """Runs the policies of `policy_path` on their schedules until `stop` is set."""

    inv: Callable[[], Inventory]  # the current inventory (a reload swaps it)
    location: Location
    policy_path: Path
    spread: float = 0.0
    max_prune: int = DEFAULT_MAX_PRUNE
    replicate: bool = True
    say: Callable[[str], None] = field(default=lambda msg: log.info("%s", msg))
    clock: Callable[[], float] = time.time
    ticks: list[TickResult] = field(default_factory=list)  # the last few, newest last
    _policies: Policies | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def policies(self) -> Policies:
        """The policy file as it is now, or the last good one (a broken file is logged)."""
        try:
            p = load_policies(self.policy_path)
            self._policies = p
        except XfleetError as exc:
            if self._policies is None:
                raise
            log.error("snapshot policy %s: %s (keeping the last good one)", self.policy_path,
                      exc.message)
        assert self._policies is not None
        return self._policies

    def tick(self, now: float, stop: threading.Event | None = None) -> TickResult:
        """One tick as of `now`: the snapshot run, then a replication round (its streams
        stop when `stop` is set, resumable by the next round)."""
        res = TickResult(now)
        inv = self.inv()
        try:
            policies = self.policies()
            with Connections(inv.hosts, trust_store=inv.trust_store,
                             state_dir=inv.state_dir) as conns:
                out = run_policies(inv, self.location, conns, policies, now=now,
                                   max_prune=self.max_prune, source="serve")
                res.snapshots = out.to_dict()
                if self.replicate and any(p.replicate for p in policies.policies):
                    res.replication = Round(inv, self.location, conns, stop=stop).run(
                        policies).to_dict()
        except XfleetError as exc:
            res.error = exc.message + (f" ({exc.hint})" if exc.hint else "")
            log.error("snapshot schedule tick at %s: %s", _when(now), res.error)
        except Exception as exc:  # keep the service going; the next tick tries again
            log.exception("snapshot schedule tick at %s failed", _when(now))
            res.error = f"internal error: {type(exc).__name__}: {exc}"
        with self._lock:
            self.ticks = [*self.ticks[-9:], res]
        snaps = res.snapshots or {}
        repl = res.replication or {}
        self.say(f"snapshot tick {_when(now)}: taken {snaps.get('taken', 0)}, pruned "
                 f"{snaps.get('pruned', 0)}" + (f", replicas sent {len(repl.get('sent', []))}"
                                                 f", failed {len(repl.get('failed', []))}"
                                                 if repl else "")
                 + (f"; error: {res.error}" if res.error else ""))
        return res

    def run(self, stop: threading.Event) -> None:
        """Tick now (catching up), then at every tick until `stop`."""
        now = self.clock()
        while not stop.is_set():
            self.tick(now, stop)
            try:
                policies = self.policies()
            except XfleetError as exc:
                log.error("snapshot policy %s: %s", self.policy_path, exc.message)
                if stop.wait(60):
                    return
                continue
            at = next_tick(policies, max(now, self.clock()), self.spread)
            self.say(f"next snapshot tick {_when(at)}")
            while not stop.is_set() and self.clock() < at:
                stop.wait(min(30.0, max(0.05, at - self.clock())))
            now = at


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
