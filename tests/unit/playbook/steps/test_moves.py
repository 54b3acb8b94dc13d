"""The `move` and `drain` step kinds, planned (--check); they run for real in the lab
(tests/lab/test_playbooks_real.py), and moves and drains run end to end on the simulator's
data path in tests/unit/ops/moves/test_runner_sim.py."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli

from unit.playbook.plays import EXAMPLES, only3_fleet, play_file, write


def test_a_move_step_plans_a_move_per_row(tmp_path: Path) -> None:
    inv, _ = only3_fleet(tmp_path, tenant="m")
    path = write(tmp_path, """
steps:
  - query: {sql: "SELECT node, name FROM datasets WHERE tenant = 'm' ORDER BY name"}
    register: vols
  - name: move them
    for_each: "{{ vols }}"
    move: {volume: "{{ row.name }}", from: "{{ row.node }}", to: n1}
""")
    check = play_file(inv, path, check=True)
    assert check.ok, check.to_dict()
    moves_planned = check.steps[1].commands
    for i in range(3):  # a move planned per row: base snapshot, send, receive on n1
        assert any(c.startswith(f"n3: zfs send -L -c tank/only3/v{i}@") and
                   "n1: zfs receive -s -u" in c for c in moves_planned)
    assert any("zfs receive -s -u" in c for c in moves_planned)


def test_drain_example_in_check_mode(tmp_path: Path) -> None:
    # here its plan, on a node whose volumes are its own
    _, inv_path = only3_fleet(tmp_path, alone=True)
    r = run_cli("-i", str(inv_path), "play", str(EXAMPLES / "drain-node.yaml"), "--check",
                "--var", "node=n3")
    assert r.code == 0, r.out + r.err
    assert r.out.count("move tank/only3/v") == 3 and "-> n1:tank/only3/v0" in r.out
