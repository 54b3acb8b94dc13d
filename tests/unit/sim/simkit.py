"""Helpers of the simulator's tests: a simulated node, its listings parsed with xfleet's real
parsers, and the parsers of `zpool events -H -v` and `zpool history -il` output that check every
line's format on the way (zpool_do_events_short / zpool_do_events_nvprint,
print_history_records)."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from conftest import FIXTURES

from xfleet.core.zfs import DatasetRecord, parse_datasets, zfs_list
from xfleet.remote.host import Host
from xfleet.sim import SimTransport

TENANT = "xfleet:tenant"
RATIO = re.compile(r"^[0-9]+\.[0-9]{2}$")
REAL = FIXTURES / "real"  # real OpenZFS 2.3 output captured in the lab (see its README)
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

def sim(volumes: int = 300, seed: int = 1, *, node: str = "n1", pools: tuple[str, ...] = ("tank",),
        state_dir: Path | None = None, **extra: Any) -> SimTransport:
    host = Host(name=node, kind="sim", pools=pools, sim={"seed": seed, "volumes": volumes, **extra})
    return SimTransport(host, state_dir=state_dir)


def listing(t: SimTransport, roots: tuple[str, ...] = ()) -> list[str]:
    return list(t.lines(zfs_list(roots or t.base.pools, user_properties=(TENANT,))))


def records(t: SimTransport, roots: tuple[str, ...] = ()) -> list[DatasetRecord]:
    return list(parse_datasets(listing(t, roots), user_properties=(TENANT,)))


def by_name(t: SimTransport, roots: tuple[str, ...] = ()) -> dict[str, DatasetRecord]:
    return {r.name: r for r in records(t, roots)}


def run(t: SimTransport, *argv: str) -> tuple[int, str, str]:
    r = t.run(list(argv), check=False)
    return r.exit_status, r.stdout, r.stderr


def ok(t: SimTransport, *argv: str) -> str:
    code, out, err = run(t, *argv)
    assert code == 0, f"{argv}: {code} {err}"
    return out


def strcmp_key(name: str, txg: int) -> tuple[bytes, int, int]:
    ds, at, _ = name.partition("@")
    return (ds.encode(), 1 if at else 0, txg if at else 0)


def a_volume_with_snapshots(recs: dict[str, DatasetRecord], *, cloned: bool | None = None) -> str:
    """A non-clone volume that has snapshots (and whose snapshots do / do not have clones)."""
    clones = Counter(r.origin for r in recs.values() if r.origin)
    for name, r in recs.items():
        if r.type != "volume" or r.origin:
            continue
        snaps = [s for s in recs if s.startswith(name + "@")]
        if not snaps:
            continue
        has = any(clones[s] for s in snaps)
        if cloned is None or has == cloned:
            return name
    raise AssertionError("no such volume in the sim fleet")


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
            while lines[i].startswith("        ") or lines[i] == "    output:":
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


def replayed_scenario() -> tuple[SimTransport, dict[str, Any]]:
    """The lab scenario played on an empty simulated pool (writes cannot be replayed)."""
    assert (REAL / "scenario.json").is_file(), "real fixtures missing: python -m tools.capture"
    scenario = json.loads((REAL / "scenario.json").read_text())
    t = sim(0)
    ok(t, "zfs", "inherit", "compression", "tank")  # the lab pool keeps the default: on
    for step in scenario["steps"]:
        for argv in step.get("argv") or []:
            ok(t, *argv)
    return t, scenario


def replayed_feed() -> tuple[SimTransport, dict[str, Any]]:
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
