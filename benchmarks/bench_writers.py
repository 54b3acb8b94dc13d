"""How long other writers wait for the mirror while a slow node's full sync runs (issue #16).

    .venv/bin/python benchmarks/bench_writers.py [--volumes 100000] [--rows-per-second 40000]

A simulated node of --volumes volumes lists --rows-per-second rows a second (a real node's
`zfs list` at this scale takes minutes). While its full sync runs, a writer process loops
over the writes other xfleet processes make (a lifecycle journal row, a watch heartbeat, a
move's progress), one every 20 ms, each in its own transaction taken with `mirror.begin`, and
records how long each waited for the write lock. Printed side by side, in one run:

- chunked: the sync as shipped (listing spooled, applied ROWS_PER_TRANSACTION rows per
  transaction);
- one transaction: the same sync with the whole apply in one transaction (the listing still
  spooled first; before issue #16 the lock was held for the listing as well).

Target: p99 of the writers' waits <= 1 s. Record the figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xfleet import mirror
from xfleet.fleet.inventory import load
from xfleet.ops.sync import sync

WRITER = r"""
import json, os, sqlite3, sys, time
sys.path.insert(0, sys.argv[3])
from xfleet import mirror
db, stop = sys.argv[1], sys.argv[2]
conn = mirror.connect(db)
conn.execute("INSERT OR IGNORE INTO nodes (name, kind) VALUES ('other', 'sim')")
waits = []
i = 0
while not os.path.exists(stop):
    kind = ("lifecycle", "heartbeat", "move")[i % 3]
    t = time.monotonic()
    mirror.begin(conn, kind)
    waited = time.monotonic() - t
    if kind == "lifecycle":
        conn.execute("INSERT INTO lifecycle_log (at, op, node, argv, ok, source, state) "
                     "VALUES (?, 'snapshot', 'other', '[]', 1, 'bench', 'done')", (time.time(),))
    elif kind == "heartbeat":
        conn.execute("UPDATE nodes SET watch_heartbeat = ? WHERE name = 'other'", (time.time(),))
    else:
        conn.execute("INSERT INTO move_log (move, at, state, message) VALUES (0, ?, 'base', "
                     "'bench')", (time.time(),))
    conn.execute("COMMIT")
    waits.append((kind, waited, t))
    i += 1
    time.sleep(0.02)
print(json.dumps(waits))
"""


def run(workdir: Path, volumes: int, rate: int, chunk: int) -> dict[str, float]:
    inv_path = workdir / f"fleet-{chunk}.yaml"
    db = workdir / f"mirror-{chunk}.db"
    inv_path.write_text(
        f"all:\n  vars:\n    mirror: {db}\n    kind: sim\n    state_dir: state\n"
        f"  hosts:\n    big:\n      sim: {{seed: 7, volumes: {volumes}, "
        f"rows_per_second: {rate}}}\n")
    mirror.connect(db).close()  # created and migrated before the writer starts
    stop = workdir / f"stop-{chunk}"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(stop), str(ROOT)],
                              stdout=subprocess.PIPE, text=True)
    saved = mirror.ROWS_PER_TRANSACTION
    mirror.ROWS_PER_TRANSACTION = chunk
    phases: dict[str, float] = {}

    def progress(node: str, phase: str, count: int) -> None:
        phases.setdefault(phase, time.monotonic())

    t0 = time.monotonic()
    try:
        report = sync(load(inv_path), db, full=True, progress=progress)
    finally:
        mirror.ROWS_PER_TRANSACTION = saved
        stop.touch()
    out, _ = writer.communicate(timeout=120)
    node = report.nodes[0]
    assert node.ok, node.error
    # CLOCK_MONOTONIC is the machine's: the writer's times compare with ours
    start, end = phases.get("writing", t0), phases.get("done", t0)
    applying = sorted(w for _, w, t in json.loads(out) if start <= t <= end)
    waits = sorted(w for _, w, _ in json.loads(out))
    return {
        "rows": node.datasets,
        "sync_s": time.monotonic() - t0,
        "listing_s": start - phases.get("listing", t0),
        "apply_s": end - start,
        "writes": len(waits),
        "in_apply": len(applying),
        "apply_p50_ms": 1000 * statistics.median(applying or [0.0]),
        "apply_p99_ms": 1000 * _p99(applying),
        "all_p99_ms": 1000 * _p99(waits),
        "max_ms": 1000 * waits[-1],
    }


def _p99(values: list[float]) -> float:
    return values[min(len(values) - 1, int(len(values) * 0.99))] if values else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=100_000)
    ap.add_argument("--rows-per-second", type=int, default=40_000)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="xfleet-bench-writers-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# {time.strftime('%Y-%m-%d')} {platform.node()} {platform.machine()} "
          f"{os.cpu_count()} cpus, python {platform.python_version()}; sim node of "
          f"{args.volumes:,} volumes listing {args.rows_per_second:,} rows/s")
    results = {
        f"chunked ({mirror.ROWS_PER_TRANSACTION:,} rows/transaction)":
            run(work, args.volumes, args.rows_per_second, mirror.ROWS_PER_TRANSACTION),
        "one transaction": run(work, args.volumes, args.rows_per_second, 10**12),
    }
    keys = list(next(iter(results.values())))
    print(f"{'':36}" + "".join(f"{k:>13}" for k in keys))
    for name, r in results.items():
        print(f"{name:36}" + "".join(
            f"{r[k]:>13,.0f}" if isinstance(r[k], int) or r[k] >= 100 else f"{r[k]:>13.2f}"
            for k in keys))


if __name__ == "__main__":
    main()
