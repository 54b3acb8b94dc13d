"""benchmarks/bench_engines.py (issue #18) runs end to end in its smallest size: both engines'
figures side by side, and its PostgreSQL server stopped afterwards."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_engines_smoke(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_engines.py"), "--rows", "2000",
         "--quick", "--readers", "3", "--pause", "0.005", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "SQLite" in text and "PostgreSQL" in text and "pg/sqlite" in text
    for section in ("1. full-sync ingest", "2. ls --sort used --limit 50",
                    "3. 3 readers", "4. full sync of a simulated node"):
        assert section in text, text
    figures = json.loads(text.splitlines()[-1])["figures"]
    for key in ("1. into a fresh mirror", "1. again, into the mirror that has them (upsert)",
                "2. xfleet --mirror M ls ... (CLI process), median of 3",
                "2. query.ls in process, first (new connection)",
                "4. wall (imports, simulator, spool, write)"):
        both = figures[key]
        assert both["sqlite"] > 0 and both["postgresql"] > 0, (key, both)
    # the readers' figures exist for both engines (a 2,000-row ingest is short: a reader's
    # query may not overlap it, so only the ingest time must be a number)
    readers = figures["3. ingest with the readers running"]
    assert not math.isnan(readers["sqlite"]) and not math.isnan(readers["postgresql"])
    assert "3. longest single query (target <= 100 ms)" in figures
    assert (tmp_path / "mirror.db").exists()
    # the benchmark's own PostgreSQL server is gone
    stopped = re.search(r"PostgreSQL server \(pid (\d+)\) stopped", text)
    assert stopped is not None, text
    pid = int(stopped.group(1))
    try:  # gone, or a zombie nobody reaped yet (its parent is init: pg_ctl daemonizes it)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return
    assert "(postgres)" not in stat or stat.rsplit(")", 1)[1].split()[0] == "Z", stat
