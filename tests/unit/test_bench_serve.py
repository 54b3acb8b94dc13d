"""benchmarks/bench_serve.py (issue #19) runs end to end in its smallest size, on both engines:
the figures of both fleets side by side, the API's, and its serve processes and PostgreSQL
server stopped afterwards."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet (pg_ctl daemonizes the server)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_bench_serve_smoke(tmp_path: Path) -> None:
    # --api-rows above the big fleet's rows: the API's own bigger fleet is built as well
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_serve.py"), "--quick", "--engine",
         "both", "--small", "5", "--big", "300", "--scrapes", "4", "--warmups", "1",
         "--requests", "5", "--api-rows", "4000", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    for label in ("== sqlite:", "== postgresql:", "/metrics: 4 scrapes",
                  "scrape time p50 (client: GET, new connection)", "scrape time p99",
                  "scrape time p50, kept-alive connection",
                  "xfleet_serve_collect_duration_seconds p50", "series (samples) in a scrape",
                  "serve RSS after the scrapes (VmRSS)", "targets: scrape time",
                  "under 4,000: a fleet of 3 x", "API: GET /api/v1/datasets?limit=50",
                  "first page (sort=node)", "deep page (", "sort=-used", "where=used>1G",
                  "serve RSS after the API requests"):
        assert label in text, (label, text)
    doc = json.loads(text.splitlines()[-1])
    for engine in ("sqlite", "postgresql"):
        figures = doc["figures"][engine]
        rows = figures["dataset rows in the mirror"]
        assert 0 < rows["small"] < rows["big"], rows
        for key in ("scrape time p50 (client: GET, new connection)",
                    "scrape time p99, kept-alive connection",
                    "xfleet_serve_collect_duration_seconds p50",
                    "serve RSS after the scrapes (VmRSS)"):
            assert figures[key]["small"] > 0 and figures[key]["big"] > 0, (engine, key)
        # bounded cardinality: the same series at 60x the volumes
        series = figures["series (samples) in a scrape"]
        assert series["small"] == series["big"] > 0, series
        api = figures["API serve RSS after the requests"]
        assert api["rows"] >= 4000, api
        for case in ("first page (sort=node)", "sort=-used", "where=used>1G"):
            assert figures["API " + case]["p50_ms"] > 0, (engine, case)
            assert figures["API " + case]["n"] == 5
    # every serve process and the PostgreSQL server are gone
    pids = [int(p) for m in re.finditer(r"serve processes \(pids ([\d, ]+)\) stopped\n", text)
            for p in m.group(1).split(", ")]
    assert len(pids) == 6, text  # small, big and the API's fleet, per engine
    stopped = re.search(r"PostgreSQL server \(pid (\d+)\) stopped", text)
    assert stopped is not None, text
    for pid in [*pids, int(stopped.group(1))]:
        assert _gone(pid), pid
