"""`xfleet serve` as a child process (xfleet/serve/child.py): started, found listening, stopped
by PID; a child that exits first is an error that shows its log."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from conftest import PATIENCE

from unit.serve.servekit import synced_fleet
from xfleet.serve.child import served, spawn


def test_a_served_child_listens_and_is_stopped_on_the_way_out(tmp_path: Path) -> None:
    db = str(tmp_path / "mirror.db")
    inv = synced_fleet(tmp_path, db, n1=5)
    with served(inv, "--no-watch", mirror=db, start_timeout=PATIENCE) as child:
        assert child.url == f"http://{child.host}:{child.port}" and child.port > 0
        with urllib.request.urlopen(child.url + "/healthz", timeout=PATIENCE) as r:
            assert r.status == 200
    assert child.proc.returncode is not None


def test_a_child_that_exits_before_listening_shows_its_log(tmp_path: Path) -> None:
    child = spawn(tmp_path / "no-such-inventory.yaml", "--no-watch")
    try:
        with pytest.raises(RuntimeError, match="exited") as e:
            child.wait_listening(PATIENCE)
        assert "no-such-inventory.yaml" in str(e.value)
    finally:
        child.stop(PATIENCE)
