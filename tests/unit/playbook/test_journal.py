"""The run journal: a failed step stops the run and --resume skips finished steps, a changed
playbook is refused, and a SIGKILLed run resumes without acting twice (the journal's tests on
both engines of the mirror, recording who ran them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, wait_for

from unit.playbook.plays import Fleet, play_file, write
from xfleet import mirror, playbook
from xfleet.fleet.connections import Connections
from xfleet.mirror.backend import ERRORS
from xfleet.ops.sync import sync


def test_failed_step_stops_the_run_and_resume_skips_finished_steps(fleet_at: Fleet,
                                                                  tmp_path: Path) -> None:
    inv, _, t = fleet_at
    text = """
steps:
  - snapshot: {targets: [tank/acme/db], name: one}
  - assert:
      that: "(SELECT count(*) FROM datasets WHERE name = 'tank/acme/go') = 1"
      message: not yet
  - snapshot: {targets: [tank/acme/db], name: two}
"""
    path = write(tmp_path, text)
    first = play_file(inv, path)
    assert first.state == "failed" and first.steps[1].error == "not yet"
    conn = mirror.connect(inv.mirror)
    assert conn.execute("SELECT state FROM play_runs").fetchone()[0] == "failed"
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/acme/go"])
    assert sync(inv, nodes=["n1"]).ok
    pb = playbook.load(path)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        again = playbook.play(inv, inv.mirror, pb, conns, resume=first.run_id)
        assert again.ok and [s.state for s in again.steps] == ["resumed", "done", "done"]
        with pytest.raises(playbook.PlaybookError, match="done already"):
            playbook.play(inv, inv.mirror, pb, conns, resume=first.run_id)
    snaps = conn.execute("SELECT argv FROM lifecycle_log WHERE op = 'snapshot'").fetchall()
    assert len(snaps) == 2  # @one once, then @two


def test_resume_refuses_a_changed_playbook(fleet: Fleet, tmp_path: Path) -> None:
    inv, _, _ = fleet
    path = write(tmp_path, "- assert: {that: \"0\", message: stop}\n")
    first = play_file(inv, path)
    assert first.state == "failed"
    path.write_text("- sync: {}\n")
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns, \
            pytest.raises(playbook.PlaybookError, match="changed since run"):
        playbook.play(inv, inv.mirror, playbook.load(path), conns, resume=first.run_id)


def test_sigkilled_run_resumes(fleet_at: Fleet, tmp_path: Path) -> None:
    inv, inv_path, t = fleet_at
    path = write(tmp_path, """
steps:
  - snapshot: {targets: [tank/acme/db], name: before}
  - wait:
      that: "(SELECT count(*) FROM datasets WHERE name = 'tank/acme/go') > 0"
      sync: [n1]
      interval: 0.2
      timeout: 300
  - clone: {source: tank/acme/db@before, target: tank/acme/db-after}
""")
    env = {**os.environ, "COLUMNS": "200", "XFLEET_OPERATOR": "alice"}
    env.pop("XFLEET_MIRROR", None)
    proc = subprocess.Popen([sys.executable, "-m", "xfleet", "-i", str(inv_path), "--reason",
                             "INC-42", "play", str(path)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conn = mirror.connect(inv.mirror)

    def step_state() -> str | None:
        try:
            row = conn.execute("SELECT state FROM play_steps WHERE run = 1 AND idx = 1"
                               ).fetchone()
        except ERRORS:  # the play has not created its tables yet
            return None
        return row[0] if row else None

    wait_for(lambda: step_state() == "running", "the wait step to run", timeout=120)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    run = conn.execute("SELECT state, pid FROM play_runs WHERE id = 1").fetchone()
    assert tuple(run) == ("running", proc.pid)  # as the crash left it
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/acme/go"])
    r = run_cli("-i", str(inv_path), "play", "--resume", "1", "--json",
                env={"XFLEET_OPERATOR": "bob"})
    assert r.code == 0, f"play --resume: exit {r.code}\n{r.out}\n{r.err}"
    assert [s["state"] for s in r.json()["steps"]] == ["resumed", "done", "done"]
    assert conn.execute("SELECT count(*) FROM lifecycle_log WHERE op = 'snapshot'"
                        ).fetchone()[0] == 1  # not taken twice
    assert conn.execute("SELECT origin FROM datasets WHERE name = 'tank/acme/db-after'"
                        ).fetchone()[0] == "tank/acme/db@before"
    r = run_cli("-i", str(inv_path), "plays", "show", "1")
    assert r.code == 0 and "done" in r.out, f"plays show: exit {r.code}\n{r.out}\n{r.err}"
    # who: alice started it (with her reason), bob's process finished it
    r = run_cli("-i", str(inv_path), "plays", "list", "--json")
    assert r.code == 0, r.err
    assert [(x["id"], x["state"], x["operator"], x["operator_reason"]) for x in r.json()] == [
        (1, "done", "alice", "INC-42")], r.out
    assert conn.execute("SELECT held_by FROM play_runs WHERE id = 1").fetchone()[0] == "bob"
    who = conn.execute("SELECT operator, operator_reason FROM lifecycle_log WHERE "
                       "op = 'snapshot'").fetchone()
    assert tuple(who) == ("alice", "INC-42")


