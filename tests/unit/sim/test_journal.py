"""The journal: the event queue and the pool histories keep their newest entries, per node
and per state directory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from xfleet.core.errors import UsageError

from .simkit import (
    HEADER,
    HISTORY_EVENT,
    history_events,
    history_records,
    ok,
    parse_events,
    sim,
    what,
)


def test_the_queue_drops_the_oldest_events() -> None:
    t = sim(10, zevent_len_max=16)
    for i in range(12):
        ok(t, "zfs", "create", f"tank/f{i}")
    events = parse_events(ok(t, "zpool", "events", "-H", "-v"))
    eids = [e["eid"] for e in events]
    assert len(events) == 16 and eids == list(range(eids[0], eids[0] + 16))
    assert eids[0] > 1  # the oldest were dropped: a gap before the first one shown
    assert what([e for e in events if e["class"] == HISTORY_EVENT])[-1] == \
        ("create", "tank/f11", " ")
    assert ok(t, "zpool", "events").splitlines()[0] == f"{'TIME':<30} CLASS"
    brief = ok(t, "zpool", "events", "-H").splitlines()
    assert len(brief) == 16 and all(HEADER.match(line) for line in brief)
    for bad in (0, -1, "x", 1.5):
        with pytest.raises(UsageError, match="zevent_len_max"):
            sim(10, zevent_len_max=bad)
    with pytest.raises(UsageError, match="history_len_max"):
        sim(10, history_len_max=0)


def test_history_keeps_the_newest_records_after_the_pool_creation(tmp_path: Path) -> None:
    t = sim(10, state_dir=tmp_path, history_len_max=10)
    for i in range(8):
        ok(t, "zfs", "create", f"tank/h{i}")
    recs = history_records(ok(t, "zpool", "history", "-il", "tank"))
    created = next(i for i, r in enumerate(recs) if r[1].startswith("zpool create "))
    assert recs[0][:2] == ("internal", "create") and created == 49
    rest = recs[created + 1:]  # the newest 10 of 3 (boot) + 8 * 3 records
    assert len(rest) == 10 and rest[-1] == ("command", "zfs create tank/h7")
    assert rest[0] == ("command", "zfs create tank/h4")
    conn = sqlite3.connect(tmp_path / "sim-n1.sqlite")
    assert conn.execute("SELECT count(*) FROM zhistory").fetchone()[0] == 10
    assert conn.execute("SELECT count(*) FROM zevents").fetchone()[0] <= 512


def test_in_memory_and_persisted_nodes_keep_separate_feeds(tmp_path: Path) -> None:
    a = sim(10)
    ok(a, "zfs", "create", "tank/only-here")
    assert any(d == "tank/only-here" for _, d, _ in what(history_events(a)))
    b = sim(10, state_dir=tmp_path)
    assert not any(d == "tank/only-here" for _, d, _ in what(history_events(b)))
    ok(b, "zfs", "create", "tank/kept")
    c = sim(10, state_dir=tmp_path)
    assert what(history_events(c))[-1] == ("create", "tank/kept", " ")
    fresh = sim(11, state_dir=tmp_path)  # other settings: a new node, booted once
    assert [e["eid"] for e in parse_events(ok(fresh, "zpool", "events", "-H", "-v"))] == \
        [1, 2, 3, 4, 5]
