"""Drain planning on a simulated fleet (issue 6): how long `xfleet drain NODE --dry-run` plans.

    .venv/bin/python benchmarks/bench_drain.py [--volumes 100000]

A node with VOLUMES volumes (plus their snapshots) is drained onto two others; every volume
gets the same preflight from the mirror as `xfleet move` (clones, taken names, room, the
snapshot chain) against each candidate target. Prints the planning time and its cost per
volume. Record the figures in docs/benchmarks.md.
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

from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.ops import moves
from xfleet.ops.sync import sync


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inv_path = Path(tmp) / "fleet.yaml"
        inv_path.write_text(
            "all:\n  vars: {mirror: m.db, state_dir: st, kind: sim}\n  hosts:\n"
            f"    n1: {{sim: {{seed: 1, volumes: {args.volumes}}}}}\n"
            "    n2: {sim: {seed: 2, volumes: 2000}}\n    n3: {sim: {seed: 3, volumes: 2000}}\n")
        inv = inventory.load(inv_path)
        t0 = time.monotonic()
        assert sync(inv).ok
        synced = time.monotonic() - t0
        conn = mirror.connect(inv.mirror)
        rows = conn.execute("SELECT count(*) FROM datasets WHERE node = 'n1'").fetchone()[0]
        t1 = time.monotonic()
        plans, refused = moves.plan_drain(inv, conn, "n1")
        planned = time.monotonic() - t1
        n = len(plans) + len(refused)
        print(f"machine: {platform.node()} {os.cpu_count()} cpu, "
              f"python {platform.python_version()}")
        print(f"mirror: {rows:,} rows on the drained node (sync of the fleet {synced:.1f}s)")
        print(f"drain plan: {len(plans):,} moves, {len(refused):,} refused, {planned:.1f}s "
              f"({planned / max(n, 1) * 1000:.2f} ms per volume)")


if __name__ == "__main__":
    main()
