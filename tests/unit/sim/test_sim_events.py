"""The simulator as a ZFS change feed: `zpool events`, `zpool history`, reboots, and the
zfs list behaviour incremental sync relies on, checked against real OpenZFS 2.3 captures."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, PATIENCE, finishes, wait_for

from xfleet.core.errors import CommandTimeout, TransportError, UsageError
from xfleet.remote.host import Host
from xfleet.sim import SimTransport

REAL = FIXTURES / "real"
HISTORY_EVENT = "sysevent.fs.zfs.history_event"

# line formats of `zpool events -H -v` (zpool_do_events_short / zpool_do_events_nvprint)
HEADER = re.compile(r"^[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}"
                    r"\t[a-z_.]+$")
FIELD = re.compile(r'^        [a-z_]+ = (0x[0-9a-f]+|"[^"]*")$')
TIME = re.compile(r"^        time = 0x[0-9a-f]+ 0x[0-9a-f]+ $")  # note the trailing space
# line formats of `zpool history -il`
INTERNAL = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\.[0-9]{2}:[0-9]{2}:[0-9]{2} \[txg:[0-9]+\] "
                      r"(?P<op>[a-z]+)(?: (?P<ds>.+?) \((?P<dsid>[0-9]+)\))? (?P<str>.*) "
                      r"\[on (?P<host>[^]]+)\]$")
COMMAND = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\.[0-9]{2}:[0-9]{2}:[0-9]{2} (?P<cmd>z.+) "
                     r"\[user 0 \(root\) on [^:\]]+:linux\]$")
IOCTL = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\.[0-9]{2}:[0-9]{2}:[0-9]{2} \([0-9]+ms\) "
                   r"ioctl [a-z_]+$")


def sim(volumes: int = 50, *, node: str = "n1", state_dir: Path | None = None,
        pools: tuple[str, ...] = ("tank",), **extra: Any) -> SimTransport:
    host = Host(name=node, kind="sim", pools=pools, sim={"seed": 1, "volumes": volumes, **extra})
    return SimTransport(host, state_dir=state_dir)


def ok(t: SimTransport, *argv: str) -> str:
    r = t.run(list(argv), check=False)
    assert r.exit_status == 0, f"{argv}: {r.exit_status} {r.stderr}"
    return r.stdout


def parse_events(text: str) -> list[dict[str, Any]]:
    """Blocks of `zpool events -H -v`, checking every line's format on the way."""
    events: list[dict[str, Any]] = []
    lines = text.split("\n")
    assert lines[-1] == "", "output ends with a newline"
    cur: dict[str, Any] | None = None
    for line in lines[:-1]:
        if cur is None:
            assert HEADER.match(line), line
            cur = {"header": line, "class": line.split("\t")[1], "keys": [], "fields": {}}
        elif line == "":
            assert cur["keys"][-2:] == ["time", "eid"], cur["keys"]
            events.append(cur)
            cur = None
        else:
            assert TIME.match(line) if line.lstrip().startswith("time =") else FIELD.match(line), \
                repr(line)
            key, value = line.strip().split(" = ", 1)
            cur["keys"].append(key)
            cur["fields"][key] = value.strip('"') if value.startswith('"') else value
    assert cur is None, "every event ends with a blank line"
    for ev in events:
        f = ev["fields"]
        sec, nsec = (int(x, 16) for x in f["time"].split())
        assert time.strftime("%b %e %Y %H:%M:%S", time.localtime(sec)) + f".{nsec:09d}" == \
            ev["header"].split("\t")[0]
        assert f["class"] == ev["class"]
        ev["eid"] = int(f["eid"], 16)
    return events


def history_records(text: str) -> list[tuple[str, ...]]:
    """(kind, ...) of every record of `zpool history -il`, checking the line formats."""
    lines = text.split("\n")
    assert lines[0].startswith("History for '") and lines[-2:] == ["", ""]
    out: list[tuple[str, ...]] = []
    i = 1
    while i < len(lines) - 2:
        line = lines[i]
        m = INTERNAL.match(line)
        if m:
            out.append(("internal", m["op"], m["ds"] or "", m["dsid"] or "", m["str"]))
        elif (c := COMMAND.match(line)):
            out.append(("command", c["cmd"]))
        else:
            assert IOCTL.match(line), repr(line)
            assert lines[i + 1] == "    input:"
            body = []
            i += 2
            while lines[i].startswith("        "):
                body.append(lines[i])
                i += 1
            assert re.match(r"^ \[user 0 \(root\) on [^:\]]+:linux\]$", lines[i]), lines[i]
            out.append(("ioctl", line.rsplit(" ", 1)[1], *body))
        i += 1
    return out


def history_events(t: SimTransport) -> list[dict[str, Any]]:
    return [e for e in parse_events(ok(t, "zpool", "events", "-H", "-v"))
            if e["class"] == HISTORY_EVENT]


def what(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["fields"]["history_internal_name"], e["fields"].get("history_dsname", ""),
             e["fields"]["history_internal_str"]) for e in events]


# ---------------------------------------------------------------------------------------------
# parity with the real captures (tests/fixtures/real, see its README)


def replayed_scenario() -> tuple[SimTransport, dict[str, Any]]:
    """The lab scenario on an empty sim node named like the lab node, its queue cleared first
    as the capture did after creating the pool (writes cannot be replayed)."""
    scenario = json.loads((REAL / "scenario.json").read_text())
    t = sim(0, node="lab1")
    ok(t, "zfs", "inherit", "compression", "tank")  # the lab pool keeps the default: on
    ok(t, "zpool", "events", "-c")
    for step in scenario["steps"]:
        for argv in step.get("argv") or []:
            ok(t, *argv)
    return t, scenario


def mask(text: str) -> str:
    """What differs between two runs of the same commands: object numbers and txgs."""
    text = re.sub(r"\((?:[0-9]+)\)$", "(N)", text)
    return re.sub(r"(creation_txg|target_snap)=[0-9]+", r"\1=N", text)


def test_replayed_scenario_posts_the_events_real_zfs_posts() -> None:
    t, _ = replayed_scenario()
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
        t, scenario = replayed_scenario()
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
    t, _ = replayed_scenario()
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


# ---------------------------------------------------------------------------------------------
# every mutation logs what OpenZFS logs


def test_mutations_log_like_openzfs() -> None:
    t = sim(0)
    ok(t, "zfs", "create", "-p", "-o", "xfleet:tenant=a", "-o", "quota=1G",
       "-o", "atime=off", "tank/a/b")
    ok(t, "zfs", "create", "-V", "64M", "-o", "compression=zstd-3", "tank/a/thick")
    ok(t, "zfs", "snapshot", "tank/a/thick@s1", "tank/a/b@s1")
    ok(t, "zfs", "snapshot", "-o", "xfleet:note=x", "tank/a/thick@s2")
    ok(t, "zfs", "clone", "tank/a/thick@s1", "tank/a/c")
    ok(t, "zfs", "set", "sync=disabled", "xfleet:tenant=b", "tank/a/b", "tank/a/c")
    ok(t, "zfs", "set", "volsize=128M", "tank/a/thick")  # thick: libzfs resizes refreservation
    ok(t, "zfs", "set", "volsize=128M", "tank/a/c")  # sparse: nothing is logged
    ok(t, "zfs", "inherit", "xfleet:tenant", "tank/a/c")
    ok(t, "zfs", "rename", "tank/a/thick@s2", "tank/a/thick@s3")
    ok(t, "zfs", "rename", "tank/a/b", "tank/a/b2")
    ok(t, "zfs", "bookmark", "tank/a/thick@s1", "tank/a/thick#bm")
    ok(t, "zfs", "destroy", "tank/a/thick#bm")
    ok(t, "zfs", "promote", "tank/a/c")
    ok(t, "zfs", "destroy", "-r", "tank/a/thick")
    ok(t, "zfs", "destroy", "-R", "tank/a/c")
    got = history_events(t)
    assert [(n, d, s) for n, d, s in what(got) if n not in ("open", "import")] == [
        ("create", "tank/a", " "),
        ("create", "tank/a/b", " "),
        ("set", "tank/a/b", "quota=1073741824"),
        ("set", "tank/a/b", "xfleet:tenant=a"),
        ("set", "tank/a/b", "atime=0"),
        ("create", "tank/a/thick", " "),
        ("set", "tank/a/thick", "refreservation=70254592"),
        ("set", "tank/a/thick", "compression=400"),
        ("snapshot", "tank/a/thick@s1", " "),
        ("snapshot", "tank/a/b@s1", " "),
        ("snapshot", "tank/a/thick@s2", " "),
        ("set", "tank/a/thick@s2", "xfleet:note=x"),
        ("clone", "tank/a/c", got[next(i for i, e in enumerate(got) if e["fields"].get(
            "history_internal_name") == "clone")]["fields"]["history_internal_str"]),
        ("set", "tank/a/b", "sync=2"),
        ("set", "tank/a/b", "xfleet:tenant=b"),
        ("set", "tank/a/c", "sync=2"),
        ("set", "tank/a/c", "xfleet:tenant=b"),
        ("set", "tank/a/thick", "refreservation=138412032"),
        ("inherit", "tank/a/c", "xfleet:tenant="),
        ("rename", "tank/a/thick@s2", "-> @s3"),
        ("rename", "tank/a/b", "-> tank/a/b2"),
        ("bookmark", "tank/a/thick", got[next(i for i, e in enumerate(got) if e["fields"].get(
            "history_internal_name") == "bookmark")]["fields"]["history_internal_str"]),
        ("promote", "tank/a/c", " "),
        # destroy -r of the promoted-away origin: its snapshot, then itself (thick: first
        # its refreservation), each in its own txg
        ("destroy", "tank/a/thick@s3", " "),
        ("set", "tank/a/thick", "refreservation=0"),
        ("destroy", "tank/a/thick", f"(bptree, mintxg={createtxg(got, 'tank/a/thick@s1')})"),
        ("destroy", "tank/a/c@s1", " "),
        ("destroy", "tank/a/c", "(bptree, mintxg=1)"),
    ]
    by_txg: dict[int, list[str]] = {}
    for e in got:
        by_txg.setdefault(int(e["fields"]["history_txg"], 16), []).append(
            e["fields"]["history_internal_name"])
    assert ["set", "destroy"] in by_txg.values()  # a thick volume's last txg
    assert ["snapshot", "snapshot"] in by_txg.values()  # one snapshot command, one txg
    assert ["destroy", "destroy"] not in by_txg.values()
    hist = history_records(ok(t, "zpool", "history", "-il", "tank"))
    ioctls = [r[1] for r in hist if r[0] == "ioctl"]
    assert ioctls == ["create", "create", "create", "snapshot", "snapshot", "clone", "bookmark",
                      "destroy_bookmarks", "destroy_snaps", "destroy_snaps"]
    commands = [r[1] for r in hist if r[0] == "command"]
    assert commands[-3:] == ["zfs promote tank/a/c", "zfs destroy -r tank/a/thick",
                             "zfs destroy -R tank/a/c"]
    assert "zfs set volsize=128M tank/a/c" in commands  # logged, though no internal record


def createtxg(events: list[dict[str, Any]], name: str) -> int:
    return next(int(e["fields"]["history_txg"], 16) for e in events
                if e["fields"].get("history_dsname") == name
                and e["fields"]["history_internal_name"] in ("snapshot", "create", "clone"))


def test_failed_and_dry_run_commands_log_nothing_and_partial_ones_no_command() -> None:
    t = sim(20)
    before = ok(t, "zpool", "history", "-il", "tank")
    events = history_events(t)
    for argv in (["zfs", "create", "tank/nope/x"], ["zfs", "destroy", "-n", "-r", "tank"],
                 ["zfs", "snapshot", "tank/missing@s"], ["zfs", "rename", "tank", "tank2"]):
        assert t.run(argv, check=False).exit_status != 0 or "-n" in argv
    assert ok(t, "zpool", "history", "-il", "tank") == before
    assert history_events(t) == events
    r = t.run(["zfs", "set", "xfleet:x=1", "tank/missing", "tank"], check=False)
    assert r.exit_status == 1
    after = history_records(ok(t, "zpool", "history", "-il", "tank"))
    assert after[-1] == ("internal", "set", "tank", after[-1][3], "xfleet:x=1")
    assert what(history_events(t))[-1] == ("set", "tank", "xfleet:x=1")


def test_destroy_recursive_logs_every_dataset_and_the_queue_keeps_the_newest() -> None:
    t = sim(60, zevent_len_max=20)
    tenant = next(line.split("\t")[0] for line in ok(
        t, "zfs", "list", "-Hp", "-o", "name", "-d", "1", "tank").splitlines()[1:])
    gone = ok(t, "zfs", "list", "-Hp", "-o", "name,type", "-t", "filesystem,volume,snapshot",
              "-r", tenant).splitlines()
    ok(t, "zfs", "destroy", "-R", tenant)
    hist = [r for r in history_records(ok(t, "zpool", "history", "-il", "tank"))
            if r[0] == "internal" and r[1] == "destroy"]
    assert sorted(r[2] for r in hist) == sorted(line.split("\t")[0] for line in gone)
    events = parse_events(ok(t, "zpool", "events", "-H", "-v"))
    assert len(events) == 20  # only the newest stay
    assert [e["fields"]["history_dsname"] for e in events] == [r[2] for r in hist[-20:]]


# ---------------------------------------------------------------------------------------------
# the kernel's event queue: bound, clear, reboot, follow


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


def test_reboot_restarts_eids_changes_load_guids_and_logs_the_import(tmp_path: Path) -> None:
    t = sim(30, state_dir=tmp_path, pools=("tank", "fast"))
    other = sim(30, state_dir=tmp_path, pools=("tank", "fast"))
    argv = ["zpool", "list", "-Hp", "-o", "name,guid,load_guid"]
    pools = ok(t, *argv)
    listing = ok(t, "zfs", "list", "-Hp", "-t", "all", "-o", "name,guid,createtxg")
    ok(t, "zfs", "create", "tank/x")
    txg = max(int(e["fields"]["history_txg"], 16) for e in history_events(t))
    other.reboot()
    after = ok(t, *argv)
    assert [r.split("\t")[:2] for r in after.splitlines()] == \
        [r.split("\t")[:2] for r in pools.splitlines()]
    assert all(a.split("\t")[2] != b.split("\t")[2]
               for a, b in zip(after.splitlines(), pools.splitlines(), strict=True))
    events = parse_events(ok(t, "zpool", "events", "-H", "-v"))
    assert [e["eid"] for e in events] == list(range(1, 11))
    names = [e["class"].rsplit(".", 1)[1] + (":" + e["fields"]["history_internal_name"]
                                              if e["class"] == HISTORY_EVENT else "")
             for e in events]
    one = ["history_event:open", "config_sync", "pool_import", "history_event:import",
           "config_sync"]
    assert names == one + one
    assert [e["fields"]["pool"] for e in events] == ["fast"] * 5 + ["tank"] * 5
    opened = events[5]["fields"]
    assert int(opened["history_txg"], 16) > txg
    assert opened["history_internal_str"].startswith("pool version 5000; software version ")
    assert "history_dsname" not in opened and events[6]["keys"] == [
        "version", "class", "pool", "pool_guid", "pool_state", "pool_context", "time", "eid"]
    hist = history_records(ok(t, "zpool", "history", "-il", "tank"))
    assert [r[:2] for r in hist[-3:]] == [("internal", "open"), ("internal", "import"),
                                          ("command", "zpool import -c /etc/zfs/zpool.cache "
                                           "-aN")]
    assert ok(t, "zfs", "list", "-Hp", "-t", "all", "-o", "name,guid,createtxg") != listing
    ok(t, "zfs", "destroy", "tank/x")
    assert ok(t, "zfs", "list", "-Hp", "-t", "all", "-o", "name,guid,createtxg") == listing
    assert parse_events(ok(t, "zpool", "events", "-H", "-v"))[-1]["eid"] == 11


def test_a_new_node_has_booted_once() -> None:
    t = sim(10)
    events = parse_events(ok(t, "zpool", "events", "-H", "-v"))
    assert [e["eid"] for e in events] == [1, 2, 3, 4, 5]
    assert events[2]["class"] == "sysevent.fs.zfs.pool_import"
    assert ok(sim(10), "zpool", "list", "-Hp", "-o", "load_guid") == \
        ok(t, "zpool", "list", "-Hp", "-o", "load_guid")


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


# ---------------------------------------------------------------------------------------------
# state, bounds, scale


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


def test_zfs_list_of_names_some_missing_lists_the_others_and_fails() -> None:
    t = sim(30)
    ok(t, "zfs", "create", "-V", "1G", "tank/v")
    ok(t, "zfs", "snapshot", "tank/v@s")
    for recursive in ([], ["-r"]):
        r = t.run(["zfs", "list", "-Hp", "-o", "name,guid,createtxg", "-t", "all", *recursive,
                   "tank/v", "tank/gone", "tank/v@s", "tank/gone@s"], check=False)
        assert r.exit_status == 1
        assert [line.split("\t")[0] for line in r.stdout.splitlines()] == ["tank/v", "tank/v@s"]
        assert r.stderr == ("cannot open 'tank/gone': dataset does not exist\n"
                            "cannot open 'tank/gone@s': dataset does not exist\n")
    real = (REAL / "zfs_errors.txt").read_text()
    assert "cannot open 'tank/vols/missing': dataset does not exist\n" in real


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
