"""`xfleet serve` on a small and a big simulated fleet, side by side in one run (issue #19).

    .venv/bin/python benchmarks/bench_serve.py [--engine sqlite|postgresql|both] [--quick]
        [--small 1000] [--big 100000] [--nodes 3] [--snapshots 2.5] [--scrapes 30]
        [--requests 200] [--api-rows 1000000] [--workdir DIR]

Two fleets of --nodes simulated nodes (--small and --big volumes per node, --snapshots mean
snapshots per volume: 2.5 puts about 1.06M dataset rows in the big fleet's mirror) are each
synced into a mirror of their own (`xfleet.ops.sync.sync`, in process), then served by a real
`xfleet serve --no-watch` each (a child process on 127.0.0.1:0, stopped by PID at the end, also
on error). Per engine:

1. `/metrics`: 3 warm-ups, then --scrapes scrapes of each server, interleaved (small, big,
   big, small, ...: a busy machine slows both alike), each on a new TCP connection, then on a
   kept-alive one. Printed per fleet: the scrape time (client-side
   wall time of the HTTP GET, connecting included, to the body read) p50/p99/max,
   the server's own `xfleet_serve_collect_duration_seconds` p50/p99, the number of series, the
   size of the answer, the server's RSS (/proc/PID/status VmRSS after the scrapes, and VmHWM),
   with the ratio big/small. Targets (issue #19): the scrape time grows <= 1.5x for 100x the
   datasets (p50 judged); <= 200 ms for the big fleet (3 x 100k volumes: p99 judged; of 30
   scrapes, the p99 is the slowest).
2. The API on a mirror of at least --api-rows dataset rows (the big fleet's if it has that
   many, else a bigger fleet synced for it): p50/p99/max of --requests `GET
   /api/v1/datasets?limit=50` each for the first page (default sort, node), a page about half
   way into the table (its cursor built from the key of the row there, as
   xfleet.serve.api.encode_cursor makes it, and checked against that row), `sort=-used`, and
   `where=used>1G`; on new connections, then back to back on one kept-alive connection (a
   script paging through the API with an HTTP session).

PostgreSQL (--engine postgresql or both) is tests/pgserver.py's server (initdb in a temporary
directory, stopped by PID at the end); each mirror gets `VACUUM ANALYZE` after its sync (what
autovacuum does within a minute of a large ingest). --quick: 100x smaller fleets and
--api-rows, fewer scrapes and requests. Record the figures in docs/benchmarks.md with the date
and the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/pgserver.py: a PostgreSQL server of our own

from benchkit import closing_line, command_line, load_avg, machine_header, stop_pg, working_dir
from pgserver import PgServer
from prometheus_client.parser import text_string_to_metric_families

from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.ops.sync import sync
from xfleet.serve.api import encode_cursor
from xfleet.serve.child import ServeChild, served

ENGINES = ("sqlite", "postgresql")
COLLECT = "xfleet_serve_collect_duration_seconds"
SCRAPE_RATIO_TARGET = 1.5
SCRAPE_MS_TARGET = 200.0
PAGE = 50
START_TIMEOUT = 120.0
HTTP_TIMEOUT = 120.0


# ---------------------------------------------------------------------------------------------
# the machine


def proc_mb(pid: int, field_name: str) -> float:
    """A process's VmRSS or VmHWM from /proc/PID/status, in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0-100): p99 of 30 values is their maximum."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# fleets and their mirrors


@dataclass
class Fleet:
    name: str  # small, big, api
    volumes: int  # per node
    inventory: Path
    where: str  # the mirror: an SQLite path or a postgresql:// URL
    rows: int = 0
    sync_s: float = 0.0


def build_fleet(name: str, volumes: int, args: argparse.Namespace, workdir: Path,
                engine: str, pg: PgServer | None) -> Fleet:
    """Writes the fleet's inventory, syncs it into a mirror of its own (timed), counts its
    rows. PostgreSQL: VACUUM ANALYZE after the sync (not timed)."""
    d = workdir / f"{engine}-{name}"
    d.mkdir(parents=True, exist_ok=True)
    inv = d / "fleet.yaml"
    lines = ["all:", "  vars:", "    mirror: mirror.db", "    state_dir: state",
             "    kind: sim", "  hosts:"]
    for i in range(args.nodes):
        lines += [f"    n{i + 1}:", f"      sim: {{seed: {i + 1}, volumes: {volumes}, "
                  f"snapshots: {args.snapshots}}}"]
    inv.write_text("\n".join(lines) + "\n")
    db = None
    if engine == "postgresql":
        assert pg is not None
        db = pg.new_database(name)
        where = pg.url(db)
    else:
        where = str(d / "mirror.db")
    print(f"  syncing the {name} fleet ({args.nodes} x {volumes:,} volumes) ...", end="",
          flush=True)
    t0 = time.perf_counter()
    report = sync(inventory.load(inv), where)
    seconds = time.perf_counter() - t0
    if not report.ok:
        raise RuntimeError(f"the sync of the {name} fleet failed: "
                           + "; ".join(f"{n.node}: {n.error}" for n in report.nodes
                                       if not n.ok))
    if pg is not None and db is not None:
        pg.psql("VACUUM ANALYZE", database=db)
    conn = mirror.connect(where, readonly=True)
    try:
        rows = int(conn.execute("SELECT count(*) FROM datasets").fetchone()[0])
    finally:
        conn.close()
    print(f" {rows:,} rows in {seconds:.1f} s", flush=True)
    return Fleet(name, volumes, inv, where, rows, seconds)


# ---------------------------------------------------------------------------------------------
# the served process and its client


@dataclass
class Server:
    """A real `xfleet serve --no-watch` process, and the benchmark's HTTP connection to it."""

    fleet: Fleet
    child: ServeChild
    start_s: float = 0.0
    conn: http.client.HTTPConnection | None = None

    def logs(self) -> str:
        return self.child.logs()

    def get(self, path: str, *, keep_alive: bool = False) -> tuple[float, bytes]:
        """GET path: (seconds from connecting or sending the request to the body read, body).
        A new TCP connection per request, or the kept-alive one (as Prometheus scrapes); a
        kept connection the server closed (its keep-alive timeout) is reopened and the request
        timed again."""
        for attempt in (1, 2):
            t0 = time.perf_counter()
            if self.conn is None or not keep_alive:
                if self.conn is not None:
                    self.conn.close()
                self.conn = http.client.HTTPConnection(self.child.host, self.child.port,
                                                       timeout=HTTP_TIMEOUT)
            try:
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                body = r.read()
                seconds = time.perf_counter() - t0
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt == 2 or not keep_alive:
                    raise
                continue
            if not keep_alive:
                self.conn.close()
                self.conn = None
            if r.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {r.status} {body[:500]!r}\n"
                                   f"service log:\n{self.logs()[-3000:]}")
            return seconds, body
        raise AssertionError("unreachable")

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.child.proc

    def rss_mb(self) -> float:
        return proc_mb(self.proc.pid, "VmRSS")

    def hwm_mb(self) -> float:
        return proc_mb(self.proc.pid, "VmHWM")


@contextlib.contextmanager
def serving(fleet: Fleet) -> Iterator[Server]:
    """A real `xfleet serve --no-watch` of the fleet (xfleet.serve.child: stopped by PID at
    the end, SIGKILL after 30 s), timed from its start to listening."""
    t0 = time.perf_counter()
    with served(fleet.inventory, "--no-watch", mirror=fleet.where, cwd=fleet.inventory.parent,
                start_timeout=START_TIMEOUT, stop_timeout=30.0) as child:
        s = Server(fleet, child, start_s=time.perf_counter() - t0)
        try:
            yield s
        finally:
            if s.conn is not None:
                s.conn.close()
                s.conn = None


# ---------------------------------------------------------------------------------------------
# measurements


@dataclass
class Scrapes:
    wall_ms: list[float] = field(default_factory=list)  # a new connection per scrape
    keep_ms: list[float] = field(default_factory=list)  # over a kept-alive connection
    collect_ms: list[float] = field(default_factory=list)
    series: int = 0
    xfleet_series: int = 0
    bytes: int = 0


def read_scrape(body: bytes, into: Scrapes) -> None:
    samples = [s for fam in text_string_to_metric_families(body.decode())
               for s in fam.samples]
    into.series = len(samples)
    into.xfleet_series = sum(1 for s in samples if s.name.startswith("xfleet_"))
    into.bytes = len(body)
    into.collect_ms += [1000 * s.value for s in samples if s.name == COLLECT]


def scrape_interleaved(servers: Sequence[Server], warmups: int, n: int) -> list[Scrapes]:
    """Each round scrapes every server on a new connection, then on its kept-alive one; every
    other round in the reverse order (no server is always the first after a pause)."""
    out = [Scrapes() for _ in servers]
    for _ in range(warmups):
        for s in servers:
            s.get("/metrics")
            s.get("/metrics", keep_alive=True)
    for i in range(n):
        pairs = list(zip(servers, out, strict=True))
        if i % 2:
            pairs.reverse()
        for s, got in pairs:
            seconds, body = s.get("/metrics")
            got.wall_ms.append(1000 * seconds)
            read_scrape(body, got)
        for s, got in pairs:
            seconds, body = s.get("/metrics", keep_alive=True)
            got.keep_ms.append(1000 * seconds)
            read_scrape(body, got)
    return out


def deep_cursor(where: str, offset: int) -> tuple[str, tuple[str, str]]:
    """The `after` cursor of the default sort (node, name) at the row `offset` rows in, and
    the key of the row just after it (the first of the page it opens)."""
    conn = mirror.connect(where, readonly=True)
    try:
        rows = conn.execute("SELECT node, name FROM datasets ORDER BY node, name LIMIT 2 "
                            "OFFSET ?", (offset,)).fetchall()
    finally:
        conn.close()
    if len(rows) < 2:
        raise RuntimeError(f"the mirror has no row {offset + 1:,}")
    return encode_cursor([rows[0][0], rows[0][1]]), (rows[1][0], rows[1][1])


def page(**params: Any) -> str:
    return "/api/v1/datasets?" + urllib.parse.urlencode({"limit": PAGE, **params})


def api_cases(fleet: Fleet) -> tuple[list[tuple[str, str]], tuple[str, str]]:
    """The timed requests (label, path), and the key the deep page must start with."""
    deep = fleet.rows // 2
    cursor, first = deep_cursor(fleet.where, deep)
    return [("first page (sort=node)", page()),
            (f"deep page ({deep:,} rows in, sort=node)", page(after=cursor)),
            ("sort=-used", page(sort="-used")),
            ("where=used>1G", page(where="used>1G"))], first


def check_deep_page(server: Server, path: str, expected: tuple[str, str]) -> None:
    """The built cursor opens the page that starts just after its row."""
    _, body = server.get(path)
    items = json.loads(body)["items"]
    got = (items[0]["node"], items[0]["name"]) if items else None
    if len(items) != PAGE or got != expected:
        raise RuntimeError(f"the deep page starts at {got}, not {expected}")


def api_requests(server: Server, cases: Sequence[tuple[str, str]], n: int
                 ) -> dict[str, tuple[list[float], list[float]]]:
    """Per case: n requests on new connections, then n on a kept-alive one (ms)."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for label, path in cases:
        _, body = server.get(path)  # a warm-up, and the answer checked
        doc = json.loads(body)
        if len(doc["items"]) != PAGE or doc["next"] is None:
            raise RuntimeError(f"GET {path}: {len(doc['items'])} items, next={doc['next']!r}")
        server.get(path, keep_alive=True)
        out[label] = ([1000 * server.get(path)[0] for _ in range(n)],
                      [1000 * server.get(path, keep_alive=True)[0] for _ in range(n)])
    return out


# ---------------------------------------------------------------------------------------------
# printing


class Report:
    """Rows of figures, printed as they come; every figure also lands in `data` (JSON)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}
        self.engine = ""

    def put(self, label: str, **values: Any) -> None:
        self.data.setdefault(self.engine, {})[label] = {
            k: (None if isinstance(v, float) and v != v else v) for k, v in values.items()}


def _fmt(v: float | None, unit: str) -> str:
    if v is None or v != v:
        return "-"
    if unit == "ms":
        return f"{v:,.1f} ms" if v < 100 else f"{v:,.0f} ms"
    if unit == "MB":
        return f"{v:,.0f} MB"
    if unit == "kB":
        return f"{v:,.1f} kB"
    if unit == "s":
        return f"{v:,.1f} s" if v >= 10 else f"{v:,.2f} s"
    return f"{v:,.0f}"


def fleet_row(rep: Report, label: str, small: float, big: float, unit: str,
              target: str = "", verdict: str = "") -> None:
    ratio = big / small if small and small == small and big == big else float("nan")
    rep.put(label, small=small, big=big, ratio=ratio)
    shown = f"{ratio:8.2f}x" if ratio == ratio else f"{'-':>9}"
    print(f"  {label:<46}{_fmt(small, unit):>14}{_fmt(big, unit):>14}{shown}"
          f"  {target:<10}{verdict}", flush=True)


def api_row(rep: Report, label: str, times: Sequence[float], kept: Sequence[float]) -> None:
    p50, p99, worst = percentile(times, 50), percentile(times, 99), max(times)
    k50, k99 = percentile(kept, 50), percentile(kept, 99)
    rep.put("API " + label, p50_ms=p50, p99_ms=p99, max_ms=worst, n=len(times),
            keep_alive_p50_ms=k50, keep_alive_p99_ms=k99)
    print(f"  {label:<40}" + "".join(f"{_fmt(v, 'ms'):>11}" for v in (p50, p99, worst, k50, k99)),
          flush=True)


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


# ---------------------------------------------------------------------------------------------
# the run


def run_engine(args: argparse.Namespace, workdir: Path, engine: str, pg: PgServer | None,
               rep: Report) -> None:
    rep.engine = engine
    print(f"\n== {engine}: {args.nodes} x {args.small:,} vs {args.nodes} x {args.big:,} "
          f"volumes, {args.snapshots:g} snapshots per volume ==", flush=True)
    small = build_fleet("small", args.small, args, workdir, engine, pg)
    big = build_fleet("big", args.big, args, workdir, engine, pg)
    with contextlib.ExitStack() as stack:
        s_small = stack.enter_context(serving(small))
        s_big = stack.enter_context(serving(big))
        got = scrape_interleaved([s_small, s_big], args.warmups, args.scrapes)
        rss = [s.rss_mb() for s in (s_small, s_big)]
        hwm = [s.hwm_mb() for s in (s_small, s_big)]
        a, b = got
        names = f"{args.nodes} x {args.small:,}", f"{args.nodes} x {args.big:,}"
        print(f"\n/metrics: {args.scrapes} scrapes of each server after {args.warmups} "
              "warm-ups, interleaved; a new connection per scrape, and a kept-alive one")
        print(f"  {'':<46}{names[0]:>14}{names[1]:>14}{'big/small':>10}  {'target':<10}")
        fleet_row(rep, "dataset rows in the mirror", small.rows, big.rows, "")
        fleet_row(rep, "sync of the fleet (in process)", small.sync_s, big.sync_s, "s")
        fleet_row(rep, "serve start to listening", s_small.start_s, s_big.start_s, "s")
        p50 = percentile(a.wall_ms, 50), percentile(b.wall_ms, 50)
        p99 = percentile(a.wall_ms, 99), percentile(b.wall_ms, 99)
        k50 = percentile(a.keep_ms, 50), percentile(b.keep_ms, 50)
        k99 = percentile(a.keep_ms, 99), percentile(b.keep_ms, 99)
        ratio_ok = p50[1] / p50[0] <= SCRAPE_RATIO_TARGET
        fleet_row(rep, "scrape time p50 (client: GET, new connection)", *p50, "ms",
                  f"<= {SCRAPE_RATIO_TARGET:g}x", met(ratio_ok))
        fleet_row(rep, "scrape time p99", *p99, "ms", f"<= {SCRAPE_MS_TARGET:g} ms",
                  met(p99[1] <= SCRAPE_MS_TARGET))
        fleet_row(rep, "scrape time max", max(a.wall_ms), max(b.wall_ms), "ms")
        fleet_row(rep, "scrape time p50, kept-alive connection", *k50, "ms")
        fleet_row(rep, "scrape time p99, kept-alive connection", *k99, "ms",
                  f"<= {SCRAPE_MS_TARGET:g} ms", met(k99[1] <= SCRAPE_MS_TARGET))
        fleet_row(rep, f"{COLLECT} p50", percentile(a.collect_ms, 50),
                  percentile(b.collect_ms, 50), "ms")
        fleet_row(rep, f"{COLLECT} p99", percentile(a.collect_ms, 99),
                  percentile(b.collect_ms, 99), "ms")
        fleet_row(rep, "series (samples) in a scrape", a.series, b.series, "")
        fleet_row(rep, "  of which xfleet_*", a.xfleet_series, b.xfleet_series, "")
        fleet_row(rep, "size of a scrape", a.bytes / 1000, b.bytes / 1000, "kB")
        fleet_row(rep, "serve RSS after the scrapes (VmRSS)", rss[0], rss[1], "MB")
        fleet_row(rep, "serve peak RSS so far (VmHWM)", hwm[0], hwm[1], "MB")
        print(f"  targets: scrape time x{p50[1] / p50[0]:.2f} (p50) for "
              f"{big.rows / small.rows:.0f}x the rows ({met(ratio_ok)}, <= "
              f"{SCRAPE_RATIO_TARGET:g}x); at {args.nodes * args.big:,} volumes p99 "
              f"{p99[1]:.1f} ms on a new connection ({met(p99[1] <= SCRAPE_MS_TARGET)}), "
              f"{k99[1]:.1f} ms kept alive ({met(k99[1] <= SCRAPE_MS_TARGET)}, <= "
              f"{SCRAPE_MS_TARGET:g} ms)", flush=True)

        api_server = s_big
        api_fleet = big
        if big.rows < args.api_rows:
            per_volume = big.rows / (args.nodes * args.big)
            volumes = math.ceil(args.api_rows * 1.02 / per_volume / args.nodes)
            print(f"\n  the big fleet has {big.rows:,} rows, under {args.api_rows:,}: a fleet "
                  f"of {args.nodes} x {volumes:,} volumes for the API", flush=True)
            api_fleet = build_fleet("api", volumes, args, workdir, engine, pg)
            api_server = stack.enter_context(serving(api_fleet))
        cases, deep_first = api_cases(api_fleet)
        check_deep_page(api_server, cases[1][1], deep_first)
        print(f"\nAPI: GET /api/v1/datasets?limit={PAGE} on the {api_fleet.rows:,}-row mirror, "
              f"{args.requests} requests each (after one checked warm-up)")
        print(f"  {'':<40}{'new connection per request':>33}{'kept alive':>22}")
        print(f"  {'':<40}" + "".join(f"{h:>11}" for h in ("p50", "p99", "max", "p50", "p99")))
        times = api_requests(api_server, cases, args.requests)
        for label, _path in cases:
            api_row(rep, label, *times[label])
        print("  (kept alive: back to back on one connection, as a script paging with an HTTP "
              "session)")
        after = api_server.rss_mb(), api_server.hwm_mb()
        rep.put("API serve RSS after the requests", rss_mb=after[0], hwm_mb=after[1],
                rows=api_fleet.rows)
        print(f"  serve RSS after the API requests: {after[0]:,.0f} MB (VmHWM "
              f"{after[1]:,.0f} MB)", flush=True)
        pids = [s.proc.pid for s in (s_small, s_big, api_server)]
    alive = [p for p in dict.fromkeys(pids) if _alive(p)]
    print(f"  serve processes (pids {', '.join(str(p) for p in dict.fromkeys(pids))}) "
          f"stopped{'' if not alive else ': NOT ' + str(alive)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--engine", choices=(*ENGINES, "both"), default="sqlite")
    ap.add_argument("--quick", action="store_true",
                    help="100x smaller fleets and --api-rows, fewer scrapes and requests")
    ap.add_argument("--small", type=int, help="volumes per node, small fleet (default 1,000)")
    ap.add_argument("--big", type=int, help="volumes per node, big fleet (default 100,000)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--snapshots", type=float, default=2.5,
                    help="mean snapshots per volume (default 2.5: ~3.5 rows per volume)")
    ap.add_argument("--scrapes", type=int, help="timed scrapes per server (default 30)")
    ap.add_argument("--warmups", type=int, default=3)
    ap.add_argument("--requests", type=int, help="timed API requests per case (default 200)")
    ap.add_argument("--api-rows", type=int,
                    help="dataset rows the API's mirror has at least (default 1,000,000)")
    ap.add_argument("--workdir", type=Path, help="keep the fleets and SQLite mirrors here "
                    "(default: a temporary directory, removed at the end)")
    args = ap.parse_args()
    scale = 100 if args.quick else 1
    args.small = args.small or 1000 // scale
    args.big = args.big or 100_000 // scale
    args.scrapes = args.scrapes or (10 if args.quick else 30)
    args.requests = args.requests or (50 if args.quick else 200)
    args.api_rows = args.api_rows or 1_000_000 // scale
    if min(args.small, args.big, args.nodes, args.scrapes, args.requests) < 1:
        ap.error("sizes and counts must be at least 1")
    engines = ENGINES if args.engine == "both" else (args.engine,)
    t_start = time.monotonic()
    print(machine_header(f"; engine {', '.join(engines)}"))
    print(command_line())
    print(f"# load average before: {load_avg()}", flush=True)
    rep = Report()
    pg: PgServer | None = None
    with working_dir(args.workdir, "xfleet-bench-serve-") as workdir:
        try:
            if "postgresql" in engines:
                pg = PgServer().start()
                print(f"# PostgreSQL {pg.psql('SHOW server_version').split()[0]} "
                      f"(tests/pgserver.py, pid {pg.pid})", flush=True)
            for engine in engines:
                run_engine(args, workdir, engine, pg, rep)
        finally:
            stop_pg(pg)
    print(closing_line(t_start))
    print(json.dumps({"small": args.small, "big": args.big, "nodes": args.nodes,
                      "figures": rep.data}))


if __name__ == "__main__":
    main()
