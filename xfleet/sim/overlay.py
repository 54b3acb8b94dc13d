"""The overlay: mutations (create, snapshot, clone, destroy, set, inherit, rename, promote,
bookmark) live here, as full records of created or changed datasets and a list of hidden base
names.

It is kept in `state_dir/sim-NODE.sqlite` when a state directory is given (so separate
processes see each other's changes) and in memory otherwise. A tenant touched by the overlay is
rendered on a slow path (records with derived space figures, xfleet/sim/view.py); every other
tenant stays on the fast path.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xfleet.core.errors import TransportError
from xfleet.sim.journal import JOURNAL_SCHEMA
from xfleet.sim.names import dataset_of, pool_of

if TYPE_CHECKING:
    from xfleet.sim.base import BaseFleet

Rec = dict[str, Any]  # a dataset's record (JSON-able): what the overlay keeps of a dataset


class Store:
    """`state_dir/sim-NODE.sqlite`: the overlay of one node, shared by processes."""

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS records (name TEXT PRIMARY KEY, data TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS hidden (name TEXT PRIMARY KEY, subtree INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS totals (fingerprint TEXT NOT NULL, pool TEXT NOT NULL,
            used INTEGER NOT NULL, lused INTEGER NOT NULL, phys INTEGER NOT NULL,
            PRIMARY KEY (fingerprint, pool));
    """ + "\n" + JOURNAL_SCHEMA

    def __init__(self, path: Path, node: str):
        self.path = path
        self.lock = threading.RLock()  # one connection, used by the transport's threads
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(path), timeout=60, isolation_level=None,
                                        check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(self.SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise TransportError(
                f"cannot open the simulator state {path}: {exc}", where=node,
                hint="check 'state_dir' in the inventory (it must be a writable directory)",
            ) from None

    def generation(self) -> str:
        with self.lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return str(row[0]) if row else "0"

    def load(self, ov: Overlay) -> None:
        with self.lock:
            self._load(ov)

    def _load(self, ov: Overlay) -> None:
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        ov.meta = {k: v for k, v in meta.items() if k != "generation"}
        ov.records = {n: json.loads(d) for n, d in
                      self.conn.execute("SELECT name, data FROM records")}
        ov.hidden_exact = set()
        ov.hidden_sub = set()
        for name, sub in self.conn.execute("SELECT name, subtree FROM hidden"):
            (ov.hidden_sub if sub else ov.hidden_exact).add(name)
        ov.generation = meta.get("generation", "0")

    def save(self, ov: Overlay, changed: set[str]) -> None:
        c = self.conn
        for name in changed:
            rec = ov.records.get(name)
            if rec is None:
                c.execute("DELETE FROM records WHERE name=?", (name,))
            else:
                c.execute("INSERT OR REPLACE INTO records (name, data) VALUES (?, ?)",
                          (name, json.dumps(rec, separators=(",", ":"))))
            if name in ov.hidden_exact or name in ov.hidden_sub:
                c.execute("INSERT OR REPLACE INTO hidden (name, subtree) VALUES (?, ?)",
                          (name, 1 if name in ov.hidden_sub else 0))
        for k, v in ov.meta.items():
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, v))
        gen = str(int(ov.generation or "0") + 1)
        c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('generation', ?)", (gen,))
        ov.generation = gen

    def reset(self) -> None:
        self.conn.execute("DELETE FROM records")
        self.conn.execute("DELETE FROM hidden")
        self.conn.execute("DELETE FROM meta WHERE key != 'generation'")
        self.conn.execute("DELETE FROM zstate")
        self.conn.execute("DELETE FROM zevents")
        self.conn.execute("DELETE FROM zhistory")

    def load_totals(self, fingerprint: str, pool: str) -> tuple[int, int, int] | None:
        try:
            with self.lock:
                row = self.conn.execute(
                    "SELECT used, lused, phys FROM totals WHERE fingerprint=? AND pool=?",
                    (fingerprint, pool)).fetchone()
        except sqlite3.Error:
            return None
        return (int(row[0]), int(row[1]), int(row[2])) if row else None

    def save_totals(self, fingerprint: str, pool: str, got: tuple[int, int, int]) -> None:
        with self.lock, contextlib.suppress(sqlite3.Error):
            self.conn.execute(
                "INSERT OR REPLACE INTO totals (fingerprint, pool, used, lused, phys) "
                "VALUES (?, ?, ?, ?, ?)", (fingerprint, pool, *got))

    def close(self) -> None:
        with self.lock:
            self.conn.close()


@dataclass
class Index:
    """Where the overlay's names fall in the base: per tenant (`groups`), outside any tenant
    per pool (`loose`), and the tenants it changes or hides something in (`affected`)."""

    groups: dict[int, list[str]]
    loose: dict[str, list[str]]
    affected: set[int]

    def copy(self) -> Index:
        return Index({k: list(v) for k, v in self.groups.items()},
                     {p: list(v) for p, v in self.loose.items()}, set(self.affected))


@dataclass
class Overlay:
    records: dict[str, Rec] = field(default_factory=dict)
    hidden_exact: set[str] = field(default_factory=set)
    hidden_sub: set[str] = field(default_factory=set)
    meta: dict[str, str] = field(default_factory=dict)
    generation: str = "0"
    # index() of these records: built once, shared by every command that reads this state
    # (not rebuilt per command: 100k snapshots in the overlay made each command scan them
    # all) and by the working copy of a mutation, which copies it before its first change
    _index: Index | None = field(default=None, repr=False, compare=False)
    _index_owned: bool = field(default=False, repr=False, compare=False)

    def copy(self) -> Overlay:
        """A working copy for one mutation. Copy-on-write: the records are shared, never
        changed in place (Transaction.get hands out a private copy, put() replaces it), so a
        mutation costs what it changes, not the overlay's size (100k received volumes)."""
        return Overlay(
            records=dict(self.records),
            hidden_exact=set(self.hidden_exact), hidden_sub=set(self.hidden_sub),
            meta=dict(self.meta), generation=self.generation, _index=self._index,
        )

    def index(self, base: BaseFleet) -> Index:
        """The index of the records as they are now. A View keeps the one it was built
        with (the state at the start of its command, as before)."""
        got = self._index
        if got is None:
            got = Index({}, {p: [] for p in base.pools}, set())
            for name in self.records:
                _place(got, base, name)
            for name in (*self.hidden_exact, *self.hidden_sub):
                k = base.group_of(name)
                if k is not None:
                    got.affected.add(k)
            # not owned: the Views built on it keep it as it is now; a change copies it first
            self._index, self._index_owned = got, False
        return got

    def _own(self) -> Index | None:
        """The index, made this overlay's own before it is changed (None: not built yet)."""
        if self._index is not None and not self._index_owned:
            self._index, self._index_owned = self._index.copy(), True
        return self._index

    def put(self, base: BaseFleet, rec: Rec) -> None:
        name = rec["name"]
        if name not in self.records and (idx := self._own()) is not None:
            _place(idx, base, name)
        self.records[name] = rec

    def remove(self, base: BaseFleet, name: str) -> None:
        if name in self.records:
            del self.records[name]
            if (idx := self._own()) is not None:
                k = base.group_of(name)
                if k is not None:
                    idx.groups[k].remove(name)
                elif (pool := pool_of(name)) in idx.loose and name != pool:
                    idx.loose[pool].remove(name)

    def hide(self, base: BaseFleet, name: str, *, subtree: bool) -> None:
        (self.hidden_sub if subtree else self.hidden_exact).add(name)
        if (idx := self._own()) is not None and (k := base.group_of(name)) is not None:
            idx.affected.add(k)

    def hides(self, name: str) -> bool:
        if name in self.hidden_exact:
            return True
        if not self.hidden_sub:
            return False
        ds = dataset_of(name)
        if ds in self.hidden_sub:
            return True
        while "/" in ds:
            ds = ds.rsplit("/", 1)[0]
            if ds in self.hidden_sub:
                return True
        return False


def _place(idx: Index, base: BaseFleet, name: str) -> None:
    k = base.group_of(name)
    if k is not None:
        idx.groups.setdefault(k, []).append(name)
        idx.affected.add(k)
    else:
        pool = pool_of(name)
        if pool in idx.loose and name != pool:
            idx.loose[pool].append(name)
