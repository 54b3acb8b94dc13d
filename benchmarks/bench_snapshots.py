"""Snapshot policies at scale on the simulator (issue #20): the plan's time on a mirror of
--volumes volumes with --snapshots policy snapshots each, and what one round costs over the
transport.

    .venv/bin/python benchmarks/bench_snapshots.py [--volumes 100000] [--snapshots 30]
        [--quick] [--workdir DIR]

1. plan: a simulated node of --volumes volumes synced into a SQLite mirror, then --snapshots
   snapshots of the policy per volume written into the mirror (one INSERT ... SELECT per
   snapshot time: the plan reads the mirror only, so the node need not have them); the time
   of `snapshots.plan` (what `xfleet snapshots plan` runs: the due volumes counted per pool,
   every snapshot streamed through the retention) and of `apply.prune`'s planning (the same
   read, the prune list built) with its count;
2. round: `run.run_policies` (what `xfleet snapshots run` runs) on a fresh node of --volumes
   volumes: a first round (every volume due: every snapshot is taken), then a round in which
   only 40 volumes of a second policy are due; per round the remote commands, the bytes the
   commands' argv would send over SSH (the command lines, quoted), the bytes received (the
   re-fetch's listings) and the seconds.

SQLite only: the plan is the same SQL on PostgreSQL (docs/mirror.md), not measured here.
--quick: 10x smaller. Record the figures in docs/benchmarks.md with the date and the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchkit import closing_line, command_line, load_avg, machine_header, working_dir

from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.mirror.backend import location
from xfleet.ops.snapshots import apply, run
from xfleet.ops.snapshots.plan import plan
from xfleet.ops.snapshots.policy import parse_policies
from xfleet.ops.sync import sync
from xfleet.remote.transport import quote_command

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
HOUR = 3600
POLICY = """\
policies:
  - name: few
    match: {name: "tank/sched/*"}
    schedule: {every: 1h}
    keep: {frequently: 2}
  - name: hot
    schedule: {every: 1h}
    keep: {hourly: 24, daily: 7}
"""


def fleet(d: Path, volumes: int) -> inventory.Inventory:
    d.mkdir(parents=True, exist_ok=True)
    (d / "fleet.yaml").write_text(
        "all:\n  vars: {mirror: m.db, state_dir: st, kind: sim}\n  hosts:\n"
        f"    n1: {{sim: {{seed: 1, volumes: {volumes}}}}}\n")
    return inventory.load(d / "fleet.yaml")


def bench_plan(d: Path, volumes: int, snapshots: int) -> None:
    inv = fleet(d, volumes)
    t = time.monotonic()
    assert sync(inv).ok
    synced = time.monotonic() - t
    ps = parse_policies(POLICY)
    hot = ps.policies[1]
    conn = mirror.connect(inv.mirror)
    try:
        t = time.monotonic()
        cols = ("node, pool, name, type, creation, used, referenced, synced_at, sync_run")
        for k in range(snapshots):  # hourly, the newest an hour before T0
            at = T0 - (snapshots - k) * HOUR
            with mirror.transaction(conn, "benchmark snapshots"):
                conn.execute(
                    f"INSERT INTO datasets ({cols}) SELECT node, pool, name || ?, 'snapshot', "
                    "?, 65536, referenced, synced_at, sync_run FROM datasets WHERE "
                    "type = 'volume'", ("@" + hot.snapshot_name(at), int(at)))
        written = time.monotonic() - t
        rows = conn.execute("SELECT count(*) FROM datasets").fetchone()[0]
        print(f"mirror: {volumes:,} volumes synced in {synced:.1f} s; {snapshots} snapshots "
              f"per volume written in {written:.1f} s; {rows:,} rows")
        t = time.monotonic()
        p = plan(conn, ps, now=T0, inventory=inv)
        planned = time.monotonic() - t
        due = sum(x.due for x in p.pools)
        prune = sum(x.prune for x in p.pools)
        print(f"plan (xfleet snapshots plan): {planned:.1f} s; {due:,} due, {prune:,} to "
              f"prune of {sum(x.snapshots for x in p.pools):,} ({planned / volumes * 1e6:.0f} "
              "us per volume)")
        t = time.monotonic()
        pr = apply.prune(conn, ps, inventory=inv, max_prune=10_000_000)
        pruned = time.monotonic() - t
        print(f"prune plan (apply.prune, no holds read): {pruned:.1f} s; {len(pr.destroyed):,} "
              f"snapshots in {len(pr.commands):,} zfs destroy command(s)")
    finally:
        conn.close()


def bench_round(d: Path, volumes: int) -> None:
    inv = fleet(d, volumes)
    ps = parse_policies(POLICY)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        tr = conns.get("n1")
        tr.run(["zfs", "create", "tank/sched"])
        for i in range(40):
            tr.run(["zfs", "create", "-s", "-V", "1G", f"tank/sched/v{i:02d}"])
        assert sync(inv).ok
        for label, now, only in (("every volume due", T0, None),
                                 ("40 volumes due", T0 + HOUR, "few")):
            chosen = ps if only is None else parse_policies(POLICY.split("  - name: hot")[0])
            n0, r0, h0 = tr.commands, tr.received, len(tr.history)
            t = time.monotonic()
            res = run.run_policies(inv, location(inv.mirror), conns, chosen, now=now)
            took = time.monotonic() - t
            assert res.ok, res.to_dict()
            sent = sum(len(quote_command(a)) + 1 for a in tr.history[h0:])
            kinds: dict[str, int] = {}
            for a in tr.history[h0:]:
                argv = a[2:] if a[0] == "env" else a  # env LC_ALL=C.UTF-8 zfs ...
                key = " ".join(argv[:2])
                kinds[key] = kinds.get(key, 0) + 1
            print(f"round, {label}: {res.taken:,} taken in {took:.1f} s; "
                  f"{tr.commands - n0} remote commands ({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))}); "  # noqa: E501
                  f"{sent:,} bytes sent (argv), {tr.received - r0:,} bytes received")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--volumes", type=int, default=100_000)
    ap.add_argument("--snapshots", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="10x smaller")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    volumes = args.volumes // 10 if args.quick else args.volumes
    started = time.monotonic()
    print(machine_header("; engine sqlite"))
    print(command_line())
    print(f"# load average before: {load_avg()}")
    with working_dir(args.workdir, "xfleet-bench-snapshots-") as d:
        bench_plan(d / "plan", volumes, args.snapshots)
        bench_round(d / "round", volumes)
    print(closing_line(started))


if __name__ == "__main__":
    main()
