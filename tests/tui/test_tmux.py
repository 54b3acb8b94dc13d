"""The real dashboard in a real terminal (tmux): keys in, what a person sees out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _tmux_present() -> None:
    # make test installs tmux (scripts/test-deps.sh); never skip silently
    assert shutil.which("tmux"), "tmux is not installed: run 'make test' (it installs it)"


def _pane(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                          text=True, check=True).stdout


def _keys(session: str, *keys: str) -> None:
    subprocess.run(["tmux", "send-keys", "-t", session, *keys], check=True)


def _wait_for(session: str, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    pane = ""
    while time.monotonic() < deadline:
        pane = _pane(session)
        if text in pane:
            return pane
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared; the pane shows:\n{pane}")


def test_tui_in_tmux(fleet: Path) -> None:
    session = f"xfleet-test-{uuid.uuid4().hex[:8]}"
    code = ("from pathlib import Path; from xfleet import inventory; from xfleet.tui import run; "
            f"run(Path({str(fleet / 'mirror.db')!r}), "
            f"inventory=inventory.load({str(fleet / 'fleet.yaml')!r}))")
    env = {**os.environ, "TERM": "xterm-256color"}
    script = fleet / "run_tui.py"
    script.write_text(code + "\n")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "40",
                    f"{sys.executable} {script}; sleep 30"], check=True, env=env,
                   cwd=Path(__file__).resolve().parents[2])
    try:
        pane = _wait_for(session, "READ-ONLY")
        assert "PROD-EU" in pane and "n1" in pane and "STALE" in pane
        # a person sees the prompt open before typing into it (keys sent in the same burst as
        # ':' are routed before the prompt has focus)
        _keys(session, ":")
        _wait_for(session, "nodes | vols")
        _keys(session, "vols", "Enter")
        _wait_for(session, "sort node")  # the volumes view is up (status line)
        _keys(session, "/")
        _wait_for(session, "COLUMN OP VALUE")
        _keys(session, "used>10G type=volume")
        _wait_for(session, "filter used>10G type=volume")
        _keys(session, "Enter")
        pane = _wait_for(session, "filter used>10G type=volume")
        assert "rows" in pane and "USED" in pane
        _keys(session, "/")
        _wait_for(session, "filter used>10G type=volume")
        time.sleep(0.3)
        _keys(session, "C-u")
        time.sleep(0.3)
        _keys(session, "used>lots")
        _wait_for(session, "is not a valid value")
        _keys(session, "Enter")
        time.sleep(0.5)
        pane = _wait_for(session, "is not a valid value")
        assert "Traceback" not in pane
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            alive = "READ-ONLY" in _pane(session)
            if not alive:
                break
            time.sleep(0.1)
        assert not alive, "q did not quit the dashboard"  # (the pane's shell sleeps on)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
