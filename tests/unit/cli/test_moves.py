"""`xfleet move|drain|moves` (xfleet/cli/moves.py) on the simulated fleet: the plan of a move,
then a real one (on the simulator's data path), and the journal the `moves` group reads. Moves
that fail, pause, resume or abort are tested in tests/unit/ops/moves/ and on real nodes in
tests/lab/."""

from __future__ import annotations

from pathlib import Path

from .conftest import Cli

VOLUME = "tank/t0011/vol-000299"  # on n1 only, in the sim fleet of tests/conftest.py


def test_a_dry_run_shows_the_plan_then_the_move_is_journaled(synced: Path, cli: Cli) -> None:
    inv = str(synced)
    r = cli("-i", inv, "move", VOLUME, "--to", "n2", "--dry-run", "--json")
    assert r.code == 0, r.err
    plan = r.json()
    assert (plan["source_node"], plan["target_node"]) == ("n1", "n2")
    assert any("zfs send" in c and "zfs receive" in c for c in plan["commands"])
    text = cli("-i", inv, "move", VOLUME, "--to", "n2", "--dry-run")
    assert text.code == 0 and f"move {VOLUME} from n1 to n2:{VOLUME}" in text.out
    assert cli("-i", inv, "moves", "list", "--json").json() == []  # a dry run journals nothing

    # the move runs to its end on the simulator's data path
    r = cli("-i", inv, "move", VOLUME, "--to", "n2", "--json")
    assert r.code == 0, r.err
    done = r.json()
    assert done["state"] == "done" and done["verified"], done
    listed = cli("-i", inv, "moves", "list", "--json").json()
    assert [(m["id"], m["state"]) for m in listed] == [(done["id"], "done")]
    shown = cli("-i", inv, "moves", "show", str(done["id"]))
    assert shown.code == 0 and "[base] base copy" in shown.out and "[done]" in shown.out
    ls = cli("-i", inv, "ls", VOLUME, "--json", "-o", "node,name").json()
    assert [x["node"] for x in ls if x["name"] == VOLUME] == ["n2"]  # the copy is the volume


def test_moves_group_errors_are_clear(synced: Path, cli: Cli) -> None:
    r = cli("-i", str(synced), "moves", "show", "99")
    assert r.code == 2 and "no move with id 99" in r.err and "Traceback" not in r.err
    r = cli("-i", str(synced), "drain", "n9", "--dry-run")
    assert r.code == 1 and "no node named 'n9'" in r.err and "Traceback" not in r.err
