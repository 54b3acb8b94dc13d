"""Incremental sync vs full sync on a simulated node (issue 5): figures side by side.

    .venv/bin/python benchmarks/bench_incremental.py [--volumes 33000] [--changes 100]

A sim node with ~100k datasets is fully synced, then CHANGES changes are made (snapshots,
creates, clones, property sets, renames) and an incremental sync runs — once with a space
refresh forced (`--refresh`: the pool's figures moved, so 2,000 due rows are refreshed too) and
three times as `xfleet sync` does between scheduled refreshes (changes only). Target: incremental
<= 2 % of the full sync's time. Record the figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xfleet.fleet import inventory
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport


def changes(t: SimTransport, n: int, round_: int) -> None:
    vols = [line for line in t.run(["zfs", "list", "-H", "-o", "name", "-t", "volume", "-r",
                                    "tank/t0001", "tank/t0002", "tank/t0003"]).stdout.split()
            if line]
    t.run(["zfs", "create", "-p", f"tank/bench{round_}"])
    made = 0
    i = 0
    while made < n:
        v = vols[i % len(vols)]
        kind = i % 10
        if kind < 4:
            t.run(["zfs", "snapshot", f"{v}@b{round_}.{i}"])
        elif kind < 6:
            t.run(["zfs", "create", "-s", "-V", "1G", f"tank/bench{round_}/v{i}"])
        elif kind < 7:
            t.run(["zfs", "snapshot", f"{v}@c{round_}.{i}"])
            t.run(["zfs", "clone", f"{v}@c{round_}.{i}", f"tank/bench{round_}/clone{i}"])
            made += 1
        elif kind < 9:
            t.run(["zfs", "set", f"xfleet:tenant=bench{i}", v])
        else:
            t.run(["zfs", "create", "-s", "-V", "1G", f"tank/bench{round_}/r{i}"])
            t.run(["zfs", "rename", f"tank/bench{round_}/r{i}", f"tank/bench{round_}/r{i}-x"])
            made += 1
        made += 1
        i += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=33_000)
    ap.add_argument("--changes", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inv_path = Path(tmp) / "fleet.yaml"
        inv_path.write_text(
            "all:\n  vars:\n    mirror: m.db\n    state_dir: state\n    kind: sim\n"
            f"  hosts:\n    big:\n      sim: {{seed: 5, volumes: {args.volumes}}}\n")
        inv = inventory.load(inv_path)
        db = Path(tmp) / "m.db"
        t0 = time.perf_counter()
        full = sync(inv, db).nodes[0]
        full_s = time.perf_counter() - t0
        t = SimTransport(inv.hosts["big"], state_dir=inv.state_dir)
        results = []
        for round_, refresh in enumerate((True, False, False, False), 1):
            changes(t, args.changes, round_)
            t0 = time.perf_counter()
            inc = sync(inv, db, refresh=refresh).nodes[0]
            results.append((refresh, time.perf_counter() - t0, inc))
        t0 = time.perf_counter()
        full2 = sync(inv, db, full=True).nodes[0]
        full2_s = time.perf_counter() - t0
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(f"sim node: {full.datasets:,} datasets ({args.volumes:,} volumes), "
          f"{args.changes} changes per round\n")
    print(f"full sync (first)            {full_s:8.2f} s   {full.commands} commands, "
          f"{full.received:,} bytes")
    print(f"full sync (--full, after)    {full2_s:8.2f} s   {full2.commands} commands, "
          f"{full2.received:,} bytes")
    for refresh, secs, inc in results:
        label = "with a space refresh" if refresh else "changes only"
        print(f"incremental, {label:<22} {secs:6.3f} s = {100 * secs / full2_s:5.2f} % of a "
              f"full sync (target <= 2 %); {inc.commands} commands, {inc.received:,} bytes, "
              f"{inc.events} events, {inc.fetched} rows fetched ({inc.refreshed} for space)")


if __name__ == "__main__":
    main()
