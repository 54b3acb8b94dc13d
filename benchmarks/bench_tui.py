"""The TUI on a million-row mirror, driven headless with Textual's Pilot (figures, no asserts).

    .venv/bin/python benchmarks/bench_tui.py [--rows 1000000] [--workdir DIR] [--mirror DB]
                                             [--indexes]

Builds (or reuses) a 1M-row sim mirror in a child process, then in a fresh child process per
configuration measures:

1. first paint of the volumes view: from creating the app to the first screen with rows;
2. sort keystroke -> redrawn screen (median, max) over the sort keys;
3. filter keystroke -> redrawn screen (median, max), typing filters one character at a time;
4. page-down -> redrawn screen (median, max);
5. peak RSS of the TUI process.

`--indexes` also runs on a copy of the mirror with paging.PROPOSED_INDEXES (the sort indexes
proposed for schema v2), side by side with the mirror as it is (schema v1).
Targets (issue 4): first paint <= 0.5 s, sort/filter keystroke <= 100 ms median,
page-down <= 50 ms, RSS <= 250 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SORT_KEYS = ["U", "U", "N", "Z", "O", "R", "X", "E", "T", "C", "A", "O"]
FILTERS = ["vol-0001", "used>10G", "compression=off", "node=big t0001"]


async def _measure(db: Path) -> dict[str, Any]:
    from xfleet.tui.app import XfleetApp
    from xfleet.tui.table import VirtualTable

    displayed: list[float] = []  # perf_counter() after each composited screen update

    async def settle(pilot: Any, table: VirtualTable, gen: int | None) -> float:
        """Wait until the table has its new rows and a screen update that includes them was
        composited; return the time of that update. (Pilot's own idle waits after a key are
        not part of the figure: the clock stops at the redraw.)"""
        for _ in range(40000):
            if (gen is None or table.generation != gen) and not table.busy:
                break
            await asyncio.sleep(0.0002)
        for _ in range(40000):
            done = [t for t in displayed if t >= table.changed_at]
            if done:
                return done[0]
            await asyncio.sleep(0.0002)
        return time.perf_counter()

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    app = XfleetApp(db, start="vols", poll_seconds=0)
    original = app._display

    def display(screen: Any, renderable: Any) -> None:
        original(screen, renderable)
        if renderable is not None:
            displayed.append(time.perf_counter())

    app._display = display  # type: ignore[method-assign]
    async with app.run_test(size=(200, 50)) as pilot:
        table = app.screen.query_one(VirtualTable)
        while not table.rows:
            await asyncio.sleep(0.001)
        out["first_paint_s"] = await settle(pilot, table, None) - t0

        sort_ms = []
        for key in SORT_KEYS:
            gen = table.generation
            t = time.perf_counter()
            await pilot.press(key)
            sort_ms.append((key, (await settle(pilot, table, gen) - t) * 1000))
            await pilot.pause()
        out["sort_ms"] = sort_ms

        filter_ms = []
        for text in FILTERS:
            await pilot.press("slash")
            await pilot.press("ctrl+u")  # clear the prompt
            await pilot.pause()
            for ch in text:
                gen = table.generation
                t = time.perf_counter()
                await pilot.press("space" if ch == " " else ch)
                if table.busy or table.generation != gen:  # the text parsed: a re-read
                    filter_ms.append((await settle(pilot, table, gen) - t) * 1000)
                await pilot.pause()
            await pilot.press("enter")
            await settle(pilot, table, None)
            out.setdefault("filter_rows", {})[text] = len(table.rows)
        out["filter_ms"] = filter_ms
        await pilot.press("escape")  # clear the filter
        await settle(pilot, table, None)

        for key in ("O",) if table.sort.column != "node" else ():
            await pilot.press(key)
            await settle(pilot, table, None)
        page_ms = []
        for _ in range(60):
            gen = table.generation
            t = time.perf_counter()
            await pilot.press("pagedown")
            page_ms.append((await settle(pilot, table, gen) - t) * 1000)
            await pilot.pause()
        out["pagedown_ms"] = page_ms
        out["rows_paged"] = table.position_label()
        gen = table.generation
        t = time.perf_counter()
        await pilot.press("end")
        out["end_ms"] = (await settle(pilot, table, gen) - t) * 1000
        out["buffer_rows"] = len(table.rows)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _child(db: str) -> None:
    print(json.dumps(asyncio.run(_measure(Path(db)))))


def _run(db: Path) -> dict[str, Any]:
    p = subprocess.run([sys.executable, __file__, "--child", str(db)], capture_output=True,
                       text=True, cwd=ROOT)
    if p.returncode:
        sys.exit(f"benchmark child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _build(workdir: Path, rows: int) -> Path:
    import bench  # benchmarks/bench.py: sizes a sim node to N rows

    db = workdir / "bench.db"
    if db.exists():
        return db
    volumes = bench.sim_volumes_for(rows)
    inv = bench.write_inventory(workdir, volumes)
    print(f"building a {rows:,}-row sim mirror ({volumes:,} volumes) in {workdir} …",
          flush=True)
    subprocess.run([sys.executable, "-m", "xfleet", "-i", str(inv), "sync"], check=True,
                   cwd=ROOT, capture_output=True)
    return db


def _with_indexes(db: Path) -> Path:
    from xfleet.mirror.paging import PROPOSED_INDEXES

    copy = db.with_name(db.stem + "-indexed.db")
    if not copy.exists():
        src = sqlite3.connect(db)
        dst = sqlite3.connect(copy)
        src.backup(dst)
        src.close()
        t = time.perf_counter()
        for ddl in PROPOSED_INDEXES.values():
            dst.execute(ddl)
        dst.commit()
        print(f"   (creating {len(PROPOSED_INDEXES)} proposed indexes took "
              f"{time.perf_counter() - t:.1f} s)")
        dst.close()
    return copy


def _fmt(name: str, r: dict[str, Any]) -> list[str]:
    def med(xs: list[float]) -> str:
        return f"{statistics.median(xs):7.1f} ms median, {max(xs):7.1f} ms max"

    sorts = [ms for _, ms in r["sort_ms"]]
    return [
        f"{name}",
        f"   first paint (volumes)     {r['first_paint_s'] * 1000:7.0f} ms   (target <= 500)",
        f"   sort keystroke            {med(sorts)}   (target <= 100 median)",
        "     per key: " + ", ".join(f"{k} {ms:.0f}" for k, ms in r["sort_ms"]),
        f"   filter keystroke          {med(r['filter_ms'])}   (target <= 100 median)",
        f"   page-down                 {med(r['pagedown_ms'])}   (target <= 50)",
        f"   end (last row)            {r['end_ms']:7.1f} ms",
        f"   peak RSS                  {r['peak_rss_mb']:7.0f} MB   (target <= 250)",
        f"   rows in memory at the end {r['buffer_rows']:7d}",
    ]


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--mirror", type=Path, help="use this mirror instead of building one")
    ap.add_argument("--indexes", action="store_true",
                    help="also measure with the proposed sort indexes (on a copy)")
    args = ap.parse_args()
    if args.mirror:
        db = args.mirror
    else:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="xfleet-bench-tui-"))
        workdir.mkdir(parents=True, exist_ok=True)
        db = _build(workdir, args.rows)
    n = sqlite3.connect(db).execute("SELECT count(*) FROM datasets").fetchone()[0]
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    print(f"mirror: {db} ({n:,} rows, {db.stat().st_size / 2**20:.0f} MB)\n")
    results = {"schema v1 indexes": _run(db)}
    for line in _fmt("1. the mirror as it is (schema v1 indexes)", results["schema v1 indexes"]):
        print(line)
    if args.indexes:
        idx = _with_indexes(db)
        results["proposed indexes"] = _run(idx)
        for line in _fmt("2. with paging.PROPOSED_INDEXES", results["proposed indexes"]):
            print(line)
    print(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
