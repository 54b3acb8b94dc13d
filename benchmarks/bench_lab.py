"""Lab benchmark: real OpenZFS node with ~2,000 datasets (issues 3 and 5).

    .venv/bin/python benchmarks/bench_lab.py [--volumes 200] [--snapshots 9] [--keep]

Side by side on one lab node (qemu TCG here, so ZFS itself is slow):
- `zfs list -Hp -t all -o <the sync's columns>` run on the node (over an open SSH connection);
- a full `xfleet sync` of that node (CLI process);
- `xfleet ls` of the same rows from the mirror (in process, and as a cold CLI process);
- the fast-path structural listing (name, guid, createtxg, origin) vs the full columns;
- after 10 changes: an incremental `xfleet sync` vs a full one (target: >= 20x faster);
- `xfleet watch`: time from a `zfs snapshot` on the node to its row in the mirror (target:
  median <= 3 s under TCG).
Prints the figures and their ratios; record them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xfleet import lab, mirror
from xfleet.core.zfs import FAST_COLUMNS, zfs_list
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.mirror import query
from xfleet.ops.sync import sync
from xfleet.remote.ssh import SSHTransport

CHANGES = [  # 10 changes of the kinds a fleet sees all day
    ["zfs", "snapshot", "tank/bench/v1@c1"],
    ["zfs", "snapshot", "tank/bench/v2@c1"],
    ["zfs", "snapshot", "tank/bench/v3@c1"],
    ["zfs", "create", "-s", "-V", "64M", "tank/bench/new1"],
    ["zfs", "create", "-s", "-V", "64M", "tank/bench/new2"],
    ["zfs", "clone", "tank/bench/v4@s0", "tank/bench/branch1"],
    ["zfs", "set", "compression=zstd", "tank/bench/v5"],
    ["zfs", "set", "xfleet:tenant=moved", "tank/bench/v6"],
    ["zfs", "destroy", "tank/bench/v7@s0"],
    ["zfs", "rename", "tank/bench/v8", "tank/bench/v8-renamed"],
]
CHANGES_AGAIN = [[a.replace("c1", "c2").replace("new", "newer").replace("branch1", "branch2")
                  .replace("v8", "v18").replace("v7@", "v17@").replace("v6", "v16")
                  .replace("v5", "v15") for a in argv] for argv in CHANGES]


def populate(node: str, volumes: int, snapshots: int) -> None:
    """~volumes * (1 + snapshots) datasets: one remote command per round, never per dataset."""
    lab.run(node, ["zfs", "create", "-p", "tank/bench"])
    script = (
        f"i=0; while [ $i -lt {volumes} ]; do "
        "zfs create -s -V 64M -o volmode=none -o xfleet:tenant=t$((i % 17)) "
        "tank/bench/v$i || exit 1; i=$((i+1)); done"
    )
    lab.run(node, ["sh", "-c", script], timeout=3600)
    for s in range(snapshots):
        names = [f"tank/bench/v{i}@s{s}" for i in range(volumes)]
        lab.run(node, ["zfs", "snapshot", *names], timeout=3600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=200)
    ap.add_argument("--snapshots", type=int, default=9)
    ap.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    args = ap.parse_args()
    inv_path = ROOT / "inventory" / "lab.yaml"
    say = lambda m: print(f"  .. {m}", file=sys.stderr)  # noqa: E731
    lab.build(progress=say)
    lab.up(nodes=1, inventory_path=inv_path, progress=say)
    node = "lab1"
    lab.reset(progress=say)  # a fresh pool: the benchmark owns the node
    t0 = time.perf_counter()
    populate(node, args.volumes, args.snapshots)
    populate_s = time.perf_counter() - t0
    inv = inventory.load(inv_path)
    host = inv.hosts[node]
    t = SSHTransport(host, trust_store=inv.trust_store)
    argv = zfs_list(host.pools)  # the native columns, as a full sync lists them
    t.run(["true"])  # connect first: the handshake is not part of zfs list
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        n = sum(1 for _ in t.lines(argv))
        times.append(time.perf_counter() - t0)
    zfs_list_s = min(times)
    fast = []
    for _ in range(3):
        t0 = time.perf_counter()
        sum(1 for _ in t.lines(zfs_list(host.pools, columns=FAST_COLUMNS)))
        fast.append(time.perf_counter() - t0)
    t.close()
    fast_s = min(fast)

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "lab.db"
        cli = [sys.executable, "-m", "xfleet", "-i", str(inv_path), "-m", str(db)]
        t0 = time.perf_counter()
        out = subprocess.run([*cli, "sync", "--node", node, "--json"], capture_output=True,
                             text=True, check=True, cwd=ROOT)
        sync_s = time.perf_counter() - t0
        rep = json.loads(out.stdout)["nodes"][0]
        conn = mirror.connect(db, readonly=True)
        sel = query.Selection(nodes=[node], limit=None)
        best = float("inf")
        for _ in range(10):
            t0 = time.perf_counter()
            rows = list(query.ls(conn, sel))
            best = min(best, time.perf_counter() - t0)
        conn.close()
        cold = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([*cli, "ls", "--node", node, "--limit", "0", "--json"],
                           capture_output=True, check=True, cwd=ROOT)
            cold.append(time.perf_counter() - t0)
        for argv in CHANGES:
            lab.run(node, argv)
        lab.run(node, ["zpool", "sync", "tank"])
        t0 = time.perf_counter()
        out = subprocess.run([*cli, "sync", "--node", node, "--json"], capture_output=True,
                             text=True, check=True, cwd=ROOT)
        inc_s = time.perf_counter() - t0
        inc = json.loads(out.stdout)["nodes"][0]
        # in process over an open connection (what `xfleet watch` pays every interval)
        with Connections(inv.hosts, trust_store=inv.trust_store) as conns:
            conns.get(node).run(["true"])
            warm_db = Path(tmp) / "warm.db"
            t0 = time.perf_counter()
            sync(inv, warm_db, [node], connections=conns)
            warm_full_s = time.perf_counter() - t0
            for argv in CHANGES_AGAIN:
                lab.run(node, argv)
            lab.run(node, ["zpool", "sync", "tank"])
            t0 = time.perf_counter()
            warm = sync(inv, warm_db, [node], connections=conns).nodes[0]
            warm_inc_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = subprocess.run([*cli, "sync", "--full", "--node", node, "--json"],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        full2_s = time.perf_counter() - t0
        latencies = watch_latency(cli, db, node)
    if not args.keep:
        lab.down(progress=say)
    print(f"lab node {node}: {n} datasets ({args.volumes} volumes x {args.snapshots} snapshots; "
          f"created in {populate_s:.0f} s)")
    print(f"  zfs list -Hp -t all (sync's columns) on the node  {zfs_list_s:8.2f} s")
    print(f"  xfleet sync --node {node} (CLI, full)            {sync_s:8.2f} s   "
          f"ratio to zfs list {sync_s / zfs_list_s:5.2f}  ({rep['commands']} remote commands)")
    print(f"  xfleet ls, same rows, in process                  {best * 1000:8.1f} ms  "
          f"zfs list is {zfs_list_s / best:,.0f}x slower")
    print(f"  xfleet ls --node {node} --limit 0 --json (cold CLI)  {min(cold):8.2f} s   "
          f"zfs list is {zfs_list_s / min(cold):,.1f}x slower")
    print(f"  zfs list fast path (name,guid,createtxg,origin)   {fast_s:8.2f} s   "
          f"{zfs_list_s / fast_s:5.2f}x faster than the full columns")
    print(f"after {len(CHANGES)} changes:")
    print(f"  xfleet sync (incremental, CLI)                    {inc_s:8.2f} s   "
          f"({inc['commands']} commands, {inc['received']:,} bytes, {inc['events']} events)")
    print(f"  xfleet sync --full (CLI)                          {full2_s:8.2f} s   "
          f"incremental is {full2_s / inc_s:5.1f}x faster")
    print(f"  in process, open connection: full {warm_full_s:6.2f} s, incremental "
          f"{warm_inc_s:5.2f} s ({warm.commands} commands, {warm.events} events): "
          f"{warm_full_s / warm_inc_s:5.1f}x faster (target >= 20x)")
    med = statistics.median(latencies)
    print(f"  xfleet watch: zfs snapshot -> row in the mirror  median {med:5.2f} s, "
          f"max {max(latencies):5.2f} s over {len(latencies)} snapshots (from issuing "
          "`zfs snapshot` over ssh)")
    assert len(rows) == n == rep["datasets"]


def watch_latency(cli: list[str], db: Path, node: str, samples: int = 10) -> list[float]:
    proc = subprocess.Popen([*cli, "watch", "--node", node, "--json-lines"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=ROOT)
    try:
        conn = mirror.connect(db, readonly=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            row = conn.execute("SELECT watch_state FROM nodes WHERE name = ?", (node,)).fetchone()
            if row and row[0] == "following":
                break
            time.sleep(0.1)
        out = []
        for i in range(samples):
            name = f"tank/bench/v9@lat{i}"
            t0 = time.perf_counter()
            lab.run(node, ["zfs", "snapshot", name])
            while not conn.execute("SELECT 1 FROM datasets WHERE node = ? AND name = ?",
                                   (node, name)).fetchone():
                if time.perf_counter() - t0 > 120:
                    raise SystemExit(f"{name} never reached the mirror")
                time.sleep(0.02)
            out.append(time.perf_counter() - t0)
        conn.close()
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()
