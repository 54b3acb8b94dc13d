"""Capture real OpenZFS output from a running lab node into tests/fixtures/real/.

    python -m xfleet.lab.capture [--node lab1] [--out tests/fixtures/real] [--state-dir DIR]

It recreates pool `tank` on the node (destroying what was there), plays the scenario of
`xfleet.lab.scenario.default_scenario`, then saves the output of the exact commands xfleet runs
(built with xfleet.zfs) plus error messages, and `scenario.json` describing what was done.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from xfleet import zfs
from xfleet.lab import scenario as sc
from xfleet.lab import ssh
from xfleet.lab.errors import LabError
from xfleet.lab.paths import Progress, emit
from xfleet.lab.vm import POOL, LabState, recreate_pool

DEFAULT_OUT = Path("tests/fixtures/real")


def capture(
    node: str = "lab1",
    out: Path = DEFAULT_OUT,
    *,
    state_dir: Path | None = None,
    progress: Progress = None,
) -> dict[str, object]:
    """Run the scenario on `node` and write the fixtures to `out`. Returns scenario.json's data."""
    lab = LabState.load(state_dir)
    ep = lab.endpoint(node)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    def run(argv: Sequence[str], check: bool = True) -> ssh.Result:
        return ssh.run(ep, argv, check=check, timeout=900)

    emit(progress, f"{node}: recreating pool {POOL}")
    recreate_pool(lab, node)
    version = run(["zfs", "version"]).stdout.strip().splitlines()
    kernel = run(["uname", "-r"]).stdout.strip()
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
        "description": "Scenario played on a fresh pool by `python -m xfleet.lab.capture`; "
        "steps are replayable (op + arguments). 'write' steps copy size_mb MiB from source "
        "(urandom | zero | text: log-like lines, see xfleet/lab/scenario.py) to the zvol at "
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


def _write_readme(out: Path, version: list[str], kernel: str) -> None:
    readme = out / "README.md"
    head = (
        f"Captured from real OpenZFS ({' / '.join(version)}, Linux {kernel}, Debian 12 lab VM "
        f"under QEMU TCG) on {time.strftime('%Y-%m-%d', time.gmtime())}; regenerate with "
        "`xfleet lab up` (or `python -c 'from xfleet.lab import up; up()'`) then "
        "`.venv/bin/python -m xfleet.lab.capture`.\n"
    )
    body = """
# Real OpenZFS fixtures

Every file is the verbatim stdout of one command run on a lab node after the scenario in
`scenario.json` (see `xfleet/lab/scenario.py`) was played on a freshly created pool `tank`:

| file | command |
| --- | --- |
| `zfs_list_all.txt` | `xfleet.zfs.zfs_list(user_properties=["xfleet:tenant"])` |
| `zfs_list_fast.txt` | `zfs list -H -p -t all -o name,guid,createtxg,origin` |
| `zfs_get_all.txt` | `zfs get -H -p -o name,property,value,source all VOL SNAP FS` |
| `zpool_list.txt` | `xfleet.zfs.zpool_list()` |
| `zpool_status.txt` | `zpool status -p` |
| `zpool_history.txt` | `zpool history -il tank` |
| `zpool_events.txt` | `zpool events -H -v` |
| `zfs_errors.txt` | failing commands: `### argv`, `exit=N`, then their stderr |
| `scenario.json` | the steps played (replayable by the simulator), versions, the dataset names |

The exact argv of each file is in `scenario.json` under `commands`.
"""
    readme.write_text(head + body)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xfleet.lab.capture", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--node", default="lab1", help="lab node to use (default lab1)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    ap.add_argument("--state-dir", type=Path, default=None, help="lab state directory")
    args = ap.parse_args(argv)
    try:
        capture(args.node, args.out, state_dir=args.state_dir,
                progress=lambda m: print(m, file=sys.stderr, flush=True))
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
