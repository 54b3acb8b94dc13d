"""benchmarks/bench_sim_overlay.py runs end to end in a small size: one row per overlay size,
the records it put there checked (exit 0)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_sim_overlay_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_sim_overlay.py"), "--records",
         "400,800", "--volumes", "40"], capture_output=True, text=True, timeout=120,
        check=False, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    # records asked, in the overlay (the 40 volumes, tank/bench and the snapshots), 3 timings
    assert [r[:2] for r in rows] == [["400", "441"], ["800", "841"]], out.stdout
    assert all(len(r) == 5 and all(float(x) >= 0 for x in r[2:]) for r in rows), out.stdout
