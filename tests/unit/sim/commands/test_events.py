"""`zpool events` and `zpool history`: parity with the real captures (tests/fixtures/real, see
its README), the queue's -c, following it (-f), pool filters."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import PATIENCE, finishes, wait_for

from xfleet.core.errors import CommandTimeout, TransportError
from xfleet.sim import SimTransport

from ..simkit import (
    HEADER,
    HISTORY_EVENT,
    REAL,
    history_records,
    mask,
    ok,
    parse_events,
    replayed_feed,
    sim,
    what,
)


def test_replayed_scenario_posts_the_events_real_zfs_posts() -> None:
    t, _ = replayed_feed()
    mine = parse_events(ok(t, "zpool", "events", "-H", "-v"))
    real = parse_events((REAL / "zpool_events.txt").read_text())
    assert real and {e["class"] for e in real} == {HISTORY_EVENT}
    assert [e["class"] for e in mine] == [e["class"] for e in real]
    assert [(n, d, mask(s)) for n, d, s in what(mine)] == \
        [(n, d, mask(s)) for n, d, s in what(real)]
    assert [e["keys"] for e in mine] == [e["keys"] for e in real]
    for events in (mine, real):
        eids = [e["eid"] for e in events]
        assert eids == list(range(eids[0], eids[0] + len(eids)))
        times = [tuple(int(x, 16) for x in e["fields"]["time"].split()) for e in events]
        assert times == sorted(times)
        txgs = [int(e["fields"]["history_txg"], 16) for e in events]
        assert txgs == sorted(txgs)
        f0 = events[0]["fields"]
        assert (f0["version"], f0["pool"], f0["pool_state"], f0["pool_context"],
                f0["history_hostname"]) == ("0x0", "tank", "0x0", "0x0", "lab1")


@pytest.mark.parametrize("side", ["real", "sim"])
def test_event_numbers_are_consistent_like_real_zfs(side: str) -> None:
    """txgs are createtxgs, dsids identify datasets (clone origins, bookmark targets)."""
    if side == "real":
        events = parse_events((REAL / "zpool_events.txt").read_text())
        listing = (REAL / "zfs_list_fast.txt").read_text()
    else:
        t, scenario = replayed_feed()
        events = parse_events(ok(t, "zpool", "events", "-H", "-v"))
        listing = ok(t, *scenario["commands"]["zfs_list_fast.txt"])
    createtxg = {line.split("\t")[0]: int(line.split("\t")[2]) for line in listing.splitlines()}
    dsid: dict[str, int] = {}
    txg_of: dict[str, int] = {}
    checked = 0
    for e in events:
        f = e["fields"]
        name, op, text = f["history_dsname"], f["history_internal_name"], \
            f["history_internal_str"]
        if dsid.setdefault(name, int(f["history_dsid"], 16)) != int(f["history_dsid"], 16):
            raise AssertionError(f"{name}: dsid changed")
        if op in ("create", "clone", "snapshot"):
            txg_of[name] = int(f["history_txg"], 16)
            if name in createtxg:  # not renamed or moved by a promote since
                assert createtxg[name] == txg_of[name], name
                checked += 1
        if op == "clone":
            m = re.match(r"^origin=(.+) \(([0-9]+)\)$", text)
            assert m and int(m[2]) == dsid[m[1]]
        if op == "bookmark":
            m = re.match(r"^name=(.+) creation_txg=([0-9]+) target_snap=([0-9]+) redact_obj=0$",
                         text)
            assert m and int(m[2]) == txg_of[f"{name}@{m[1]}"]
            assert int(m[3]) == dsid[f"{name}@{m[1]}"]
        if op == "rename":
            assert text == f"-> {name.rsplit('/', 1)[0]}/renamed-vol"
    assert checked > 20


def test_replayed_history_prints_like_real_zfs() -> None:
    t, _ = replayed_feed()
    mine = history_records(ok(t, "zpool", "history", "-il", "tank"))
    real = history_records((REAL / "zpool_history.txt").read_text())

    def after_setup(recs: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
        start = recs.index(next(r for r in recs if r[:3] == ("internal", "create", "tank/vols")))
        return [(*r[:3], "N", mask(r[4])) if r[0] == "internal" else r
                for r in recs[start:]]

    assert after_setup(mine) == after_setup(real)
    # the pool's creation records head both histories: the same pool and feature records,
    # then the root's -O properties and the zpool create command
    assert mine[:46] == [r[:4] + (r[4].replace(_uts(real), _uts(mine)),) for r in real[:46]]
    assert real[0][4].startswith("pool version 5000; software version ")
    assert [r[1:3] for r in mine[46:49]] == [("set", "tank")] * 3
    assert mine[49][0] == "command" and mine[49][1].startswith("zpool create -o ashift=12 ")
    # without -i only the commands, without -l no [user ...] / [on ...]
    plain = ok(t, "zpool", "history", "tank").splitlines()
    commands = [r[1] for r in mine if r[0] == "command"]
    assert plain[0] == "History for 'tank':" and plain[-1] == ""
    assert [line.split(" ", 1)[1] for line in plain[1:-1]] == commands
    short = ok(t, "zpool", "history", "-i", "tank").splitlines()
    assert any(re.search(r" \[txg:[0-9]+\] create tank/vols/archive \([0-9]+\)  $", line)
               for line in short)
    assert "" in short[1:-1]  # an ioctl record ends with an empty line without -l


def _uts(recs: list[tuple[str, ...]]) -> str:
    return recs[0][4].split("; software version ", 1)[1]


def test_clear_empties_the_queue_and_eids_go_on() -> None:
    t = sim(10)
    ok(t, "zfs", "create", "tank/x")
    last = parse_events(ok(t, "zpool", "events", "-H", "-v"))[-1]["eid"]
    n = len(parse_events(ok(t, "zpool", "events", "-H", "-v")))
    assert ok(t, "zpool", "events", "-c") == f"cleared {n} events\n"
    assert ok(t, "zpool", "events", "-H", "-v") == ""
    assert ok(t, "zpool", "events", "-c") == "cleared 0 events\n"
    ok(t, "zfs", "snapshot", "tank/x@s")
    assert [e["eid"] for e in parse_events(ok(t, "zpool", "events", "-H", "-v"))] == [last + 1]
    r = t.run(["zpool", "events", "-c", "-v"], check=False)
    assert r.exit_status == 2 and r.stderr.startswith("invalid options combined with -c\n")


def follow(t: SimTransport, *extra: str) -> tuple[list[tuple[float, str]], threading.Thread,
                                                  list[BaseException]]:
    """Read `zpool events -f -H -v` of `t` in a thread, time-stamping the lines."""
    got: list[tuple[float, str]] = []
    errors: list[BaseException] = []
    stream = t.lines(["zpool", "events", "-f", "-H", "-v", *extra], timeout=30)

    def read() -> None:
        try:
            for line in stream:
                got.append((time.monotonic(), line))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    th = threading.Thread(target=read, daemon=True)
    th.start()
    return got, th, errors


def test_follow_gets_events_posted_by_another_transport(tmp_path: Path) -> None:
    writer = sim(20, state_dir=tmp_path)
    reader = sim(20, state_dir=tmp_path)
    got, th, errors = follow(reader)
    wait_for(lambda: sum(line.startswith("        eid = ") for _, line in got) == 5,
             "the 5 queued events")
    ok(writer, "zfs", "create", "tank/new")
    wait_for(lambda: any('history_dsname = "tank/new"' in line for _, line in got),
             "the event of tank/new")
    # another process, through the state directory
    code = ("from pathlib import Path; from xfleet.fleet.inventory import Host; "
            "from xfleet.sim import SimTransport; "
            "h = Host(name='n1', kind='sim', pools=('tank',), sim={'seed': 1, 'volumes': 20}); "
            f"SimTransport(h, state_dir=Path({str(tmp_path)!r})).run(['zfs', 'snapshot', "
            "'tank/new@from-elsewhere'])")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    wait_for(lambda: sum(line == "" for _, line in got) == 7, "7 events")
    events = parse_events("".join(line + "\n" for _, line in got))
    assert [e["eid"] for e in events] == list(range(1, 8))
    assert what(events[-2:]) == [("create", "tank/new", " "),
                                 ("snapshot", "tank/new@from-elsewhere", " ")]
    assert not errors and th.is_alive()
    writer.reboot()  # the node goes down: the stream ends like a dropped connection
    th.join(PATIENCE)
    assert not th.is_alive() and isinstance(errors[0], TransportError)
    assert "connection lost" in str(errors[0])


def test_follow_says_dropped_when_its_last_event_left_the_queue() -> None:
    t = sim(10, zevent_len_max=8)
    got, th, errors = follow(t, "tank")
    wait_for(lambda: sum(line.startswith("        eid = ") for _, line in got) == 5,
             "the 5 queued events")
    ok(t, "zfs", "create", "tank/a")
    ok(t, "zpool", "events", "-c")
    ok(t, "zfs", "create", "tank/b")
    wait_for(lambda: any('"tank/b"' in line for _, line in got), "the event of tank/b")
    lines = [line for _, line in got]
    assert lines.count("dropped 1 events") == 1
    assert lines.index("dropped 1 events") < next(i for i, x in enumerate(lines) if '"tank/b"' in x)
    # a burst larger than the queue: the reader misses the oldest of it, and is told so
    ok(t, "zfs", "snapshot", "tank/b@s")
    wait_for(lambda: any('"tank/b@s"' in line for _, line in got), "the event of tank/b@s")
    ok(t, "zfs", "create", "-p", "tank/c/d/e/f/g/h/i/j/k")  # 9 events at once
    wait_for(lambda: any('"tank/c/d/e/f/g/h/i/j/k"' in line for _, line in got[-17:])
             and got[-1][1] == "", "the burst's last event, whole")
    lines = [line for _, line in got]
    assert lines.count("dropped 1 events") == 2
    after = len(lines) - lines[::-1].index("dropped 1 events")
    tail = parse_events("".join(x + "\n" for x in lines[after:]))
    assert [e["fields"]["history_dsname"] for e in tail] == \
        ["tank/c/d/e/f/g/h/i/j/k"[:n] for n in range(8, 23, 2)]
    assert not errors and th.is_alive()
    t.close()  # like closing the SSH connection under a running command
    th.join(PATIENCE)
    assert not th.is_alive() and isinstance(errors[0], TransportError)


def test_closing_a_follow_stream_stops_it() -> None:
    t = sim(10)
    stream = t.lines(["zpool", "events", "-f", "-H"])
    first = next(stream)
    assert HEADER.match(first)
    finishes(stream.close, "close() of a follow stream with no new events")
    with pytest.raises(StopIteration):
        next(stream)
    for _ in range(3):  # the transport is still usable, the queue unchanged
        assert len(ok(t, "zpool", "events", "-H").splitlines()) == 5
    quiet = t.lines(["zpool", "events", "-f", "-H", "-v"], timeout=0.3)
    with pytest.raises(CommandTimeout, match="no output from zpool for 0.3s"):
        for _ in quiet:
            pass


def test_pool_filter_and_errors_look_like_zpool() -> None:
    t = sim(10, pools=("tank", "fast"))
    ok(t, "zfs", "create", "fast/x")
    only = parse_events(ok(t, "zpool", "events", "-H", "-v", "fast"))
    assert {e["fields"]["pool"] for e in only} == {"fast"} and len(only) == 6
    r = t.run(["zpool", "history", "nopool"], check=False)
    assert (r.exit_status, r.stderr) == (1, "cannot open 'nopool': no such pool\n")
    r = t.run(["zpool", "events", "a", "b"], check=False)
    assert r.exit_status == 2 and r.stderr.startswith("too many arguments\nusage:\n")
    both = ok(t, "zpool", "history")
    assert both.startswith("History for 'fast':\n") and "\n\nHistory for 'tank':\n" in both
