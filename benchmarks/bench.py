"""xfleet benchmarks: figures printed side by side in one run (no timed assertions).

    .venv/bin/python benchmarks/bench.py [--rows 1000000] [--workdir DIR]

1. full-sync ingest of a 1M-row sim node: rows/s of xfleet's ingest vs sqlite3's `.import`
   of the same rows (as TSV) into an equivalent table (same columns and indexes);
2. peak RSS of that sync (in a child process);
3. `xfleet ls --node X --type volume --sort used --limit 50` on the 1M-row mirror: in-process
   and as a cold CLI process;
4. remote commands per node for a full sync.

Record the figures in docs/benchmarks.md with the date and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xfleet import mirror
from xfleet.core.zfs import (
    DATASET_COLUMNS,
    UserProperties,
    parse_get_json,
    zfs_get_user_properties,
    zfs_list,
)
from xfleet.fleet.inventory import load
from xfleet.mirror import query
from xfleet.ops.sync import dataset_rows
from xfleet.remote.host import Host
from xfleet.sim import SimTransport

USER_PROPS = ("xfleet:tenant",)


def sim_volumes_for(rows: int) -> int:
    probe = 2000
    t = SimTransport(Host(name="bench", kind="sim", pools=("tank",), sim={"seed": 7,
                                                                          "volumes": probe}))
    n = sum(1 for _ in t.lines(zfs_list(["tank"], user_properties=USER_PROPS)))
    return max(1, int(rows * probe / n))


def write_inventory(workdir: Path, volumes: int) -> Path:
    inv = workdir / "bench.yaml"
    inv.write_text(
        "all:\n  vars:\n    mirror: bench.db\n    kind: sim\n    state_dir: state\n"
        f"  hosts:\n    big:\n      sim: {{seed: 7, volumes: {volumes}}}\n"
    )
    return inv


def bench_ingest(workdir: Path, volumes: int) -> dict[str, float]:
    host = Host(name="big", kind="sim", pools=("tank",), sim={"seed": 7, "volumes": volumes})
    tsv = workdir / "listing.tsv"
    t0 = time.perf_counter()
    n = 0
    with tsv.open("w") as f:
        for line in SimTransport(host).lines(zfs_list(["tank"], user_properties=USER_PROPS)):
            f.write(line + "\n")
            n += 1
    gen_s = time.perf_counter() - t0

    # sqlite3 .import into an equivalent table: the listing's columns and six indexes like the
    # mirror's (unique name, type+used, used, type+name, partial origin, partial tenant)
    cols = [*DATASET_COLUMNS, "tenant"]
    eq = workdir / "import.db"
    ddl = (
        f"CREATE TABLE datasets ({', '.join(cols)});"
        "CREATE UNIQUE INDEX d_name ON datasets (name);"
        "CREATE INDEX d_type_used ON datasets (type, used);"
        "CREATE INDEX d_used ON datasets (used);"
        "CREATE INDEX d_type_name ON datasets (type, name);"
        "CREATE INDEX d_origin ON datasets (origin) WHERE origin IS NOT NULL;"
        "CREATE INDEX d_tenant ON datasets (tenant) WHERE tenant IS NOT NULL;"
    )
    subprocess.run(["sqlite3", str(eq), "PRAGMA journal_mode=WAL;" + ddl], check=True,
                   capture_output=True)
    t0 = time.perf_counter()
    subprocess.run(["sqlite3", str(eq)], input=f".mode tabs\n.import {tsv} datasets\n",
                   text=True, check=True, capture_output=True)
    import_s = time.perf_counter() - t0

    # the user properties as a full sync reads them (zfs get -j of the set values, parsed)
    t0 = time.perf_counter()
    values = UserProperties()
    for rec in parse_get_json(SimTransport(host).lines(
            zfs_get_user_properties(USER_PROPS, ["tank"], recursive=True))):
        values.add(rec)
    props_s = time.perf_counter() - t0

    # xfleet's ingest (parse, inheritance resolved per row, executemany upsert in one
    # transaction) of the same rows: the native columns, as sync lists them
    db = workdir / "ingest.db"
    conn = mirror.connect(db)
    conn.execute("BEGIN IMMEDIATE")
    t0 = time.perf_counter()
    with tsv.open() as f:
        rows = dataset_rows((line.rstrip("\n").rsplit("\t", 1)[0] for line in f), "big", 1,
                            values.effective, "xfleet:tenant", time.time())
        written = mirror.write_datasets(conn, rows)
    conn.execute("COMMIT")
    ingest_s = time.perf_counter() - t0
    conn.close()
    assert written == n
    return {"rows": n, "sim_generate_s": gen_s, "sqlite_import_s": import_s,
            "props_s": props_s, "props_set": len(values),
            "xfleet_ingest_s": ingest_s, "import_rows_per_s": n / import_s,
            "xfleet_rows_per_s": n / ingest_s, "ratio": import_s / ingest_s}


def bench_sync(workdir: Path, inv: Path) -> dict[str, float]:
    """A full sync through the CLI in a child process: wall time, peak RSS, commands."""
    (workdir / "bench.db").unlink(missing_ok=True)
    # the child reports its own peak RSS (RUSAGE_CHILDREN would also count sqlite3 .import)
    child = (
        "import resource, sys\n"
        "from xfleet.cli import main\n"
        "try:\n    main(sys.argv[1:])\n"
        "finally:\n"
        "    sys.stderr.write(f'RSS_KB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n')\n"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", child, "-i", str(inv), "sync", "--json"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    rss_kb = int(out.stderr.rsplit("RSS_KB=", 1)[1].split()[0])
    report = json.loads(out.stdout)
    node = report["nodes"][0]
    return {"sync_wall_s": wall, "rows": node["datasets"], "rows_per_s": node["datasets"] / wall,
            "peak_rss_mb": rss_kb / 1024, "commands_per_node": node["commands"]}


def bench_ls(workdir: Path, inv: Path) -> dict[str, float]:
    db = workdir / "bench.db"
    conn = mirror.connect(db, readonly=True)
    sel = query.Selection(nodes=["big"], types=["volume"], sort="used", limit=50)
    best = float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        rows = list(query.ls(conn, sel))
        best = min(best, time.perf_counter() - t0)
    assert len(rows) == 50
    conn.close()
    cli = [sys.executable, "-m", "xfleet", "-i", str(inv), "ls", "--node", "big", "--type",
           "volume", "--sort", "used", "--limit", "50"]
    cold = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(cli, capture_output=True, check=True, cwd=ROOT)
        cold.append(time.perf_counter() - t0)
    bare = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t0)
    return {"ls_in_process_ms": best * 1000, "ls_cold_cli_ms": min(cold) * 1000,
            "python_startup_ms": min(bare) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="xfleet-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if not shutil.which("sqlite3"):
        sys.exit("the benchmark needs the sqlite3 command-line shell (apt-get install sqlite3)")
    volumes = sim_volumes_for(args.rows)
    inv = write_inventory(workdir, volumes)
    load(inv)
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    print(f"sim node: {volumes} volumes\n")
    ing = bench_ingest(workdir, volumes)
    print("1. ingest of the same rows")
    print(f"   rows                      {ing['rows']:>12,}")
    print(f"   sqlite3 .import           {ing['sqlite_import_s']:>10.2f} s "
          f"{ing['import_rows_per_s']:>12,.0f} rows/s")
    print(f"   xfleet ingest             {ing['xfleet_ingest_s']:>10.2f} s "
          f"{ing['xfleet_rows_per_s']:>12,.0f} rows/s")
    print(f"   ratio xfleet/.import      {ing['ratio']:>10.2f}   (target >= 0.6)")
    print(f"   (sim generation alone     {ing['sim_generate_s']:>10.2f} s)")
    print(f"   zfs get -j: set values    {ing['props_set']:>12,}   read and parsed in "
          f"{ing['props_s']:.2f} s (sim generation included)")
    syn = bench_sync(workdir, inv)
    print("2. full sync of the sim node (CLI, child process)")
    print(f"   wall                      {syn['sync_wall_s']:>10.2f} s "
          f"{syn['rows_per_s']:>12,.0f} rows/s (incl. simulator)")
    print(f"   peak RSS                  {syn['peak_rss_mb']:>10.0f} MB   (target <= 300)")
    print(f"   remote commands per node  {syn['commands_per_node']:>10}")
    ls = bench_ls(workdir, inv)
    print("3. ls --node big --type volume --sort used --limit 50")
    print(f"   in process                {ls['ls_in_process_ms']:>10.1f} ms  (target <= 50)")
    print(f"   cold CLI process          {ls['ls_cold_cli_ms']:>10.0f} ms  (target <= 400)")
    print(f"   (bare python startup      {ls['python_startup_ms']:>10.0f} ms)")
    print(json.dumps({"ingest": ing, "sync": syn, "ls": ls}, default=float))


if __name__ == "__main__":
    main()
