"""The step kinds that steer a run: `run` refuses an argv it cannot run as written, `wait`
in --check evaluates once and times out for real. (`assert`: test_journal.py, test_engine.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from unit.playbook.plays import Fleet, play_file, write


@pytest.mark.parametrize(("argv", "says"), [
    ("[]", "argv is empty"),
    ("[echo, null]", "argv holds nothing"),
    ("[echo, {a: 1}]", "argv holds a mapping"),
])
def test_a_run_step_refuses_an_argv_it_cannot_run_as_written(
        fleet: Fleet, tmp_path: Path, argv: str, says: str) -> None:
    inv, _, _ = fleet
    path = tmp_path / "run.yaml"
    path.write_text(f"name: bad run\nsteps:\n  - run: {{argv: {argv}, nodes: [n1]}}\n")
    for check in (True, False):
        report = play_file(inv, path, check=check)
        assert report.state == "failed", report
        step = report.steps[0]
        assert step.error and says in step.error, step.error
        assert not step.commands  # nothing ran, and "None" was never an argument



def test_a_wait_is_checked_once_and_times_out_for_real(fleet: Fleet, tmp_path: Path) -> None:
    inv, _, _ = fleet
    path = write(tmp_path, "- wait: {that: \"(SELECT count(*) FROM datasets WHERE name = "
                 "'tank/acme/go') > 0\", timeout: 0, interval: 0}\n")
    check = play_file(inv, path, check=True)
    assert check.ok and check.steps[0].notes == ["wait: not met now; would wait up to 0s"]
    real = play_file(inv, path)
    assert real.state == "failed" and "not met after 0s" in (real.steps[0].error or "")
