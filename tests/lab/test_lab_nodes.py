"""The lab itself: status, pinned SSH, the private node-to-node link, reset."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from xfleet.lab import reset, ssh_argv, status

from .labkit import Lab

pytestmark = pytest.mark.lab


def test_status_reports_both_nodes_with_openzfs_2_3(lab: Lab) -> None:
    rows = {s.name: s for s in status(state_dir=lab.state_dir)}
    assert set(rows) == {"lab1", "lab2"}
    for s in rows.values():
        assert s.running and s.reachable, s
        assert s.pools == {"tank": "ONLINE"}
        assert s.zfs_version and s.zfs_version.startswith("zfs-2.3."), s.zfs_version


def test_ssh_argv_uses_the_pinned_key(lab: Lab, tmp_path: Path) -> None:
    argv = ssh_argv("lab1", state_dir=lab.state_dir)
    out = subprocess.run([*argv, "hostname"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "lab1", out.stderr

    # the same argv with a known_hosts file holding another key for lab1 is refused
    other = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    fake = tmp_path / "known_hosts"
    fake.write_text("lab1 " + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
    bad = [a.replace(str(lab.state.known_hosts), str(fake)) for a in argv]
    assert bad != argv
    out = subprocess.run([*bad, "hostname"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 255
    assert "host key" in out.stderr.lower() or "HOST IDENTIFICATION" in out.stderr


def test_private_link_between_nodes(lab: Lab) -> None:
    assert "10.77.0.11/24" in lab.run("lab1", ["ip", "-br", "addr", "show", "br0"]).stdout
    out = lab.run("lab1", ["ping", "-c", "2", "-W", "3", "10.77.0.12"], check=False)
    assert out.ok, out.stdout + out.stderr
    out = lab.run("lab2", ["ping", "-c", "2", "-W", "3", "10.77.0.11"], check=False)
    assert out.ok, out.stdout + out.stderr


def test_reset_empties_the_pools_in_seconds(lab: Lab) -> None:
    lab.run("lab1", ["zfs", "create", "-s", "-V", "8M", "tank/to be gone"])
    t = time.monotonic()
    reset(state_dir=lab.state_dir)
    took = time.monotonic() - t
    for node in ("lab1", "lab2"):
        names = lab.run(node, ["zfs", "list", "-H", "-o", "name", "-t", "all"]).stdout.split("\n")
        assert [n for n in names if n] == ["tank"]
        events = lab.run(node, ["zpool", "events", "-H", "-v"]).stdout
        assert "to be gone" not in events  # the event queue was cleared too
    assert took < 60, f"reset took {took:.0f}s"
