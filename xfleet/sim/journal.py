"""The change feed of a node: pool history (`zpool history`) and the kernel event queue
(`zpool events`).

Both live in SQLite next to the overlay (the store's connection, or a private in-memory one),
so every transport of a node, in any process, sees the same history and queue. A mutation
appends its records and events in the transaction that saves its overlay changes: O(records)
work, whatever the size of the node. Each pool's history is numbered (seq) so trimming it to
history_len_max is a range delete; the queue is trimmed to zevent_len_max the same way.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xfleet.sim.transaction import Transaction

Entry = dict[str, Any]  # a history record or an event, as stored (JSON)

JOURNAL_SCHEMA = """
    CREATE TABLE IF NOT EXISTS zstate (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS zevents (eid INTEGER PRIMARY KEY, pool TEXT, data TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS zhistory (pool TEXT NOT NULL, seq INTEGER NOT NULL,
        data TEXT NOT NULL, PRIMARY KEY (pool, seq)) WITHOUT ROWID;
"""

HISTORY_EVENT = "sysevent.fs.zfs.history_event"


def dsid(guid: int) -> int:
    """history_dsid: the dataset's object number in the MOS, stable for the dataset's life
    (renames and promotions keep it). Derived from its guid, which the simulator keeps too."""
    return 256 + (guid >> 8) % (1 << 40)


class Journal:
    """The pool histories and the event queue of one node, in SQLite (see above). The caller
    holds `lock` and runs writes inside a transaction on `conn`."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock):
        self.conn = conn
        self.lock = lock

    @classmethod
    def in_memory(cls) -> Journal:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.executescript(JOURNAL_SCHEMA)
        return cls(conn, threading.RLock())

    def get(self, key: str) -> int | None:
        row = self.conn.execute("SELECT value FROM zstate WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else None

    def put(self, key: str, value: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO zstate (key, value) VALUES (?, ?)",
                          (key, value))

    def append(self, txn: Transaction) -> None:
        """Add what `txn` logged: events get the next eids (the queue keeps the newest
        zevent_len_max), records the next seqs of their pool (each keeps history_len_max)."""
        c = self.conn
        st = txn.sim.settings
        dump = functools.partial(json.dumps, separators=(",", ":"))
        if txn.posted:
            last = self.get("eid") or 0
            end = last + txn.posted
            first = end - len(txn.events) + 1
            c.executemany("INSERT OR REPLACE INTO zevents (eid, pool, data) VALUES (?, ?, ?)",
                          [(first + i, e["pool"], dump(e)) for i, e in enumerate(txn.events)])
            self.put("eid", end)
            self.put("etime", txn.event_ns)
            c.execute("DELETE FROM zevents WHERE eid <= ?", (end - st.zevent_len_max,))
        for pool, recs in txn.history.items():
            end = (self.get(f"hseq:{pool}") or 0) + txn.logged[pool]
            first = end - len(recs) + 1
            c.executemany("INSERT INTO zhistory (pool, seq, data) VALUES (?, ?, ?)",
                          [(pool, first + i, dump(h)) for i, h in enumerate(recs)])
            self.put(f"hseq:{pool}", end)
            if end > st.history_len_max:
                c.execute("DELETE FROM zhistory WHERE pool=? AND seq <= ?",
                          (pool, end - st.history_len_max))

    def clear_events(self) -> int:
        n = int(self.conn.execute("SELECT count(*) FROM zevents").fetchone()[0])
        self.conn.execute("DELETE FROM zevents")
        return n

    def events(self, after: int = 0) -> list[tuple[int, Entry]]:
        return [(int(eid), json.loads(data)) for eid, data in self.conn.execute(
            "SELECT eid, data FROM zevents WHERE eid > ? ORDER BY eid", (after,))]

    def has_event(self, eid: int) -> bool:
        return self.conn.execute("SELECT 1 FROM zevents WHERE eid=?", (eid,)).fetchone() \
            is not None

    def history(self, pool: str, after: int, limit: int) -> list[tuple[int, Entry]]:
        return [(int(seq), json.loads(data)) for seq, data in self.conn.execute(
            "SELECT seq, data FROM zhistory WHERE pool=? AND seq > ? ORDER BY seq LIMIT ?",
            (pool, after, limit))]

