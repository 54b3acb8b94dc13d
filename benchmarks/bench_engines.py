"""The mirror on SQLite and on PostgreSQL, side by side in one run (issue #18).

    .venv/bin/python benchmarks/bench_engines.py [--rows 1000000] [--quick] [--readers 10]
        [--pg-set NAME=VALUE ...] [--no-sync] [--ingest-only] [--workdir DIR]

Every figure is measured on both engines, one after the other, with the same rows, and printed
side by side with the ratio PostgreSQL / SQLite (of times: below 1 means PostgreSQL is faster):

1. full-sync ingest of --rows dataset rows (tuples in mirror.DATASET_TABLE_COLUMNS order, as a
   full sync's row builder yields them: numbers as text) through xfleet's real ingest path,
   `mirror.write_datasets_chunked` (SQLite: executemany in transactions of
   ROWS_PER_TRANSACTION rows; PostgreSQL: COPY into a staging table, one upsert transaction):
   into a fresh mirror, then again into the mirror that has them (what every later full sync
   does), then two more nodes of --rows rows each (the mirror grows to 3 x --rows);
2. `xfleet --mirror M ls --sort used --limit 50` on the 3 x --rows mirror: the CLI as a
   subprocess (median and max of several runs) and the query in process (query.ls, what the
   command runs);
3. --readers reader processes (each: the `ls --sort used --limit 50` query and a `SELECT ...
   FROM nodes`, in a loop with a short pause) while a full ingest of --rows rows runs into the
   3 x --rows mirror: the longest single query and the p99 (target: longest <= 100 ms);
4. an end-to-end full sync of a simulated node of about --rows rows into a fresh mirror (the
   code `xfleet sync --full` runs, in a child process), split into listing (the simulator
   generating, spooled) and writing (--no-sync skips it).

PostgreSQL is a server of its own (tests/pgserver.py, initdb in a temporary directory, stopped
by PID at the end, also on error), with the durability of SQLite's mirror settings (WAL,
synchronous=NORMAL: a crash of the machine may lose the last commits, never corrupt):
fsync=on, synchronous_commit=off, full_page_writes=on; the rest as initdb leaves it
(--pg-set adds settings, e.g. --pg-set shared_buffers=1GB). --quick: 10x smaller sizes.
Record the figures in docs/benchmarks.md with the date and the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/pgserver.py: a PostgreSQL server of our own

from benchkit import closing_line, load_avg, machine_header, stop_pg, working_dir
from pgserver import PgServer, _bin

from xfleet import mirror
from xfleet.mirror import query

ENGINES = ("sqlite", "postgresql")
# The durability of SQLite's mirror (WAL, synchronous=NORMAL): commits survive a crash of the
# process; a crash of the machine may lose the last ones, never corrupts.
PG_SETTINGS = {"fsync": "on", "synchronous_commit": "off", "full_page_writes": "on"}
PG_SHOWN = ("shared_buffers", "max_wal_size", "checkpoint_timeout", "wal_level",
            "work_mem", "maintenance_work_mem", "autovacuum")


class BenchPg(PgServer):
    """tests/pgserver.py's server with durable settings (the tests run it with fsync=off)."""

    def __init__(self, settings: dict[str, str]) -> None:
        super().__init__()
        self.settings = settings

    def start(self) -> BenchPg:
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                  "--locale", "C", "--no-sync", "-A", "trust")
        (self.data / "pg_hba.conf").write_text("local all all trust\n")
        options = f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 " + " ".join(
            f"-c {k}={v}" for k, v in self.settings.items())
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
                  "-w", "-t", "60", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self


# ---------------------------------------------------------------------------------------------
# rows: deterministic, fast, shaped like a simulated node's (tenants of 100 volumes, 0-2
# snapshots per volume, a clone every 25 volumes), values as text like sync's row builder


def _mix(x: int) -> int:
    """A 64-bit hash of x (splitmix64's finalizer): deterministic pseudo-random values."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


BLOCKS = ("8192", "16384", "65536", "16384")
COMPRESSIONS = ("lz4", "lz4", "lz4", "zstd", "gzip-9", "off")
RATIOS = ("1.00", "1.37", "1.60", "2.00", "2.62", "1.25")


def dataset_rows(node: str, count: int, synced_at: float, run: int) -> Iterator[tuple[Any, ...]]:
    """`count` rows of node `node` in DATASET_TABLE_COLUMNS order, in `zfs list` order."""
    n = 0
    tenant = -1
    v = 0
    last_snap: str | None = None
    while n < count:
        t = v // 100
        if t != tenant:
            tenant = t
            tname = f"t{t:04d}"
            root = f"tank/{tname}"
            h = _mix(t + 7_000_000)
            yield (node, "tank", root, "filesystem", str(h), str(1000 + t), None,
                   str(1_700_000_000 + t), None, None, str(h % (1 << 44)), "98304",
                   str(h % (1 << 45)), "43008", "0", "0", "0", "98304", "lz4", "1.60", "1.00",
                   tname, None, synced_at, run)
            n += 1
            if n >= count:
                return
        h = _mix(v)
        vol = f"{root}/vol-{v:06d}"
        volsize = (1 + h % 32) << 30
        used = h % volsize
        ci = (h >> 8) % 6
        clone = v % 25 == 24 and last_snap is not None
        yield (node, "tank", vol, "volume", str(_mix(h)), str(3_000_000 + 7 * v),
               last_snap if clone else None, str(1_730_000_000 + 37 * v), str(volsize),
               BLOCKS[(h >> 4) % 4], str(used), str(used * 7 // 8), str(used * 3 // 2),
               str(used * 21 // 16), str(used // 9), "0", "0", str(used // 5),
               COMPRESSIONS[ci], RATIOS[ci], RATIOS[ci], tname, None, synced_at, run)
        n += 1
        for k in range((h >> 12) % 3):
            if n >= count:
                return
            snap = f"{vol}@auto-202604{28 + k:02d}-{(h >> 16) % 24:02d}00"
            s_used = (h >> (20 + k)) % (used + 1) // 8
            yield (node, "tank", snap, "snapshot", str(_mix(h + k + 1)),
                   str(12_000_000 + 17 * v + k), None, str(1_777_000_000 + 86400 * k + v),
                   str(volsize), None, str(s_used), str(used * 3 // 4), None,
                   str(used * 9 // 8), None, None, None, str(s_used * 2), None,
                   RATIOS[ci], RATIOS[ci], tname, None, synced_at, run)
            n += 1
            last_snap = snap
        v += 1


# ---------------------------------------------------------------------------------------------
# measurements


def ingest(where: str, rows: Sequence[tuple[Any, ...]], what: str) -> dict[str, float]:
    """Rows through write_datasets_chunked, as a full sync writes them. PostgreSQL: also the
    COPY part (its on_batch ticks while COPY streams, then once after the upsert)."""
    conn = mirror.connect(where)
    ticks: list[float] = []
    try:
        t0 = time.perf_counter()
        n = mirror.write_datasets_chunked(conn, rows, what=what,
                                          on_batch=lambda _c: ticks.append(time.perf_counter()))
        seconds = time.perf_counter() - t0
    finally:
        conn.close()
    assert n == len(rows), (n, len(rows))
    out = {"s": seconds, "rows_per_s": n / seconds}
    if where.startswith("postgresql://") and len(ticks) >= 2:
        out["copy_s"] = ticks[-2] - t0
        out["upsert_s"] = ticks[-1] - ticks[-2]
    return out


def add_nodes(where: str, nodes: Sequence[str]) -> None:
    conn = mirror.connect(where)
    try:
        with mirror.transaction(conn, "the benchmark's nodes"):
            for name in nodes:
                mirror.upsert_node(conn, name, "sim", None, {"zone": "a"}, ["bench"])
    finally:
        conn.close()


def mirror_size(where: str) -> int:
    if where.startswith("postgresql://"):
        conn = mirror.connect(where, readonly=True)
        try:
            return int(conn.execute("SELECT pg_database_size(current_database())")
                       .fetchone()[0])
        finally:
            conn.close()
    return sum(p.stat().st_size for p in Path(where).parent.glob(Path(where).name + "*"))


def ls_in_process(where: str, reps: int) -> dict[str, float]:
    conn = mirror.connect(where, readonly=True)
    sel = query.Selection(sort="used", limit=50)
    times = []
    try:
        for _ in range(reps):
            t0 = time.perf_counter()
            rows = list(query.ls(conn, sel))
            times.append(time.perf_counter() - t0)
    finally:
        conn.close()
    assert len(rows) == 50
    return {"first_ms": 1000 * times[0], "median_ms": 1000 * statistics.median(times[1:]),
            "max_ms": 1000 * max(times[1:])}


def ls_cli(where: str, reps: int) -> dict[str, float]:
    argv = [sys.executable, "-m", "xfleet", "--mirror", where, "ls", "--sort", "used",
            "--limit", "50"]
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
        assert "tank/" in out.stdout, out.stdout[:500]
    return {"median_ms": 1000 * statistics.median(times), "max_ms": 1000 * max(times)}


READER = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[4])
from xfleet import mirror
from xfleet.mirror import query
where, stop, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
conn = mirror.connect(where, readonly=True)
sel = query.Selection(sort="used", limit=50)
def ls():
    assert len(list(query.ls(conn, sel))) == 50
def nodes():
    conn.execute("SELECT name, kind, stale, last_success, datasets FROM nodes "
                 "ORDER BY name").fetchall()
ls(); nodes()
print("ready", flush=True)
out = []
while not os.path.exists(stop):
    for kind, fn in (("ls", ls), ("nodes", nodes)):
        t = time.monotonic()
        fn()
        out.append((kind, t, time.monotonic() - t))
    time.sleep(pause)
conn.close()
print(json.dumps(out))
"""


def _p99(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * 0.99))] if s else float("nan")


def readers_during_ingest(where: str, rows: Sequence[tuple[Any, ...]], readers: int,
                          pause: float, idle: float, workdir: Path, tag: str
                          ) -> dict[str, float]:
    """`readers` processes query in a loop: `idle` seconds at rest, then while the rows are
    ingested. The longest query and the p99 during the ingest, and at rest."""
    stop = workdir / f"stop-{tag}"
    stop.unlink(missing_ok=True)
    procs = [subprocess.Popen([sys.executable, "-c", READER, where, str(stop), str(pause),
                               str(ROOT)], stdout=subprocess.PIPE, text=True)
             for _ in range(readers)]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"a reader did not start (it printed {line!r})")
        time.sleep(idle)
        start = time.monotonic()
        got = ingest(where, rows, "the readers' full sync")
        end = time.monotonic()
    finally:
        stop.touch()
        outs = [p.communicate(timeout=120)[0] for p in procs]
    during: list[float] = []
    at_rest: list[float] = []
    for out in outs:
        for _kind, t, d in json.loads(out.splitlines()[-1]):
            if t <= end and t + d >= start:
                during.append(d)
            elif t + d < start:
                at_rest.append(d)
    return {"ingest_s": got["s"], "queries": len(during),
            "max_ms": 1000 * max(during) if during else float("nan"),
            "p99_ms": 1000 * _p99(during),
            "median_ms": 1000 * statistics.median(during) if during else float("nan"),
            "rest_p99_ms": 1000 * _p99(at_rest),
            "rest_max_ms": 1000 * max(at_rest) if at_rest else float("nan")}


SYNC_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[3])
t0 = time.monotonic()
from xfleet.fleet.inventory import load
from xfleet.mirror.backend import location
from xfleet.ops.sync import sync
phases = {}
def progress(node, phase, count):
    phases.setdefault(phase, time.monotonic())
report = sync(load(sys.argv[1]), location(sys.argv[2]), full=True, progress=progress)
end = time.monotonic()
node = report.nodes[0]
assert node.ok, node.error
print(json.dumps({"rows": node.datasets, "total_s": end - t0,
                  "listing_s": phases["writing"] - phases["listing"],
                  "writing_s": phases["done"] - phases["writing"]}))
"""


def sim_volumes_for(rows: int) -> int:
    """Volumes of a simulated node whose full listing has about `rows` rows."""
    from xfleet.core.zfs import zfs_list
    from xfleet.remote.host import Host
    from xfleet.sim import SimTransport

    probe = 2000
    t = SimTransport(Host(name="probe", kind="sim", pools=("tank",),
                          sim={"seed": 7, "volumes": probe}))
    n = sum(1 for _ in t.lines(zfs_list(["tank"])))
    return max(1, round(rows * probe / n))


def full_sync(where: str, inv: Path) -> dict[str, float]:
    """The full sync `xfleet sync --full` runs, in a child process (imports included)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", SYNC_CHILD, str(inv), where, str(ROOT)],
                         capture_output=True, text=True, check=True, cwd=inv.parent)
    wall = time.perf_counter() - t0
    got: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    got["wall_s"] = wall
    return got


# ---------------------------------------------------------------------------------------------
# the run


class Table:
    """Figures of both engines, printed side by side with the ratio PostgreSQL / SQLite."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, float]] = {}
        self.prefix = ""
        self.top = ""

    def section(self, title: str) -> None:
        self.prefix = title.split(".", 1)[0] + ". "
        print(f"\n{title}", flush=True)

    def header(self) -> None:
        print(f"  {'':<52}{'SQLite':>14}{'PostgreSQL':>14}{'pg/sqlite':>11}")

    def row(self, label: str, sqlite_v: float | None, pg_v: float | None, unit: str,
            note: str = "", *, ratio: bool = True) -> None:
        if not label.startswith(" "):
            self.top = label
        key = self.prefix + (f"{self.top}: {label.strip()}" if label.startswith(" ") else label)
        self.data[key] = {"sqlite": _num(sqlite_v), "postgresql": _num(pg_v)}
        shown = (f"{pg_v / sqlite_v:11.2f}" if ratio and sqlite_v and pg_v is not None
                 and sqlite_v == sqlite_v and pg_v == pg_v else f"{'-':>11}")
        print(f"  {label:<52}{_fmt(sqlite_v, unit):>14}{_fmt(pg_v, unit):>14}{shown}"
              f"{'  ' + note if note else ''}", flush=True)


def _num(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def _fmt(v: float | None, unit: str) -> str:
    if v is None or v != v:
        return "-"
    if unit == "rows":
        return f"{v:,.0f}"
    if unit == "MB":
        return f"{v:,.0f} MB"
    if unit == "ms":
        return f"{v:,.1f} ms" if v < 100 else f"{v:,.0f} ms"
    return f"{v:,.2f} {unit}"


def run(args: argparse.Namespace, workdir: Path, pg: BenchPg) -> Table:
    rows_n: int = args.rows
    tab = Table()
    pg_db = pg.new_database("bench")
    url = {"sqlite": str(workdir / "mirror.db"), "postgresql": pg.url(pg_db)}
    nodes = ("n1", "n2", "n3")
    for where in url.values():
        add_nodes(where, nodes)

    tab.header()
    tab.section(f"1. full-sync ingest through mirror.write_datasets_chunked ({rows_n:,} rows "
                "per node)")
    t0 = time.perf_counter()
    rows = list(dataset_rows("n1", rows_n, time.time(), 1))
    gen_s = time.perf_counter() - t0
    fresh = {e: ingest(w, rows, "the listing of n1") for e, w in url.items()}
    tab.row("into a fresh mirror", fresh["sqlite"]["s"], fresh["postgresql"]["s"], "s")
    tab.row("  rows/s", fresh["sqlite"]["rows_per_s"], fresh["postgresql"]["rows_per_s"],
            "rows", ratio=False)
    tab.row("  of which COPY into the staging table", None,
            fresh["postgresql"].get("copy_s"), "s")
    tab.row("  of which the upsert transaction", None, fresh["postgresql"].get("upsert_s"), "s")
    rows = list(dataset_rows("n1", rows_n, time.time(), 2))
    again = {e: ingest(w, rows, "the listing of n1") for e, w in url.items()}
    tab.row("again, into the mirror that has them (upsert)", again["sqlite"]["s"],
            again["postgresql"]["s"], "s")
    tab.row("  of which COPY into the staging table", None,
            again["postgresql"].get("copy_s"), "s")
    tab.row("  of which the upsert transaction", None, again["postgresql"].get("upsert_s"), "s")
    grow: dict[str, list[float]] = {e: [] for e in url}
    for run_id, node in enumerate(nodes[1:], 3):
        rows = list(dataset_rows(node, rows_n, time.time(), run_id))
        for e, w in url.items():
            grow[e].append(ingest(w, rows, f"the listing of {node}")["s"])
    tab.row(f"new node into a {rows_n // 1000:,}k-row mirror", grow["sqlite"][0],
            grow["postgresql"][0], "s")
    tab.row(f"new node into a {2 * rows_n // 1000:,}k-row mirror", grow["sqlite"][1],
            grow["postgresql"][1], "s")
    del rows
    sizes = {e: mirror_size(w) / 1e6 for e, w in url.items()}
    tab.row(f"mirror size, {3 * rows_n:,} rows", sizes["sqlite"], sizes["postgresql"], "MB")
    print(f"  (generating each node's {rows_n:,} rows, not timed above: {gen_s:.2f} s)")
    if args.ingest_only:
        return tab

    tab.section(f"2. ls --sort used --limit 50 on the {3 * rows_n:,}-row mirror")
    cli = {e: ls_cli(w, args.ls_reps) for e, w in url.items()}
    inproc = {e: ls_in_process(w, 21) for e, w in url.items()}
    tab.row(f"xfleet --mirror M ls ... (CLI process), median of {args.ls_reps}",
            cli["sqlite"]["median_ms"], cli["postgresql"]["median_ms"], "ms")
    tab.row("  max", cli["sqlite"]["max_ms"], cli["postgresql"]["max_ms"], "ms")
    tab.row("query.ls in process, first (new connection)", inproc["sqlite"]["first_ms"],
            inproc["postgresql"]["first_ms"], "ms")
    tab.row("  then median of 20", inproc["sqlite"]["median_ms"],
            inproc["postgresql"]["median_ms"], "ms")
    tab.row("  max", inproc["sqlite"]["max_ms"], inproc["postgresql"]["max_ms"], "ms")
    t0 = time.perf_counter()
    pg.psql("VACUUM ANALYZE datasets", database=pg_db)
    vac_s = time.perf_counter() - t0
    after = ls_in_process(url["postgresql"], 21)
    tab.row("  PostgreSQL after VACUUM ANALYZE datasets: median", None, after["median_ms"],
            "ms", f"(VACUUM ANALYZE took {vac_s:.1f} s)")

    tab.section(f"3. {args.readers} readers (ls --sort used --limit 50, SELECT ... FROM nodes, "
                f"{1000 * args.pause:.0f} ms pause) during a full ingest of {rows_n:,} rows")
    rows = list(dataset_rows("n1", rows_n, time.time(), 10))
    rd = {e: readers_during_ingest(w, rows, args.readers, args.pause, args.idle, workdir, e)
          for e, w in url.items()}
    del rows
    tab.row("ingest with the readers running", rd["sqlite"]["ingest_s"],
            rd["postgresql"]["ingest_s"], "s")
    tab.row("reader queries during the ingest", rd["sqlite"]["queries"],
            rd["postgresql"]["queries"], "rows", ratio=False)
    tab.row("longest single query (target <= 100 ms)", rd["sqlite"]["max_ms"],
            rd["postgresql"]["max_ms"], "ms")
    tab.row("p99", rd["sqlite"]["p99_ms"], rd["postgresql"]["p99_ms"], "ms")
    tab.row("median", rd["sqlite"]["median_ms"], rd["postgresql"]["median_ms"], "ms")
    tab.row(f"at rest ({args.idle:g} s before the ingest): p99", rd["sqlite"]["rest_p99_ms"],
            rd["postgresql"]["rest_p99_ms"], "ms")
    tab.row("at rest: longest", rd["sqlite"]["rest_max_ms"], rd["postgresql"]["rest_max_ms"],
            "ms")

    if not args.no_sync:
        volumes = sim_volumes_for(rows_n)
        inv = workdir / "sim.yaml"
        inv.write_text("all:\n  vars:\n    mirror: unused.db\n    kind: sim\n"
                       f"    state_dir: state\n  hosts:\n    big:\n      sim: "
                       f"{{seed: 7, volumes: {volumes}}}\n")
        fresh_at = {"sqlite": str(workdir / "sync.db"), "postgresql": pg.database("sync")}
        syn = {e: full_sync(w, inv) for e, w in fresh_at.items()}
        tab.section(f"4. full sync of a simulated node ({volumes:,} volumes, "
                    f"{int(syn['sqlite']['rows']):,} rows) into a fresh mirror, child process")
        tab.row("wall (imports, simulator, spool, write)", syn["sqlite"]["wall_s"],
                syn["postgresql"]["wall_s"], "s")
        tab.row("  listing (the simulator generating, spooled)", syn["sqlite"]["listing_s"],
                syn["postgresql"]["listing_s"], "s")
        tab.row("  writing (rows built from the spool, ingest, finish)",
                syn["sqlite"]["writing_s"], syn["postgresql"]["writing_s"], "s")
    return tab


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, help="rows per node (default 1,000,000; --quick 100,000)")
    ap.add_argument("--quick", action="store_true", help="10x smaller sizes, fewer repetitions")
    ap.add_argument("--readers", type=int, default=10)
    ap.add_argument("--pause", type=float, default=0.05,
                    help="seconds each reader sleeps between rounds (default 0.05)")
    ap.add_argument("--pg-set", action="append", default=[], metavar="NAME=VALUE",
                    help="a PostgreSQL setting on top of the durable defaults")
    ap.add_argument("--no-sync", action="store_true", help="skip the simulated full sync")
    ap.add_argument("--ingest-only", action="store_true", help="only the ingest figures (1.)")
    ap.add_argument("--workdir", type=Path, help="keep the SQLite files here (default: a "
                    "temporary directory, removed at the end)")
    args = ap.parse_args()
    if args.rows is None:
        args.rows = 100_000 if args.quick else 1_000_000
    args.ls_reps = 3 if args.quick else 7
    args.idle = 0.5 if args.quick else 3.0
    settings = dict(PG_SETTINGS)
    for kv in args.pg_set:
        k, sep, v = kv.partition("=")
        if not sep:
            ap.error(f"--pg-set {kv!r}: NAME=VALUE")
        settings[k] = v
    t_start = time.monotonic()
    load_before = load_avg()
    pg = BenchPg(settings)
    with working_dir(args.workdir, "xfleet-bench-engines-") as workdir:
        try:
            pg.start()
            version = pg.psql("SHOW server_version")
            shown = {k: pg.psql(f"SHOW {k}") for k in (*settings, *PG_SHOWN)}
            print(machine_header(f", PostgreSQL {version.split()[0]}"))
            print(f"# PostgreSQL: {', '.join(f'{k}={v}' for k, v in shown.items())}")
            print(f"# SQLite: journal_mode=WAL, synchronous=NORMAL, cache_size=64 MiB per "
                  f"connection; {mirror.ROWS_PER_TRANSACTION:,} rows per transaction")
            print(f"# load average before: {load_before}", flush=True)
            tab = run(args, workdir, pg)
        finally:
            stop_pg(pg)
    print(closing_line(t_start))
    print(json.dumps({"rows": args.rows, "figures": tab.data}, default=float))


if __name__ == "__main__":
    main()
