"""The simulator's per-command cost on a node whose overlay holds many records (what 100k
received volumes or a round's snapshots leave there): a mutation must cost what it changes,
not the overlay's size, or N receives cost O(N^2) (xfleet/sim/overlay.py: copy-on-write
records, the tenant index kept up to date instead of rebuilt).

    .venv/bin/python benchmarks/bench_sim_overlay.py [--records 10000,50000,200000]
        [--volumes 2000]

For each --records: a simulated node (1,000 generated volumes, its state in a temporary
directory, as the tests' nodes keep it) gets --volumes new volumes under tank/bench, one
`zfs create` each, then snapshots of all of them, one `zfs snapshot` of --volumes names per
command, up to --records; then 20 single-snapshot `zfs snapshot` commands (a mutation) and 20
`zfs get` of one of the volumes (a read), each timed; the medians are printed. The overlay's
record count is checked: the script exits 1 if it is wrong.

The code measured is the `xfleet` on the path: to compare with an older commit, extract its
package and put it first, e.g. `git archive 39700f8~1 xfleet | tar -x -C /tmp/old` then
`PYTHONPATH=/tmp/old .venv/bin/python benchmarks/bench_sim_overlay.py`. Record the figures in
docs/benchmarks.md with the date and the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from xfleet.remote.host import Host
from xfleet.sim import SimTransport


def measure(records: int, volumes: int) -> tuple[int, float, float, float]:
    """(overlay records, seconds to put them there, median seconds of one `zfs snapshot`,
    of one `zfs get`) on a fresh node."""
    with tempfile.TemporaryDirectory() as state:
        t = SimTransport(Host(name="n1", kind="sim", pools=("tank",),
                              sim={"seed": 1, "volumes": 1000}), state_dir=Path(state))
        t.run(["zfs", "create", "-p", "tank/bench"])
        names = [f"tank/bench/v{i:05d}" for i in range(volumes)]
        t0 = time.perf_counter()
        for v in names:
            t.run(["zfs", "create", "-s", "-V", "1G", v])
        snaps = [f"{v}@s{k:05d}" for k in range(records // volumes) for v in names]
        for i in range(0, len(snaps), volumes):  # one snapshot per volume and command
            t.run(["zfs", "snapshot", *snaps[i:i + volumes]])
        build = time.perf_counter() - t0
        held = len(t.current_overlay().records)
        mutation, read = [], []
        for k in range(20):
            a = time.perf_counter()
            t.run(["zfs", "snapshot", f"{names[k]}@m{k}"])
            b = time.perf_counter()
            t.run(["zfs", "get", "-H", "-o", "value", "used", names[k]])
            read.append(time.perf_counter() - b)
            mutation.append(b - a)
        return held, build, statistics.median(mutation), statistics.median(read)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", default="10000,50000,200000",
                    help="overlay sizes to measure, comma-separated")
    ap.add_argument("--volumes", type=int, default=2000)
    args = ap.parse_args(argv)
    wrong = 0
    print(f"{'records':>8} {'in overlay':>10} {'build s':>8} {'zfs snapshot ms':>16} "
          f"{'zfs get ms':>11}")
    for records in (int(x) for x in args.records.split(",")):
        held, build, mutation, read = measure(records, args.volumes)
        # the volumes, tank/bench and the snapshots
        expect = args.volumes + 1 + records // args.volumes * args.volumes
        if held != expect:
            print(f"overlay holds {held} records, expected {expect}", file=sys.stderr)
            wrong += 1
        print(f"{records:>8} {held:>10} {build:>8.1f} {mutation * 1000:>16.1f} "
              f"{read * 1000:>11.1f}", flush=True)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
