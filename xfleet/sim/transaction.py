"""A mutation in progress: a working copy of the overlay, committed at the end of a command
(SimTransport.mutate), and the history records and events the mutation logs as OpenZFS logs it.

Every mutation is logged as OpenZFS logs it: internal records in `zpool history -il` (one per
sync task, in its txg, with the dataset's id) plus the ioctl and command records, and one
sysevent.fs.zfs.history_event per internal record in the kernel's bounded event queue.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from xfleet.sim.journal import HISTORY_EVENT, Entry, dsid
from xfleet.sim.names import pool_of
from xfleet.sim.overlay import Overlay, Rec
from xfleet.sim.properties import SPECIAL_PROPS, prop_number
from xfleet.sim.settings import TXG_SECONDS, mix
from xfleet.sim.view import View

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport


class Transaction:
    """One mutation of the node `sim`: `ov` is its working copy of the overlay (`view` sees
    it), `changed` the names to save, `history` and `events` what it logged."""

    def __init__(self, sim: SimTransport, ov: Overlay):
        self.sim = sim
        self.ov = ov
        self.view = View(sim, ov)
        self.changed: set[str] = set()
        last = int(ov.meta.get("clock", "0"))
        wall = time.time_ns()
        self.now = max(wall // 1_000_000_000, sim.settings.now + 60, last)
        ov.meta["clock"] = str(self.now)
        self._txg: dict[str, int] = {}
        self._stamped: set[str] = set()
        # event times: the wall clock when it is the clock in use, never before the node's
        # last event (events of one txg share their time, as the kernel posts them together)
        self._real_clock = wall // 1_000_000_000 == self.now
        self.event_ns = sim.journal.get("etime") or 0
        self._ns_txg: tuple[str, int] | None = None
        # history records (per pool) and events to append when this commits: at most what
        # the history and the queue keep (a `zfs destroy -r` of a big pool logs a lot)
        st = sim.settings
        self.history: dict[str, deque[Entry]] = {}
        self.logged: dict[str, int] = {}
        self.last_pool: str | None = None
        self.events: deque[Entry] = deque(maxlen=st.zevent_len_max)
        self.posted = 0

    def txg(self, pool: str) -> int:
        """The pool's current txg in this transaction (the first one it uses if none yet)."""
        got = self._txg.get(pool)
        if got is None:
            pc = self.sim.base.pool_created[pool]
            last = int(self.ov.meta.get(f"txg:{pool}", "0"))
            got = max(last + 1, 1 + (self.now - pc) // TXG_SECONDS)
            self._txg[pool] = got
            self.ov.meta[f"txg:{pool}"] = str(got)
        return got

    def stamp(self, pool: str) -> int:
        """The txg of the next sync task in `pool`: the first one is txg(pool), each further
        one the txg after (as zfs waits for each task's txg to sync before the next)."""
        if pool not in self._stamped:
            self._stamped.add(pool)
            return self.txg(pool)
        got = self.txg(pool) + 1
        self._txg[pool] = got
        self.ov.meta[f"txg:{pool}"] = str(got)
        return got

    # -- history and events ----------------------------------------------------------------
    def internal(self, pool: str, op: str, text: str, txg: int, *, ds: str | None = None,
                 guid: int | None = None) -> None:
        """An internal history record (spa_history_log_internal[_ds]) and the
        sysevent.fs.zfs.history_event the kernel posts for it."""
        host = self.sim.node
        rec: Entry = {"pool": pool, "kind": "int", "time": self.now, "txg": txg, "op": op,
                    "str": text, "host": host}
        fields: list[tuple[str, Any]] = [("history_hostname", host)]
        if ds is not None:
            assert guid is not None
            rec.update(ds=ds, dsid=dsid(guid))
            fields.append(("history_dsname", ds))
        fields += [("history_internal_str", text), ("history_internal_name", op)]
        if ds is not None:
            fields.append(("history_dsid", rec["dsid"]))
        fields += [("history_txg", txg), ("history_time", self.now)]
        self._log(rec)
        self.post(pool, HISTORY_EVENT, fields, txg)

    def _log(self, rec: Entry) -> None:
        pool = rec["pool"]
        got = self.history.get(pool)
        if got is None:
            got = self.history[pool] = deque(maxlen=self.sim.settings.history_len_max)
        got.append(rec)
        self.logged[pool] = self.logged.get(pool, 0) + 1
        self.last_pool = pool

    def post(self, pool: str, cls: str, extra: list[tuple[str, Any]], txg: int,
             context: int = 0) -> None:
        """A kernel event (spa_event_notify) about `pool`."""
        if self._ns_txg != (pool, txg):
            wall = time.time_ns()
            now = wall if self._real_clock else self.now * 1_000_000_000 + wall % 1_000_000
            self.event_ns = max(now, self.event_ns + 1000)
            self._ns_txg = (pool, txg)
        sec, nsec = divmod(self.event_ns, 1_000_000_000)
        fields: list[tuple[str, Any]] = [
            ("version", 0), ("class", cls), ("pool", pool),
            ("pool_guid", self.sim.base.pool_guid[pool]), ("pool_state", 0),
            ("pool_context", context), *extra]
        self.events.append({"pool": pool, "class": cls, "fields": fields,
                            "time": [sec, nsec]})
        self.posted += 1

    def ioctl(self, pool: str, name: str, args: Sequence[tuple[str, Any]],
              output: Sequence[tuple[str, Any]] | None = None) -> None:
        """The record a new-style ioctl logs (zpool history -i shows its input nvlist, and
        its output nvlist when it has one)."""
        ms = 20 + mix(self.sim.node, name, self.now, self.logged.get(pool, 0)) % 130
        rec: Entry = {"pool": pool, "kind": "ioctl", "time": self.now, "ioctl": name,
                      "ms": ms, "input": _nvlist_lines(args, 8), "host": self.sim.node}
        if output is not None:
            rec["output"] = _nvlist_lines(output, 8)
        self._log(rec)

    def touch(self, pool: str) -> None:
        """A legacy ioctl that logs no record of its own ran (its command still gets one)."""
        self.last_pool = pool

    def command(self, argv: Sequence[str]) -> None:
        """The command line, logged (zpool_log_history) once the command succeeded, to the
        pool of the last ioctl that logged."""
        assert self.last_pool is not None
        words = [argv[0].rsplit("/", 1)[-1], *argv[1:]]
        self._log({"pool": self.last_pool, "kind": "cmd", "time": self.now,
                   "cmd": " ".join(words), "host": self.sim.node})

    def log_props(self, rec: Rec, props: Sequence[str], *, op: str = "set") -> None:
        """History of `zfs set`-like property changes on `rec` (already applied): special
        properties one sync task each, then the others in one (dsl_props_set)."""
        name = rec["name"]
        pool = pool_of(name)
        special = [p for p in SPECIAL_PROPS if p in props]
        special.sort(key=props.index)
        for p in special:
            value = rec.get(p, 0) if p == "refreservation" else \
                (rec.get("local") or {}).get(p, "0")
            self.internal(pool, op, f"{p}={value}", self.stamp(pool), ds=name, guid=rec["guid"])
        generic = [p for p in props if p not in SPECIAL_PROPS and p != "volsize"]
        if generic:
            txg = self.stamp(pool)
            for p in generic:
                value = prop_number(p, (rec.get("local") or {}).get(p, ""))
                self.internal(pool, op, f"{p}={value}", txg, ds=name, guid=rec["guid"])

    def guid(self, name: str) -> int:
        return mix(self.sim.settings.seed, self.sim.node, "guid", name, self.now,
                   self.ov.generation, len(self.changed)) | 1

    def get(self, name: str) -> Rec | None:
        """A private copy of the current record of `name`, to modify and put()."""
        rec = self.view.record(name)
        if rec is None:
            return None
        copy: Rec = json.loads(json.dumps(rec))
        return copy

    def put(self, rec: Rec) -> None:
        self.ov.put(self.sim.base, rec)
        self.changed.add(rec["name"])

    def drop(self, name: str, *, base: bool, subtree: bool) -> None:
        if name in self.ov.records:
            self.ov.remove(self.sim.base, name)
            self.changed.add(name)
        if base:
            self.ov.hide(self.sim.base, name, subtree=subtree)
            self.changed.add(name)

    def subtree(self, name: str, kinds: frozenset[str] = frozenset({"fs", "vol", "snap"}),
                ) -> list[Rec]:
        """Derived records of `name` and everything below it, in zfs list order (bookmarks
        only when asked for: they never block a destroy)."""
        pool = pool_of(name)
        v = self.view
        out: list[Rec] = []
        if name == pool and "fs" in kinds:
            out.append(v.root(pool, None))
        out.extend(v.items(pool, [name], None, kinds, None))
        return out


def _nvlist_lines(items: Sequence[tuple[str, Any]], indent: int) -> list[str]:
    """An nvlist as libnvpair's dump_nvlist prints it: booleans by name, strings quoted,
    numbers plain, nested lists (a list value) indented by 4."""
    pad = " " * indent
    out: list[str] = []
    for key, value in items:
        if value is True:
            out.append(f"{pad}{key}")
        elif isinstance(value, list):
            out.append(f"{pad}{key}:")
            out.extend(_nvlist_lines(value, indent + 4))
        elif isinstance(value, int):
            out.append(f"{pad}{key}: {value}")
        else:
            out.append(f"{pad}{key}: '{value}'")
    return out

