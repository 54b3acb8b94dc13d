"""The change-feed parsers and the gap logic, on output captured from real OpenZFS."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

from conftest import FIXTURES

from xfleet.core.events import (
    Touch,
    ZEvent,
    ancestors,
    event_touches,
    parse_events,
    parse_history,
    plan,
    touches,
)
from xfleet.ops.sync import new_events

REAL = FIXTURES / "real"


def real_events() -> list[ZEvent]:
    return list(parse_events((REAL / "zpool_events.txt").read_text().splitlines()))


def test_events_parse_every_block_of_real_output() -> None:
    text = (REAL / "zpool_events.txt").read_text()
    evs = real_events()
    assert len(evs) == text.count("\n        eid = ")
    eids = [e.eid for e in evs]
    assert eids == list(range(eids[0], eids[0] + len(evs)))  # contiguous, in order
    first = evs[0]
    assert first.cls == "sysevent.fs.zfs.history_event" and first.is_history
    assert first.pool == "tank" and first.dsname == "tank/vols"
    assert first.internal_name == "create" and first.txg == 9
    assert first.pool_guid == str(0x952C98A96FF68985)
    assert first.time == (0x6B0525F9, 0xA037A00) and first.stamp == "1795499513.168000000"


def test_events_stream_yields_each_event_at_its_blank_line() -> None:
    lines = (REAL / "zpool_events.txt").read_text().splitlines()
    seen: list[int] = []

    # a follow stream: the consumer must get event 1 before event 2 is written
    def feed() -> Iterator[str]:
        for i, line in enumerate(lines):
            if i and not lines[i - 1].strip():
                assert len(seen) == sum(1 for x in lines[:i] if x.startswith("        eid = "))
            yield line

    for ev in parse_events(feed()):
        seen.append(ev.eid)
    assert len(seen) == len(real_events())


def test_event_names_with_spaces_and_strings_are_unquoted() -> None:
    evs = real_events()
    names = {e.dsname for e in evs}
    assert "tank/vols/db 1" in names and "tank/vols/db 1@before upgrade" in names
    rename = next(e for e in evs if e.internal_name == "rename")
    assert rename.internal_str == "-> tank/vols/renamed-vol"
    assert touches("rename", rename.dsname, rename.internal_str) == [
        Touch("tank/vols/old-name", recursive=True, moved=True),
        Touch("tank/vols/renamed-vol", recursive=True)]


def test_history_internal_records_parse_with_two_word_ops_and_spaces() -> None:
    recs = list(parse_history((REAL / "zpool_history.txt").read_text().splitlines()))
    assert recs and all(r.txg > 0 for r in recs)
    snap = next(r for r in recs
                if r.op == "snapshot" and r.dsname == "tank/vols/db 1@before upgrade")
    assert snap.detail == ""
    clone = next(r for r in recs if r.op == "clone" and r.dsname == "tank/vols/branch-1")
    assert clone.detail == "origin=tank/vols/tmpl@gold (307)"
    pool_level = [r for r in recs if r.dsname is None]
    assert pool_level[0].op == "create" and pool_level[0].detail.startswith("pool version")
    # the same changes as the event feed, in the same order (both come from the same records)
    hist = [(r.op, r.dsname) for r in recs if r.dsname]
    evs = [(e.internal_name, e.dsname) for e in real_events() if e.dsname]
    assert hist[-len(evs):] == evs
    # two-word operations and names with spaces
    lines = ["History for 'tank':",
             "2026-11-24.05:52:05 [txg:50] finish receiving tank/vols/db 1/%recv (125) "
             "snap=s1 [on lab1]",
             "2026-11-24.05:52:05 [txg:51] clone swap tank/vols/db 1/%recv (126) parent=db 1 "
             "[on lab1]"]
    got = list(parse_history(lines))
    assert [(r.op, r.dsname, r.detail) for r in got] == [
        ("finish receiving", "tank/vols/db 1/%recv", "snap=s1"),
        ("clone swap", "tank/vols/db 1/%recv", "parent=db 1")]
    assert touches(got[0].op, got[0].dsname, got[0].detail) == [
        Touch("tank/vols/db 1", recursive=True)]


def test_touches_by_operation() -> None:
    assert touches("snapshot", "tank/v@s") == [Touch("tank/v@s")]
    assert touches("set", "tank/fs", "compression=15") == [Touch("tank/fs", recursive=True)]
    assert touches("set", "tank/v", "volsize=1073741824") == [Touch("tank/v")]
    assert touches("set", "tank/v@s", "xfleet:x=1") == [Touch("tank/v@s")]
    assert touches("rename", "tank/v@a", "-> @b") == [Touch("tank/v@a", moved=True),
                                                      Touch("tank/v@b")]
    assert touches("bookmark", "tank/v", "name=daily.1 creation_txg=43") == [
        Touch("tank/v"), Touch("tank/v#daily.1")]
    assert touches("promote", "tank/c") == [Touch("tank/c", recursive=True, promoted=True)]
    assert touches("hold", "tank/v@s", "tag") == []
    assert touches("open", None, "pool version 5000") == []
    assert touches("something new", "tank/x") == [Touch("tank/x", recursive=True)]


def test_plan_fetches_ancestors_and_collapses_subtrees() -> None:
    assert ancestors("tank/a/b@s") == ["tank/a/b", "tank/a", "tank"]
    p = plan([Touch("tank/a/b@s"), Touch("tank/a", recursive=True), Touch("tank/c/d"),
              Touch("tank/a/x/y", recursive=True)])
    assert p.trees == ["tank/a"]
    assert p.exact == ["tank", "tank/c", "tank/c/d"]
    # the real scenario: a recursive set on tank/vols covers everything below it
    assert plan(event_touches(real_events())).trees == ["tank/vols"]


def test_new_events_after_the_checkpoint_and_gaps() -> None:
    evs = real_events()
    first, last = evs[0].eid, evs[-1].eid
    mid = evs[10]
    fresh, gap = new_events(mid.eid, mid.stamp, evs)
    assert gap is None and [e.eid for e in fresh] == list(range(mid.eid + 1, last + 1))
    # nothing new
    assert new_events(last, evs[-1].stamp, evs) == ([], None)
    # the oldest events fell off the queue (overflow, or zpool events -c)
    fresh, gap = new_events(first - 5, "x", evs)
    assert gap and "lost" in gap and fresh[0].eid == first
    # the checkpoint's own event fell off but nothing after it: no gap
    fresh, gap = new_events(first - 1, "x", evs)
    assert gap is None and len(fresh) == len(evs)
    # ids restarted: the checkpoint's id is another event now, or beyond the newest id
    fresh, gap = new_events(mid.eid, "1.000000001", evs)
    assert gap and "restarted" in gap and len(fresh) == len(evs)
    fresh, gap = new_events(last + 100, evs[-1].stamp, evs)
    assert gap and "restarted" in gap
    # an empty queue with a checkpoint cannot vouch for anything
    assert new_events(last, evs[-1].stamp, [])[1] is not None
    assert new_events(0, None, []) == ([], None)


def test_scenario_changes_touch_every_dataset_the_scenario_made() -> None:
    """Every dataset the real scenario created is inside what its events say to fetch."""
    names = json.loads((REAL / "scenario.json").read_text())["datasets"]
    p = plan(event_touches(real_events()))
    covered = [n for n in names
               if n in p.exact or any(n == t or n.startswith((t + "/", t + "@", t + "#"))
                                      for t in p.trees)]
    assert covered == [n for n in names if n != "tank"] or covered == names
    assert dataclasses.asdict(p)["trees"] == ["tank/vols"]


def test_every_operation_of_the_real_ops_capture_maps_to_names() -> None:
    """tests/fixtures/real/zpool_events_ops.txt: receive (full, incremental, resumable),
    rollback, holds, inherit, renames of snapshots and of a filesystem with children, destroy
    -r, scrub; captured from real OpenZFS by `python -m tools.capture --ops`."""
    evs = list(parse_events((REAL / "zpool_events_ops.txt").read_text().splitlines()))
    assert len(evs) == (REAL / "zpool_events_ops.txt").read_text().count("\n        eid = ")
    by_op: dict[str, list[Touch]] = {}
    for e in evs:
        if e.internal_name:
            by_op.setdefault(e.internal_name, []).extend(
                touches(e.internal_name, e.dsname, e.internal_str))
    assert {"receive", "finish receiving", "clone swap", "rename", "inherit", "destroy",
            "hold", "release"} <= set(by_op)
    assert by_op["hold"] == [] and by_op["release"] == []
    every = [t for ts in by_op.values() for t in ts]
    assert all("%" not in t.name and not t.name.endswith("/") for t in every)
    assert Touch("tank/other/rx", recursive=True) in by_op["clone swap"]  # receive into rx
    assert Touch("tank/app2/vol-thick", recursive=True) in by_op["clone swap"]  # a rollback
    assert Touch("tank/app", recursive=True, moved=True) in by_op["rename"]
    assert Touch("tank/app2", recursive=True) in by_op["rename"]
    recs = list(parse_history((REAL / "zpool_history_ops.txt").read_text().splitlines()))
    assert [(r.op, r.dsname) for r in recs if r.dsname and r.tail][-len(evs):] == [
        (e.internal_name, e.dsname) for e in evs if e.dsname][-len(evs):]


def test_a_follower_that_fell_behind_sees_an_eid_gap() -> None:
    """`zpool events -f` prints `dropped 1 events` (whatever the number lost) on stdout when
    its cursor fell out of the queue, then goes on from the oldest queued event."""
    lines = (REAL / "zpool_events.txt").read_text().splitlines()
    blocks = "\n".join(lines).split("\n\n")
    text = "\n\n".join(blocks[:3]) + "\n\ndropped 1 events\n" + "\n\n".join(blocks[10:])
    evs = list(parse_events(text.splitlines()))
    assert len(evs) == 3 + len(real_events()) - 10
    assert evs[3].eid - evs[2].eid == 8  # the gap the watch acts on
