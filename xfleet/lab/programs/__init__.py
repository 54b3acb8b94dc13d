"""The scripts the lab runs in its VMs, each a real file here (like xfleet/remote/programs/):
`pool.sh` (ensure or recreate the pool), `early.sh` (the first-boot network setup, a template
filled by xfleet/lab/qemu.py), `io_probe.py` and `probe_cleanup.sh` (xfleet/lab/probe.py)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def program_text(name: str) -> str:
    """The text of program `name` (a file in this folder)."""
    return (HERE / name).read_text()
