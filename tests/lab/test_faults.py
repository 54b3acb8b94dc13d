"""Faults against the real lab: a changed host key is refused; a node killed mid-sync is
reported failed and stale and keeps its previous rows in the mirror."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from xfleet.lab import kill_node

from .labkit import TENANT, Lab, mirror_rows

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def baseline(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~120 datasets on lab2 (so its `zfs list` takes seconds under TCG), a few on lab1,
    and one successful sync of both into a fresh mirror."""
    lab.run("lab1", ["zfs", "create", "-s", "-V", "16M", "-o", f"{TENANT}=one", "tank/a vol"])
    lab.run("lab2", ["zfs", "create", "-o", f"{TENANT}=many", "tank/f"])
    lab.run("lab2", ["sh", "-c",
                     'for i in $(seq 40); do zfs create -s -V 8M "tank/f/v:$i"; done'],
            timeout=300)
    lab.run("lab2", ["zfs", "snapshot", "-r", "tank/f@a"])
    lab.run("lab2", ["zfs", "snapshot", "-r", "tank/f@b.2"])
    db = tmp_path_factory.mktemp("faults") / "lab.db"
    res = lab.xfleet("sync", "--json", mirror=db)
    assert res.code == 0, res.explain()
    assert len(mirror_rows(db, "lab2")) >= 120
    return db


def node_report(report: dict[str, Any], node: str) -> dict[str, Any]:
    for entry in report["nodes"]:
        if entry["node"] == node:
            return dict(entry)
    raise AssertionError(f"{node} missing from the sync report: {report}")


def test_changed_host_key_is_refused(lab: Lab, baseline: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True)
    wrong = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    text = lab.inventory.read_text()
    right = next(n.host_key for n in lab.state.nodes if n.name == "lab1")
    assert right in text
    bad_inv = tmp_path / "lab-wrong-key.yaml"
    bad_inv.write_text(text.replace(right, wrong, 1).replace("../.xfleet/lab.db", "lab.db"))

    # fresh mirror: nothing may be written for lab1
    fresh = tmp_path / "fresh.db"
    res = lab.xfleet("sync", "--node", "lab1", "--json", inventory=bad_inv, mirror=fresh)
    assert res.code != 0, f"sync with a wrong pinned host key succeeded: {res.out}"
    entry = node_report(res.json(), "lab1")
    assert entry["ok"] is False
    assert "host key" in json.dumps(entry).lower(), entry
    if fresh.exists():
        assert mirror_rows(fresh, "lab1") == []

    # existing mirror: lab1's rows are kept, untouched
    before = mirror_rows(baseline, "lab1")
    res = lab.xfleet("sync", "--node", "lab1", "--json", inventory=bad_inv, mirror=baseline)
    assert res.code != 0, res.explain()
    assert mirror_rows(baseline, "lab1") == before


def _wait_for_remote_zfs_list(lab: Lab, node: str, deadline: float) -> bool:
    """True once `zfs list` (xfleet's sync) runs on the node."""
    while time.monotonic() < deadline:
        r = lab.run(node, ["pgrep", "-f", "^zfs list"], check=False, timeout=10)
        if r.ok:
            return True
        time.sleep(0.05)
    return False


def test_node_killed_mid_sync_is_failed_and_stale_and_keeps_rows(
    lab: Lab, baseline: Path
) -> None:
    before = mirror_rows(baseline, "lab2")
    assert before
    # a full listing (seconds on lab2 under TCG) is what gets cut; an incremental sync of an
    # unchanged node is two quick commands
    with lab.running_xfleet("sync", "--full", "--json", mirror=baseline) as proc:
        seen = _wait_for_remote_zfs_list(lab, "lab2", time.monotonic() + 60)
        assert proc.poll() is None, "sync finished before lab2 could be killed"
        assert seen, "xfleet's zfs list never showed up on lab2"
        assert kill_node("lab2", state_dir=lab.state_dir)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, f"exit {proc.returncode}\n{out}\n{err}"
    report = json.loads(out)
    assert report["ok"] is False
    assert node_report(report, "lab1")["ok"] is True, report
    failed = node_report(report, "lab2")
    assert failed["ok"] is False and failed["error"], failed

    assert mirror_rows(baseline, "lab2") == before  # previous rows kept
    conn = sqlite3.connect(baseline)
    stale, last_error = conn.execute(
        "SELECT stale, last_error FROM nodes WHERE name = 'lab2'").fetchone()
    lab1_stale = conn.execute("SELECT stale FROM nodes WHERE name = 'lab1'").fetchone()[0]
    conn.close()
    assert stale == 1 and last_error
    assert lab1_stale == 0

    # and the CLI still reads the kept rows, without contacting any node
    res = lab.xfleet("ls", "--node", "lab2", "--json", mirror=baseline)
    assert res.code == 0, res.explain()
    assert len(res.json()) == len(before)
