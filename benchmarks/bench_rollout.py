"""A rolling target upgrade on a simulated fleet (issue 8): what the rollout costs at scale.

    .venv/bin/python benchmarks/bench_rollout.py [--volumes 100000] [--nodes 3]

Every node has VOLUMES volumes (plus snapshots and clones) exported by the simulated target
(`xfleet-sim-target`, docs/sim.md). Prints the preflight time (exports of every node compared
with the mirror, identities checked), the rollout's time per node (soak 0: the checks, not the
waiting) and the remote commands per node, side by side for a small fleet and this one: the
commands must not grow with the volumes. Record the figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xfleet import sim
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.ops import rollout
from xfleet.ops.sync import sync


def run(tmp: Path, volumes: int, nodes: int) -> dict[str, float]:
    tmp.mkdir()
    inv_path = tmp / "fleet.yaml"
    inv_path.write_text(
        "all:\n  vars:\n    mirror: m.db\n    state_dir: st\n    kind: sim\n"
        f"    target: {json.dumps(sim.TARGET)}\n"
        + "  hosts:\n" + "".join(f"    n{i}: {{sim: {{seed: {i}, volumes: {volumes}}}}}\n"
                                 for i in range(1, nodes + 1)))
    for v in ("1.0", "1.1"):
        (tmp / f"t_{v}.pkg").write_text(f"target {v}\n")
    inv = inventory.load(inv_path)
    t0 = time.monotonic()
    assert sync(inv).ok
    synced = time.monotonic() - t0
    peak_sync = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    opts = rollout.Options(serial=["50%"], soak=0)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        t1 = time.monotonic()
        plan = rollout.plan(inv, inv.mirror, conns, "1.1", f"1.1={tmp / 't_1.1.pkg'}",
                            [f"1.0={tmp / 't_1.0.pkg'}"], opts)
        checked = time.monotonic() - t1
        assert not plan.refused, plan.refused
        before = {n: conns.get(n).commands for n in inv.hosts}
        t2 = time.monotonic()
        res = rollout.Runner(inv, inv.mirror, conns).run(rollout.start(inv.mirror, plan))
        rolled = time.monotonic() - t2
        cmds = [conns.get(n).commands - before[n] for n in inv.hosts]
    assert res.state == "done", res.reason
    per_node = [n["finished_at"] - n["started_at"] for n in res.nodes]
    return {"synced": synced, "preflight": checked, "rollout": rolled,
            "per_node": max(per_node), "commands": max(cmds), "min_commands": min(cmds),
            "peak_sync": peak_sync,
            "peak_rollout": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=100_000)
    ap.add_argument("--nodes", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {platform.node()} {os.cpu_count()} cpu, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        small = run(Path(tmp) / "small", 1_000, args.nodes)
        big = run(Path(tmp) / "big", args.volumes, args.nodes)
    print(f"{'':28} {'1,000 volumes/node':>20} {f'{args.volumes:,} volumes/node':>22}")
    for key, label, unit in (("synced", "full sync of the fleet", "s"),
                             ("preflight", "preflight (all nodes)", "s"),
                             ("rollout", "rollout (staging + nodes)", "s"),
                             ("per_node", "slowest node, start to done", "s"),
                             ("commands", "remote commands per node", "")):
        fmt = (lambda v: f"{v:.0f}") if not unit else (lambda v: f"{v:.2f} s")
        print(f"{label:28} {fmt(small[key]):>20} {fmt(big[key]):>22}")
    print(f"peak RSS of this process: {big['peak_sync']:.0f} MiB after the syncs, "
          f"{big['peak_rollout']:.0f} MiB after the preflight and rollout")


if __name__ == "__main__":
    main()
