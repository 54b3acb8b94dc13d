"""Capture real OpenZFS output from a running lab node into tests/fixtures/real/.

    python -m tools.capture [--node lab1] [--out tests/fixtures/real] [--state-dir DIR]
    python -m tools.capture --ops [--node lab1] [--out tests/fixtures/real]
    python -m tools.capture --hostile [--node lab1] [--out tests/fixtures/real]
    python -m tools.capture --health [--node lab1] [--out tests/fixtures/real]

It recreates pool `tank` on the node (destroying what was there), plays the scenario of
`tools.scenario.default_scenario`, then saves the output of the exact commands xfleet runs
(built with xfleet.core.zfs) plus error messages, and `scenario.json` describing what was done.

With `--ops` it instead plays `ops_scenario` (every kind of change xfleet must follow: create,
snapshot, set/inherit, rename, clone, promote, hold, rollback, destroy, send/receive, an
interrupted resumable receive, ...) on a fresh pool with an empty event queue, and saves the
change feed it produced: `zpool_events_ops.txt`, `zpool_history_ops.txt` and `ops.json` (each
op's argv with the eids and txgs of its events). Only those three files are written.

With `--health` it instead records pool health (`zpool status -j --json-int` and the text
`zpool status -p`): `tank` after a finished scrub, and extra pools made of files on the node
(a DEGRADED mirror, a resilver in progress, checksum errors a scrub repaired, data errors, a
paused scrub, vdev paths with a space, a tab, quotes, UTF-8, a line break and a byte that is
not UTF-8), then destroys the extra pools. Only HEALTH_FILES are written.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from tools import hostile
from tools import scenario as sc
from xfleet.core import zfs
from xfleet.lab import ssh
from xfleet.lab.errors import LabError
from xfleet.lab.paths import Progress, emit
from xfleet.lab.pool import recreate_pool
from xfleet.lab.state import POOL, LabState

DEFAULT_OUT = Path("tests/fixtures/real")
# Prints the eid of the newest queued event (nothing when the queue is empty).
_LAST_EID_SH = "zpool events -H -v | awk '$1 == \"eid\" { e = $3 } END { if (e != \"\") print e }'"


class Run(Protocol):
    def __call__(self, argv: Sequence[str], check: bool = True) -> ssh.Result: ...


def _session(node: str, out: Path, state_dir: Path | None) -> tuple[LabState, Run]:
    """The lab, and `run`: an argv on `node` over SSH (a failure raises unless `check` is
    false); `out` is made."""
    lab = LabState.load(state_dir)
    ep = lab.endpoint(node)
    out.mkdir(parents=True, exist_ok=True)

    def run(argv: Sequence[str], check: bool = True) -> ssh.Result:
        return ssh.run(ep, argv, check=check, timeout=900)

    return lab, run


def _versions(run: Run) -> tuple[list[str], str]:
    """`zfs version` (its lines) and `uname -r` of the node."""
    return (run(["zfs", "version"]).stdout.strip().splitlines(),
            run(["uname", "-r"]).stdout.strip())


def capture(
    node: str = "lab1",
    out: Path = DEFAULT_OUT,
    *,
    state_dir: Path | None = None,
    progress: Progress = None,
) -> dict[str, object]:
    """Run the scenario on `node` and write the fixtures to `out`. Returns scenario.json's data."""
    lab, run = _session(node, out, state_dir)
    t0 = time.monotonic()

    emit(progress, f"{node}: recreating pool {POOL}")
    recreate_pool(lab, node)
    version, kernel = _versions(run)
    emit(progress, f"{node}: preparing the text source")
    run(sc.prepare_argv())
    steps = sc.default_scenario(POOL)
    played: list[dict[str, object]] = []
    for i, step in enumerate(steps, 1):
        argvs = sc.step_argv(step)
        for argv in argvs:
            run(argv)
        played.append({**step, "argv": argvs if step["op"] != "write" else None})
        emit(progress, f"{node}: step {i}/{len(steps)} {step['op']} {step.get('name', '')}")
    run(["sync"])
    # Let the txgs settle so space accounting is final (written/used lag by one txg).
    run(["zpool", "sync", POOL])

    files: dict[str, list[str]] = {
        "zfs_list_all.txt": zfs.zfs_list(user_properties=[sc.TENANT]),
        "zfs_list_fast.txt": zfs.zfs_list(columns=zfs.FAST_COLUMNS),
        "zpool_list.txt": zfs.zpool_list(),
        "zpool_status.txt": zfs.zpool_status(),
        "zpool_history.txt": ["zpool", "history", "-il", POOL],
        "zpool_events.txt": ["zpool", "events", "-H", "-v"],
    }
    volume, snapshot, filesystem = (
        f"{POOL}/vols/pg-main",
        f"{POOL}/vols/pg-thin@daily.1",
        f"{POOL}/vols",
    )
    files["zfs_get_all.txt"] = zfs.zfs_get([volume, snapshot, filesystem])
    commands: dict[str, list[str]] = {}
    for fname, argv in files.items():
        res = run(argv)
        (out / fname).write_text(res.stdout)
        commands[fname] = argv
        emit(progress, f"{node}: {fname} ({len(res.stdout.splitlines())} lines)")

    blocks = []
    for argv in sc.failing_commands(POOL):
        res = run(argv, check=False)
        if res.ok:
            raise LabError(f"{node}: expected `{shlex.join(argv)}` to fail, but it succeeded")
        blocks.append(f"### {shlex.join(argv)}\nexit={res.exit_status}\n{res.stderr}")
    (out / "zfs_errors.txt").write_text("".join(b if b.endswith("\n") else b + "\n"
                                                for b in blocks))

    names = [line.split("\t")[0] for line in (out / "zfs_list_fast.txt").read_text().splitlines()]
    data: dict[str, object] = {
        "description": "Scenario played on a fresh pool by `python -m tools.capture`; "
        "steps are replayable (op + arguments). 'write' steps copy size_mb MiB from source "
        "(urandom | zero | text: log-like lines, see tools/scenario.py) to the zvol at "
        "offset_mb MiB.",
        "openzfs": version,
        "kernel": kernel,
        "captured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pool": {
            "name": POOL,
            "create": ["zpool", "create", "-f", "-o", "ashift=12", "-o", "cachefile=none",
                       "-O", "canmount=off", "-O", "mountpoint=none", POOL, "<8 GiB disk>"],
        },
        "user_properties": [sc.TENANT],
        "text_source_mb": sc.TEXT_MB,
        "steps": played,
        "commands": commands,
        "failing_commands": [list(a) for a in sc.failing_commands(POOL)],
        "datasets": names,
    }
    (out / "scenario.json").write_text(json.dumps(data, indent=2) + "\n")
    _write_readme(out, version, kernel)
    emit(progress, f"{node}: fixtures written to {out} in {time.monotonic() - t0:.0f}s")
    return data


Op = dict[str, Any]


def _op(kind: str, argv: list[str], note: str = "", *, fails: bool = False) -> Op:
    op: Op = {"op": kind, "argv": argv}
    if note:
        op["note"] = note
    if fails:
        op["fails"] = True
    return op


def _write_op(name: str, mb: int, at_mb: int = 0) -> Op:
    step = {"op": "write", "name": name, "source": "urandom", "size_mb": mb, "offset_mb": at_mb}
    return {**step, "argv": sc.step_argv(step)[0]}


def ops_scenario(pool: str = POOL) -> list[Op]:
    """The operations played by `capture_ops`, in order; each is one real command (`argv`).

    'write' ops copy size_mb MiB of /dev/urandom to the zvol at offset_mb MiB (a `dd`, see
    tools/scenario.py); they change space accounting only and log no history.
    Ops with `fails` must exit non-zero (the interrupted resumable receive).
    """
    a, a2, o = f"{pool}/app", f"{pool}/app2", f"{pool}/other"
    t = sc.TENANT
    trunc = 1_000_000  # bytes of the send stream let through to the interrupted receive
    return [
        _op("create_filesystem", ["zfs", "create", "-o", f"{t}=acme", a]),
        _op("create_filesystem", ["zfs", "create", f"{a}/data"]),
        _op("create_filesystem", ["zfs", "create", f"{a}/data/logs"]),
        _op("create_volume", ["zfs", "create", "-s", "-V", "64M", f"{a}/vol-thin"], "thin"),
        _op("create_volume", ["zfs", "create", "-V", "32M", f"{a}/vol-thick"], "thick"),
        _op("create_volume", ["zfs", "create", "-s", "-V", "64M", "-o", "compression=zstd",
                              "-o", f"{t}=globex", f"{a}/vol-comp"], "thin, with -o props"),
        _op("create_volume", ["zfs", "create", "-s", "-V", "32M", f"{a}/vol-tmp"]),
        _write_op(f"{a}/vol-thin", 4),
        _write_op(f"{a}/vol-comp", 8),
        _op("snapshot", ["zfs", "snapshot", f"{a}/vol-thin@s1"]),
        _op("snapshot", ["zfs", "snapshot", f"{a}/vol-thin@s2", f"{a}/vol-comp@s2",
                         f"{a}/vol-tmp@t1"], "several datasets in one command"),
        _write_op(f"{a}/vol-comp", 4, 16),
        _op("snapshot", ["zfs", "snapshot", "-r", f"{a}@r1"], "recursive"),
        _op("set", ["zfs", "set", "compression=lz4", a], "a filesystem with volume children"),
        _op("inherit", ["zfs", "inherit", "compression", f"{a}/vol-comp"]),
        _op("set", ["zfs", "set", f"{t}=initech", f"{a}/vol-thick"], "user property"),
        _op("inherit", ["zfs", "inherit", t, f"{a}/vol-thick"], "user property"),
        _op("set", ["zfs", "set", "volsize=128M", f"{a}/vol-thin"], "grow a thin volume"),
        _op("set", ["zfs", "set", "volsize=48M", f"{a}/vol-thick"], "grow a thick volume"),
        _op("rename", ["zfs", "rename", f"{a}/vol-thin@s1", f"{a}/vol-thin@s1-renamed"],
            "a snapshot"),
        _op("create_filesystem", ["zfs", "create", o]),
        _op("clone", ["zfs", "clone", f"{a}/vol-comp@r1", f"{o}/comp-clone"],
            "a clone outside the subtree renamed next"),
        _op("rename", ["zfs", "rename", a, a2],
            "a filesystem with child filesystems, volumes, snapshots, and a clone elsewhere "
            "whose origin is under it"),
        _op("clone", ["zfs", "clone", "-o", f"{t}=acme", f"{a2}/vol-thin@s2",
                      f"{a2}/vol-next"]),
        _write_op(f"{a2}/vol-next", 2),
        _op("bookmark", ["zfs", "bookmark", f"{a2}/vol-thin@s2", f"{a2}/vol-thin#b2"]),
        _op("promote", ["zfs", "promote", f"{a2}/vol-next"],
            "vol-thin@s1-renamed and @s2 move to vol-next; vol-thin becomes its clone"),
        _op("hold", ["zfs", "hold", "keep", f"{a2}/vol-thick@r1"]),
        _op("release", ["zfs", "release", "keep", f"{a2}/vol-thick@r1"]),
        _op("snapshot", ["zfs", "snapshot", f"{a2}/vol-thick@pre"]),
        _write_op(f"{a2}/vol-thick", 2),
        _op("snapshot", ["zfs", "snapshot", f"{a2}/vol-thick@post"]),
        _op("rollback", ["zfs", "rollback", "-r", f"{a2}/vol-thick@pre"],
            "-r destroys the later snapshot @post"),
        _op("destroy", ["zfs", "destroy", f"{a2}/vol-thick@r1"], "a snapshot"),
        _op("destroy", ["zfs", "destroy", "-r", f"{a2}/vol-tmp"],
            "a volume with snapshots (@t1, @r1)"),
        _op("destroy", ["zfs", "destroy", "-r", f"{a2}/data"],
            "a filesystem with a child filesystem, and their snapshots @r1"),
        _op("create_volume", ["zfs", "create", "-V", "16M", f"{o}/thick2"], "thick"),
        _op("destroy", ["zfs", "destroy", f"{o}/thick2"], "a thick volume, no snapshots"),
        _op("receive", ["sh", "-c", f"zfs send {a2}/vol-comp@s2 | zfs receive {o}/rx"],
            "full stream into a new name"),
        _op("receive", ["sh", "-c", f"zfs send -i @s2 {a2}/vol-comp@r1 | zfs receive {o}/rx"],
            "incremental stream into the received volume"),
        _op("receive", ["sh", "-c", f"zfs send {a2}/vol-comp@s2 | head -c {trunc} | "
                                    f"zfs receive -s {o}/rx2"],
            "full resumable receive, interrupted: leaves a receive_resume_token", fails=True),
        _op("receive_abort", ["zfs", "receive", "-A", f"{o}/rx2"]),
        _write_op(f"{a2}/vol-comp", 4, 32),
        _op("snapshot", ["zfs", "snapshot", f"{a2}/vol-comp@s3"]),
        _op("receive", ["sh", "-c", f"zfs send -i @r1 {a2}/vol-comp@s3 | head -c {trunc} | "
                                    f"zfs receive -s {o}/rx"],
            "incremental resumable receive, interrupted: leaves rx/%recv", fails=True),
        _op("receive", ["sh", "-c", f"zfs send -t $(zfs get -H -o value receive_resume_token "
                                    f"{o}/rx) | zfs receive -s {o}/rx"],
            "resume it with its token (completes @s3)"),
        _write_op(f"{a2}/vol-comp", 4, 40),
        _op("snapshot", ["zfs", "snapshot", f"{a2}/vol-comp@s4"]),
        _op("receive", ["sh", "-c", f"zfs send -i @s3 {a2}/vol-comp@s4 | head -c {trunc} | "
                                    f"zfs receive -s {o}/rx"],
            "incremental resumable receive, interrupted again", fails=True),
        _op("receive_abort", ["zfs", "receive", "-A", f"{o}/rx"],
            "abort the interrupted incremental receive (rx/%recv)"),
        _op("snapshot", ["zfs", "snapshot", "-o", f"{t}=backup", f"{a2}/vol-thick@tagged"],
            "with a user property"),
        _op("set", ["zfs", "set", "compression=gzip", f"{t}=ops", o], "two properties"),
        _op("inherit", ["zfs", "inherit", "-r", t, a2],
            "recursive; local values on app2, vol-comp and vol-next"),
        _op("rename", ["zfs", "rename", "-r", f"{a2}@r1", f"{a2}@r1-old"],
            "recursive snapshot rename; vol-comp@r1 is comp-clone's origin"),
        _op("rename", ["zfs", "rename", f"{o}/comp-clone", f"{a2}/comp-clone"],
            "a clone moved under another parent"),
        _op("create_filesystem", ["zfs", "create", "-p", f"{pool}/deep/a/b"],
            "-p creates the missing parents"),
        _op("destroy", ["zfs", "destroy", f"{a2}/vol-comp@s3%s4"], "a snapshot range"),
        _op("destroy", ["zfs", "destroy", "-R", f"{a2}/vol-comp@r1-old"],
            "-R: the snapshot and its clone comp-clone"),
        _op("destroy", ["zfs", "destroy", f"{a2}/vol-next#b2"],
            "a bookmark (it moved from vol-thin to vol-next with @s2 on promote)"),
        _op("rollback", ["zfs", "rollback", f"{a2}/vol-thick@tagged"],
            "to the latest snapshot, without -r"),
        _op("receive", ["sh", "-c", f"zfs send -R {a2}/vol-next@s2 | zfs receive {o}/rep"],
            "replication stream: temporary holds on the source snapshots"),
        _op("snapshot", ["zfs", "snapshot", f"{a2}/vol-comp@f1"]),
        _op("receive", ["sh", "-c", f"zfs send -i @s2 {a2}/vol-comp@f1 | "
                                    f"zfs receive -F {o}/rx"],
            "-F: rx is rolled back to @s2, its later snapshots @r1 and @s3 destroyed"),
        _op("scrub", ["zpool", "scrub", "-w", pool], "non-history events in the feed"),
    ]


def _event_fields(text: str) -> list[dict[str, str]]:
    """`zpool events -H -v` output as one dict per event (class, time, then its key = values).
    Minimal on purpose: the parser xfleet uses is xfleet.core.events."""
    events: list[dict[str, str]] = []
    cur: dict[str, str] | None = None
    for line in text.splitlines():
        if not line.strip():
            cur = None
        elif not line.startswith(" "):
            when, _, cls = line.partition("\t")
            cur = {"class": cls.strip(), "time": when.strip()}
            events.append(cur)
        elif cur is not None and " = " in line:
            key, _, value = line.strip().partition(" = ")
            cur[key] = value.strip('"')
    return events


def capture_ops(
    node: str = "lab1",
    out: Path = DEFAULT_OUT,
    *,
    state_dir: Path | None = None,
    progress: Progress = None,
) -> dict[str, object]:
    """Play `ops_scenario` on a fresh pool and write zpool_events_ops.txt,
    zpool_history_ops.txt and ops.json to `out`. Returns ops.json's data."""
    lab, run = _session(node, out, state_dir)
    t0 = time.monotonic()

    def last_eid() -> int:
        text = run(["sh", "-c", _LAST_EID_SH]).stdout.strip()
        return int(text, 0) if text else 0

    emit(progress, f"{node}: recreating pool {POOL}")
    recreate_pool(lab, node)
    version, kernel = _versions(run)
    load_guid = run(["zpool", "list", "-H", "-o", "load_guid", POOL]).stdout.strip()
    run(["zpool", "sync", POOL])
    run(["zpool", "events", "-c"])
    ops = ops_scenario(POOL)
    played: list[dict[str, Any]] = []
    before = last_eid()
    for i, op in enumerate(ops, 1):
        argv = op["argv"]
        res = run(argv, check=not op.get("fails"))
        if op.get("fails") and res.ok:
            raise LabError(f"{node}: expected `{shlex.join(argv)}` to fail, but it succeeded")
        after = last_eid()
        entry = {**op, "exit": res.exit_status}
        if op["op"] == "write":
            entry["argv"] = None  # a dd through the zvol's device: see ops_scenario
        if not res.ok:
            entry["stderr"] = res.stderr
        entry["last_eid"] = after
        played.append(entry)
        emit(progress, f"{node}: op {i}/{len(ops)} {op['op']} (last eid {after})")
    run(["zpool", "sync", POOL])

    files = {
        "zpool_events_ops.txt": ["zpool", "events", "-H", "-v"],
        "zpool_history_ops.txt": ["zpool", "history", "-il", POOL],
    }
    texts: dict[str, str] = {}
    for fname, argv in files.items():
        texts[fname] = run(argv).stdout
        (out / fname).write_text(texts[fname])
        emit(progress, f"{node}: {fname} ({len(texts[fname].splitlines())} lines)")

    events = _event_fields(texts["zpool_events_ops.txt"])
    if len(events) >= 512:
        raise LabError(f"{node}: {len(events)} events: the queue (512) may have overflowed")
    prev = before
    for entry in played:
        mine = [e for e in events if prev < int(e.get("eid", "0"), 0) <= entry["last_eid"]]
        entry["eids"] = [int(mine[0]["eid"], 0), int(mine[-1]["eid"], 0)] if mine else None
        entry["txgs"] = sorted({int(e["history_txg"], 0) for e in mine if "history_txg" in e})
        entry["events"] = [
            " ".join(x for x in (e.get("history_internal_name", e["class"]),
                                 e.get("history_dsname", "")) if x)
            for e in mine
        ]
        prev = entry.pop("last_eid")
    data: dict[str, object] = {
        "description": "Operations played on a fresh pool (event queue cleared first) by "
        "`python -m tools.capture --ops`, in order. eids: first and last eid of the "
        "events the op produced (null: none); txgs: their history_txg values; events: "
        "history_internal_name and history_dsname of each (or the class). 'write' ops "
        "copy size_mb MiB of /dev/urandom to the zvol at offset_mb MiB (no history).",
        "openzfs": version,
        "kernel": kernel,
        "captured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pool": {"name": POOL, "load_guid": load_guid},
        "last_eid_before_ops": before,  # 0: the queue was empty
        "commands": files,
        "ops": played,
    }
    (out / "ops.json").write_text(json.dumps(data, indent=2) + "\n")
    emit(progress, f"{node}: ops fixtures written to {out} in {time.monotonic() - t0:.0f}s")
    return data


_OPS_README = """
## The change feed (`--ops`)

`.venv/bin/python -m tools.capture --ops` writes three more files (and nothing else): on a
freshly created pool, with the event queue cleared (`zpool events -c`) just before, it plays
`tools.capture.ops_scenario` — every kind of change xfleet must follow, each one real
command: create (filesystems, thin/thick volumes, `-o` properties, `-p`), writes, snapshot
(one, several in one command, `-r`, `-o`), set/inherit (`-r`, user property, volsize),
rename (snapshot, `-r` snapshots, a filesystem with children and an outside clone of one of its
snapshots, a move), clone, bookmark, promote, hold/release, rollback (`-r` and not), destroy
(snapshot, range `a%b`, `-r`, `-R`, thick volume, bookmark), full, incremental, `-R` and `-F`
`send | receive`, interrupted resumable receives (`receive -s`, resumed with `send -t`,
aborted with `receive -A`), scrub.

| file | command |
| --- | --- |
| `zpool_events_ops.txt` | `zpool events -H -v` right after the ops (just their events, < 512) |
| `zpool_history_ops.txt` | `zpool history -il tank` (whole history, `zpool create` on) |
| `ops.json` | the ops in order, each with the eids and txgs it produced (below) |

In `ops.json` each op has `argv` (null for the `dd` writes), `exit`, `eids` (first and
last eid of its events, null if none), `txgs` (their `history_txg`) and `events` (internal
name and dsname of each). The eids do not start at 1: `zpool events -c` empties the queue
but the numbering goes on.
"""


def _write_readme(out: Path, version: list[str], kernel: str) -> None:
    readme = out / "README.md"
    head = (
        f"Captured from real OpenZFS ({' / '.join(version)}, Linux {kernel}, Debian 12 lab VM "
        f"under QEMU TCG) on {time.strftime('%Y-%m-%d', time.gmtime())}; regenerate with "
        "`xfleet lab up` (or `python -c 'from xfleet.lab import up; up()'`) then "
        "`.venv/bin/python -m tools.capture`.\n"
    )
    body = """
# Real OpenZFS fixtures

Every file is the verbatim stdout of one command run on a lab node after the scenario in
`scenario.json` (see `tools/scenario.py`) was played on a freshly created pool `tank`:

| file | command |
| --- | --- |
| `zfs_list_all.txt` | `xfleet.core.zfs.zfs_list(user_properties=["xfleet:tenant"])` |
| `zfs_list_fast.txt` | `zfs list -H -p -t all -o name,guid,createtxg,origin` |
| `zfs_get_all.txt` | `zfs get -H -p -o name,property,value,source all VOL SNAP FS` |
| `zpool_list.txt` | `xfleet.core.zfs.zpool_list()` |
| `zpool_status.txt` | `zpool status -p` |
| `zpool_history.txt` | `zpool history -il tank` |
| `zpool_events.txt` | `zpool events -H -v` |
| `zfs_errors.txt` | failing commands: `### argv`, `exit=N`, then their stderr |
| `scenario.json` | the steps played (replayable by the simulator), versions, the dataset names |

The exact argv of each file is in `scenario.json` under `commands`.
""" + _OPS_README + _HOSTILE_README + _HEALTH_README
    readme.write_text(head + body)


_HOSTILE_README = """
## Hostile user property values (`--hostile`)

`.venv/bin/python -m tools.capture --hostile` stores the values of `tools/hostile.py`
(tabs and newlines forging `zfs list` lines, quotes, control characters, DEL, an emoji, 8191
bytes, bytes that are not UTF-8) under `tank/hostile` on a fresh pool and writes six files (text
as xfleet reads it: bytes that are not UTF-8 as U+FFFD):

- `zfs_get_json_cut.txt`: `zfs.zfs_get_user_properties([xfleet:tenant, xfleet:note], [tank],
  recursive=True)`; ZFS stops mid-value at `tank/hostile/bad` (not UTF-8), and exits 0;
- `zfs_get_raw_value.txt`: `zfs.zfs_get_raw_value("xfleet:tenant", "tank/hostile/bad")`;
- `zfs_get_json_missing.txt`: that `zfs get -j` (with `-s local,received,inherited`) of an
  existing and a missing name: `exit=N`, then `--- stdout` (empty) and `--- stderr`;
- `zfs_get_json_hostile.txt`: the first command again, after
  `zfs inherit xfleet:tenant tank/hostile/bad`;
- `zpool_events_hostile.txt`: `zpool events -H -v` after `hostile.changes("lab1")` (values
  imitating an event and a history record, a value over two lines);
- `zpool_history_hostile.txt`: `zpool history -il tank`, then.
"""


HOSTILE_FILES = ("zfs_get_json_cut.txt", "zfs_get_raw_value.txt", "zfs_get_json_missing.txt",
                 "zfs_get_json_hostile.txt", "zpool_events_hostile.txt",
                 "zpool_history_hostile.txt")


def capture_hostile(
    node: str = "lab1",
    out: Path = DEFAULT_OUT,
    *,
    state_dir: Path | None = None,
    progress: Progress = None,
) -> dict[str, str]:
    """Store the values of tools.hostile on a fresh pool and write what ZFS prints of
    them (HOSTILE_FILES; text as xfleet reads it: bytes that are not UTF-8 as U+FFFD)."""
    lab, run = _session(node, out, state_dir)

    emit(progress, f"{node}: recreating pool {POOL}")
    recreate_pool(lab, node)
    run(sc.commands_argv(hostile.commands(POOL)))
    fs = f"{POOL}/{hostile.ROOT}"
    props = [sc.TENANT, hostile.NOTE]
    texts: dict[str, str] = {}
    texts["zfs_get_json_cut.txt"] = run(
        zfs.zfs_get_user_properties(props, [POOL], recursive=True)).stdout
    texts["zfs_get_raw_value.txt"] = run(zfs.zfs_get_raw_value(sc.TENANT, f"{fs}/bad")).stdout
    missing = run(zfs.zfs_get_user_properties(props, [f"{fs}/tab@s1", f"{fs}/nope"],
                                              sources=zfs.EFFECTIVE_SOURCES), check=False)
    texts["zfs_get_json_missing.txt"] = (f"exit={missing.exit_status}\n--- stdout\n"
                                         f"{missing.stdout}--- stderr\n{missing.stderr}")
    run(["zfs", "inherit", sc.TENANT, f"{fs}/bad"])
    texts["zfs_get_json_hostile.txt"] = run(
        zfs.zfs_get_user_properties(props, [POOL], recursive=True)).stdout
    for argv in hostile.changes(node, POOL):
        run(argv)
    texts["zpool_events_hostile.txt"] = run(["zpool", "events", "-H", "-v"]).stdout
    texts["zpool_history_hostile.txt"] = run(["zpool", "history", "-il", POOL]).stdout
    for name in HOSTILE_FILES:
        (out / name).write_text(texts[name])
        emit(progress, f"{node}: {name} ({len(texts[name])} characters)")
    return texts


# ---------------------------------------------------------------------------------------------
# pool health (--health)

HEALTH_DIR = "/var/tmp/xfleet health"  # on the node's root disk; a space in every vdev path
DEGRADED_POOL = "hx deg.1"  # pool names with a space, '.', '_', '-' and ':'
CKSUM_POOL = "hx_cksum"
DATA_POOL = "hx-data:1"
CUT_POOL = "hxcut"
HEALTH_POOLS = (DEGRADED_POOL, CKSUM_POOL, DATA_POOL, CUT_POOL)
_SUSPEND = "/sys/module/zfs/parameters/zfs_scan_suspend_progress"  # 1: scans make no progress
HEALTH_FILES = (
    "zpool_status_json_scrubbed.txt", "zpool_status_json_degraded.txt",
    "zpool_status_degraded.txt", "zpool_status_json_resilver.txt",
    "zpool_status_resilver.txt", "zpool_status_json_cksum.txt", "zpool_status_cksum.txt",
    "zpool_status_json_all.txt", "zpool_status_all.txt", "zpool_status_json_cut.txt",
    "zpool_status_cut.txt", "zpool_status_bad_option.txt", "health.json",
)

# Makes the files of the extra pools ($1: the directory): sparse, 128 MiB each (64 MiB is
# zpool's minimum). Two names need bytes no argument can carry: a line break and 0xff.
_HEALTH_FILES_SH = r"""set -eu
d="$1"
mkdir -p "$d"
cd "$d"
for f in "deg a.img" "$(printf 'deg\tb.img')" log.img 'spare "q".img' \
         "$(printf 'cache \303\251.img')" "ck a.img" "ck b.img" data.img \
         "$(printf 'bad\377.img')" "$(printf 'n\nl.img')"; do
    truncate -s 128M "$f"
done
"""
# Creates a mirror of the two files whose names hold a line break and 0xff ($1: the
# directory, $2: the pool).
_CUT_CREATE_SH = r"""set -eu
d="$1"; shift
zpool create -f -o cachefile=none "$@" mirror "$d/$(printf 'bad\377.img')" "$d/$(printf 'n\nl.img')"
"""
# Corrupts $4 MiB of file $1 from MiB $3 on, past the front labels (the first 4 MiB hold
# L0, L1 and the boot area; the last 512 KiB L2 and L3), with bytes from $2.
_CORRUPT_SH = r"""set -eu
dd if="$2" of="$1" bs=1M seek="$3" count="$4" conv=notrunc,fsync status=none
"""


def health_scenario(d: str = HEALTH_DIR) -> dict[str, list[list[str]]]:
    """The commands of `capture_health`, by phase (each phase's commands run in order)."""
    deg_a, deg_b = f"{d}/deg a.img", f"{d}/deg\tb.img"
    ck_a, ck_b = f"{d}/ck a.img", f"{d}/ck b.img"
    create = ["zpool", "create", "-f", "-o", "cachefile=none"]

    def vol(pool: str, mb: int) -> list[list[str]]:
        return [*sc.step_argv({"op": "create_volume", "name": f"{pool}/v", "volsize": "48M",
                               "sparse": False, "properties": {}}),
                *sc.step_argv({"op": "write", "name": f"{pool}/v", "source": "urandom",
                               "size_mb": mb, "offset_mb": 0})]

    return {
        "scrubbed": [
            *vol(POOL, 8),
            ["zpool", "scrub", "-w", POOL],
        ],
        "degraded": [
            ["sh", "-c", _HEALTH_FILES_SH, "xfleet-health", d],
            [*create, DEGRADED_POOL, "mirror", deg_a, deg_b, "log", f"{d}/log.img",
             "spare", f'{d}/spare "q".img', "cache", f"{d}/cache \u00e9.img"],
            *vol(DEGRADED_POOL, 16),
            ["zpool", "offline", DEGRADED_POOL, deg_b],
            *sc.step_argv({"op": "write", "name": f"{DEGRADED_POOL}/v", "source": "urandom",
                           "size_mb": 4, "offset_mb": 16}),
            ["zpool", "sync", DEGRADED_POOL],
        ],
        "resilver": [
            ["sh", "-c", f"echo 1 > {_SUSPEND}"],
            ["zpool", "online", DEGRADED_POOL, deg_b],
        ],
        "cksum": [
            ["sh", "-c", f"echo 0 > {_SUSPEND}"],
            ["zpool", "wait", "-t", "resilver", DEGRADED_POOL],
            [*create, CKSUM_POOL, "mirror", ck_a, ck_b],
            [*create, DATA_POOL, f"{d}/data.img"],
            *vol(CKSUM_POOL, 32),
            *vol(DATA_POOL, 32),
            ["zpool", "sync", CKSUM_POOL, DATA_POOL],
            ["sh", "-c", _CORRUPT_SH, "xfleet-corrupt", ck_b, "/dev/urandom", "36", "8"],
            ["sh", "-c", _CORRUPT_SH, "xfleet-corrupt", f"{d}/data.img", "/dev/urandom",
             "40", "2"],
            ["zpool", "scrub", "-w", CKSUM_POOL],
            ["zpool", "scrub", "-w", DATA_POOL],
        ],
        "all": [  # a paused scrub beside the others
            ["sh", "-c", f"echo 1 > {_SUSPEND}"],
            ["zpool", "scrub", CKSUM_POOL],
            ["zpool", "scrub", "-p", CKSUM_POOL],
        ],
        "cut": [
            ["zpool", "scrub", "-s", CKSUM_POOL],
            ["sh", "-c", f"echo 0 > {_SUSPEND}"],
            ["sh", "-c", _CUT_CREATE_SH, "xfleet-cut", d, CUT_POOL],
        ],
    }


def health_cleanup_argv(d: str = HEALTH_DIR) -> list[str]:
    """Scans free to progress again, the extra pools destroyed, their files removed."""
    lines = [f"echo 0 > {_SUSPEND}"]
    lines += [f"zpool destroy -f {shlex.quote(p)} 2>/dev/null" for p in HEALTH_POOLS]
    lines += [f"rm -rf {shlex.quote(d)}", "true"]
    return ["sh", "-c", "\n".join(lines)]


def capture_health(
    node: str = "lab1",
    out: Path = DEFAULT_OUT,
    *,
    state_dir: Path | None = None,
    progress: Progress = None,
) -> dict[str, object]:
    """Play `health_scenario` (tank recreated first) and write HEALTH_FILES to `out`; the
    extra pools are destroyed at the end, whatever happened. Returns health.json's data."""
    lab, run = _session(node, out, state_dir)
    t0 = time.monotonic()

    emit(progress, f"{node}: recreating pool {POOL}")
    run(health_cleanup_argv())
    recreate_pool(lab, node)
    version, kernel = _versions(run)
    steps = health_scenario()
    texts: dict[str, str] = {}
    js, tx = zfs.zpool_status_json, zfs.zpool_status

    def phase(name: str) -> None:
        for argv in steps[name]:
            run(argv)
        emit(progress, f"{node}: {name}: {len(steps[name])} commands")

    def expect(fname: str, pool: str, ok: bool, what: str) -> None:
        if not ok:
            raise LabError(f"{node}: {fname}: expected {what} on {pool}: "
                           f"{texts[fname][:2000]}")

    def one(text: str, pool: str) -> zfs.PoolHealth:
        return {p.name: p for p in zfs.parse_status_json(text)}[pool]

    try:
        phase("scrubbed")
        texts["zpool_status_json_scrubbed.txt"] = run(js([POOL])).stdout
        got = one(texts["zpool_status_json_scrubbed.txt"], POOL)
        expect("zpool_status_json_scrubbed.txt", POOL,
               (got.scan_function, got.scan_state) == ("SCRUB", "FINISHED"), "a finished scrub")

        phase("degraded")
        texts["zpool_status_json_degraded.txt"] = run(js([DEGRADED_POOL])).stdout
        texts["zpool_status_degraded.txt"] = run(tx([DEGRADED_POOL])).stdout
        expect("zpool_status_json_degraded.txt", DEGRADED_POOL,
               one(texts["zpool_status_json_degraded.txt"], DEGRADED_POOL).state == "DEGRADED",
               "state DEGRADED")

        phase("resilver")
        texts["zpool_status_json_resilver.txt"] = run(js([DEGRADED_POOL])).stdout
        texts["zpool_status_resilver.txt"] = run(tx([DEGRADED_POOL])).stdout
        got = one(texts["zpool_status_json_resilver.txt"], DEGRADED_POOL)
        expect("zpool_status_json_resilver.txt", DEGRADED_POOL,
               (got.scan_function, got.scan_state) == ("RESILVER", "SCANNING"),
               "a resilver in progress")

        phase("cksum")
        texts["zpool_status_json_cksum.txt"] = run(js([CKSUM_POOL])).stdout
        texts["zpool_status_cksum.txt"] = run(tx([CKSUM_POOL])).stdout
        expect("zpool_status_json_cksum.txt", CKSUM_POOL,
               one(texts["zpool_status_json_cksum.txt"], CKSUM_POOL).checksum_errors > 0,
               "checksum errors")

        phase("all")
        texts["zpool_status_json_all.txt"] = run(js()).stdout
        texts["zpool_status_all.txt"] = run(tx()).stdout
        got = one(texts["zpool_status_json_all.txt"], DATA_POOL)
        expect("zpool_status_json_all.txt", DATA_POOL, bool(got.data_errors), "data errors")
        got = one(texts["zpool_status_json_all.txt"], CKSUM_POOL)
        expect("zpool_status_json_all.txt", CKSUM_POOL, got.scan_state == "PAUSED",
               "a paused scrub")

        phase("cut")
        texts["zpool_status_json_cut.txt"] = run(js([CUT_POOL])).stdout
        texts["zpool_status_cut.txt"] = run(tx([CUT_POOL])).stdout
        try:
            zfs.parse_status_json(texts["zpool_status_json_cut.txt"])
        except zfs.ParseError:
            pass
        else:
            raise LabError(f"{node}: expected `zpool status -j` to stop at the vdev path "
                           "that is not UTF-8, but its output is whole")

        blocks = []
        for argv in (["zpool", "status", "-Q"], ["zpool", "status", "--json-bogus"]):
            res = run(argv, check=False)
            blocks.append(f"### {shlex.join(argv)}\nexit={res.exit_status}\n--- stdout\n"
                          f"{res.stdout}--- stderr\n{res.stderr}")
        texts["zpool_status_bad_option.txt"] = "".join(blocks)
    finally:
        run(health_cleanup_argv(), check=False)
    left = run(["zpool", "list", "-H", "-o", "name"]).stdout.split()
    if left != [POOL]:
        raise LabError(f"{node}: pools left after the health capture: {left}")
    data: dict[str, object] = {
        "description": "Pool health captured by `python -m tools.capture --health`: the "
        "phases of health_scenario were run in order on a fresh tank, each followed by the "
        "captures named in `files`; the extra pools are made of sparse 128 MiB files in "
        f"{HEALTH_DIR!r} on the node and destroyed at the end. Timestamps are the node's "
        "clock (UTC).",
        "openzfs": version,
        "kernel": kernel,
        "captured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pools": {"tank": POOL, "degraded": DEGRADED_POOL, "cksum": CKSUM_POOL,
                  "data": DATA_POOL, "cut": CUT_POOL},
        "phases": steps,
        "files": {
            "zpool_status_json_scrubbed.txt": ["scrubbed", js([POOL])],
            "zpool_status_json_degraded.txt": ["degraded", js([DEGRADED_POOL])],
            "zpool_status_degraded.txt": ["degraded", tx([DEGRADED_POOL])],
            "zpool_status_json_resilver.txt": ["resilver", js([DEGRADED_POOL])],
            "zpool_status_resilver.txt": ["resilver", tx([DEGRADED_POOL])],
            "zpool_status_json_cksum.txt": ["cksum", js([CKSUM_POOL])],
            "zpool_status_cksum.txt": ["cksum", tx([CKSUM_POOL])],
            "zpool_status_json_all.txt": ["all", js()],
            "zpool_status_all.txt": ["all", tx()],
            "zpool_status_json_cut.txt": ["cut", js([CUT_POOL])],
            "zpool_status_cut.txt": ["cut", tx([CUT_POOL])],
            "zpool_status_bad_option.txt": ["cut", [["zpool", "status", "-Q"],
                                                    ["zpool", "status", "--json-bogus"]]],
        },
    }
    texts["health.json"] = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    for name in HEALTH_FILES:
        (out / name).write_text(texts[name])
        emit(progress, f"{node}: {name} ({len(texts[name])} characters)")
    emit(progress, f"{node}: health fixtures written to {out} in {time.monotonic() - t0:.0f}s")
    return data


_HEALTH_README = """
## Pool health (`--health`)

`.venv/bin/python -m tools.capture --health` recreates `tank`, plays the phases of
`tools.capture.health_scenario` (listed in `health.json` under `phases`) and writes the files
below (and nothing else). The extra pools are made of sparse 128 MiB files in
`/var/tmp/xfleet health/` on the node and destroyed at the end. Their names are hostile on
purpose: pools `hx deg.1`, `hx_cksum`, `hx-data:1`; vdev paths with a space, a tab
(`deg<TAB>b.img`), double quotes, `é`, and (pool `hxcut`) a line break and the byte 0xff.
`json` files are `zpool status -j --json-int [POOL]`, the others `zpool status -p [POOL]`
(the exact argv of each is in `health.json` under `files`):

- `zpool_status_json_scrubbed.txt`: `tank` holding a volume with 8 MiB written, after
  `zpool scrub -w tank` (scrub FINISHED);
- `zpool_status_json_degraded.txt`, `zpool_status_degraded.txt`: `hx deg.1`, a mirror with
  a log, a cache and a spare, one side taken `zpool offline` and 4 MiB written since:
  DEGRADED, with status and action;
- `zpool_status_json_resilver.txt`, `zpool_status_resilver.txt`: that side brought back with
  `zpool online` while `zfs_scan_suspend_progress=1`: a resilver in progress (SCANNING);
- `zpool_status_json_cksum.txt`, `zpool_status_cksum.txt`: `hx_cksum`, a mirror with 32 MiB
  written, 8 MiB of one side's file overwritten with `dd` past the labels, then
  `zpool scrub -w`: checksum errors on that side, repaired (the scan's errors 0);
- `zpool_status_json_all.txt`, `zpool_status_all.txt`: every pool, the two commands one
  after the other: the above (the resilver finished), `hx-data:1` (one file, 2 MiB of it
  overwritten, scrubbed: data errors) and `hx_cksum` with a paused scrub (`zpool scrub -p`);
- `zpool_status_json_cut.txt`, `zpool_status_cut.txt`: `hxcut`, a mirror of two files whose
  paths hold 0xff and a line break. ZFS's JSON stops at the 0xff (and exits 0); the text
  form holds both (0xff read as U+FFFD; the line break splits a config line in two);
- `zpool_status_bad_option.txt`: `zpool status -Q` and `zpool status --json-bogus`, as
  `### argv`, `exit=N`, `--- stdout`, `--- stderr`: exit 2, `invalid option 'Q'` (for an
  unknown long option the name printed is a NUL byte), then the usage. An OpenZFS before
  2.3 says `invalid option 'j'` of `zpool status -j`;
- `health.json`: the phases' commands, versions, pool names, each file's argv.

The scan times are the node's clock (UTC).
"""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.capture", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--node", default="lab1", help="lab node to use (default lab1)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    ap.add_argument("--state-dir", type=Path, default=None, help="lab state directory")
    ap.add_argument("--ops", action="store_true",
                    help="capture the change feed of ops_scenario instead (3 files only)")
    ap.add_argument("--hostile", action="store_true",
                    help="capture what ZFS prints of tools.hostile's values instead "
                    "(the 6 files of HOSTILE_FILES only)")
    ap.add_argument("--health", action="store_true",
                    help="capture pool health (zpool status -j and -p) of tank and of extra "
                    "pools made of files, then destroy them (the files of HEALTH_FILES only)")
    args = ap.parse_args(argv)
    fn: Callable[..., object] = (capture_ops if args.ops else capture_hostile if args.hostile
                                 else capture_health if args.health else capture)
    try:
        fn(args.node, args.out, state_dir=args.state_dir,
           progress=lambda m: print(m, file=sys.stderr, flush=True))
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
