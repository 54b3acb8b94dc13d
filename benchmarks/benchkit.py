"""What the benchmarks that print a machine header and may run a PostgreSQL server share
(bench_engines.py, bench_serve.py): the machine as a header line, the load average, the
working directory (temporary unless --workdir, removed at the end) and the PostgreSQL
server's teardown, and the closing line with the load after and the run's time."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgserver import PgServer  # tests/pgserver.py (the benchmarks put tests/ on sys.path)


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def mem_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def machine_header(extra: str) -> str:
    """`# DATE HOST: N cores (CPU), M GiB, Python X, SQLite Y` and `extra` (", PostgreSQL 16"
    or "; engine sqlite"): what docs/benchmarks.md records with the figures."""
    return (f"# {time.strftime('%Y-%m-%d %H:%M %Z')} {platform.node()}: {os.cpu_count()} "
            f"cores ({cpu_model()}), {mem_gib():.0f} GiB, Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}{extra}")


def command_line() -> str:
    return f"# command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}"


@contextlib.contextmanager
def working_dir(keep: Path | None, prefix: str) -> Iterator[Path]:
    """`keep` (--workdir), or a temporary directory removed at the end, also on error."""
    d = keep or Path(tempfile.mkdtemp(prefix=prefix))
    d.mkdir(parents=True, exist_ok=True)
    try:
        yield d
    finally:
        if keep is None:
            shutil.rmtree(d, ignore_errors=True)


def stop_pg(pg: PgServer | None) -> None:
    """Stop the benchmark's PostgreSQL server (by PID), and say so."""
    if pg is not None:
        pid = pg.pid
        pg.stop()
        print(f"# PostgreSQL server (pid {pid}) stopped")


def closing_line(t_start: float) -> str:
    """The load average after, and how long the run took since `t_start` (time.monotonic)."""
    return (f"\n# load average after: {load_avg()}; the run took "
            f"{time.monotonic() - t_start:.0f} s")
