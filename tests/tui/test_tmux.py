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
from conftest import PATIENCE, wait_for

from xfleet.mirror.backend import Connection


@pytest.fixture(autouse=True)
def _tmux_present() -> None:
    # make test installs tmux (scripts/test-deps.sh); never skip silently
    assert shutil.which("tmux"), "tmux is not installed: run 'make test' (it installs it)"


def _pane(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                          text=True, check=True).stdout


def _keys(session: str, *keys: str) -> None:
    subprocess.run(["tmux", "send-keys", "-t", session, *keys], check=True)


def _wait_for(session: str, *texts: str, timeout: float = PATIENCE) -> str:
    """The pane once every one of `texts` is on it."""
    deadline = time.monotonic() + timeout
    pane = ""
    while time.monotonic() < deadline:
        pane = _pane(session)
        if all(text in pane for text in texts):
            return pane
        time.sleep(0.05)
    raise AssertionError(f"{texts!r} never all appeared; the pane shows:\n{pane}")


def test_tui_in_tmux(fleet: Path, sql: Connection) -> None:
    big = sql.execute("SELECT count(*) FROM datasets WHERE used > ? AND type = 'volume'",
                      (10 << 30,)).fetchone()[0]
    big_n1 = sql.execute("SELECT count(*) FROM datasets WHERE used > ? AND node = 'n1'",
                         (10 << 30,)).fetchone()[0]
    assert big and big_n1
    session = f"xfleet-test-{uuid.uuid4().hex[:8]}"
    code = ("from pathlib import Path; from xfleet.fleet import inventory; "
            "from xfleet.tui import run; "
            f"run(Path({str(fleet / 'mirror.db')!r}), "
            f"inventory=inventory.load({str(fleet / 'fleet.yaml')!r}))")
    # the pane's size is the terminal's: no COLUMNS/LINES from our environment (pytest-xdist
    # workers have COLUMNS=80 LINES=24, which the app would take over the pane's 150x40)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    script = fleet / "run_tui.py"
    script.write_text(code + "\n")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "40",
                    f"{sys.executable} {script}; sleep 30"], check=True, env=env,
                   cwd=Path(__file__).resolve().parents[2])
    try:
        # the header comes before the rows are read: wait for the rows too
        _wait_for(session, "READ-ONLY", "PROD-EU", " n1 ", "STALE")
        # typed fast: every call below is ONE tmux send-keys, so the keys arrive in a single
        # burst, before the app has reacted to the ':' or '/' (or the enter) among them
        _keys(session, ":vols", "Enter", "/used>1T", "Enter")
        pane = _wait_for(session, "0 rows · row 0 · sort node ▲ · filter used>1T",
                         "no rows match the filter 'used>1T'")  # nothing is that big here
        assert "NODE▲" in pane and "USED" in pane
        # ctrl+u in the same burst clears the prefilled filter before the new text
        _keys(session, "/", "C-u", "used>10G type=volume", "Enter")
        # the status line comes before the rows are painted: wait for a row too
        pane = _wait_for(session, f"{big:,} rows · row 1 · sort node ▲ · filter used>10G "
                                  "type=volume", " volume ")
        assert "used>1T" not in pane and "no rows match" not in pane
        _keys(session, "/", "C-u", "used>lots", "Enter")
        # enter on a bad filter keeps the previous one: its rows come back on screen (the
        # message is painted first: under load the pane showed it with the as-you-type
        # preview's "no rows match"; then the status line shows the previous filter again)
        _wait_for(session, "is not a valid value")
        pane = _wait_for(session, " volume ",
                         f"{big:,} rows · row 1 · sort node ▲ · filter used>10G type=volume")
        assert "no rows match" not in pane
        assert "Traceback" not in pane
        # back to the fleet (esc clears the filter, esc again goes back), drill into n1, and
        # filter: the prompt reopens with 'node=n1 ' so what is typed narrows the node's rows
        _keys(session, "Escape", "Escape")
        _wait_for(session, "enter: the node's volumes")
        _keys(session, "Enter", "/used>10G", "Enter")
        pane = _wait_for(session, f"{big_n1:,} rows · row 1 · sort node ▲ · filter node=n1 "
                                  "used>10G")
        assert "n2 " not in pane
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        # (the pane's shell sleeps on)
        wait_for(lambda: "READ-ONLY" not in _pane(session), "q to quit the dashboard")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
