"""`xfleet snapshot|clone|destroy|set|resize` (xfleet/cli/lifecycle.py) on the simulated fleet:
a dry run changes nothing, a real snapshot is in the mirror at once. Plans, clones, holds and
the refusals are tested in tests/unit/ops/test_lifecycle.py."""

from __future__ import annotations

from pathlib import Path

from .conftest import Cli, digest

VOLUMES = "tank/t0000/vol-00000*"  # ten volumes on each node of the sim fleet


def test_a_dry_run_changes_nothing_then_the_snapshot_is_taken(synced: Path, cli: Cli) -> None:
    inv, db = str(synced), synced.parent / "mirror.db"
    before = digest(db)
    dry = cli("-i", inv, "snapshot", VOLUMES, "--name", "before", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    plan = dry.json()
    assert plan["dry_run"] is True and {c["node"] for c in plan["commands"]} == {"n1", "n2"}
    assert digest(db) == before
    r = cli("-i", inv, "snapshot", VOLUMES, "--node", "n1", "--name", "before", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["ok"] is True and [n["node"] for n in out["nodes"]] == ["n1"]
    taken = cli("-i", inv, "ls", f"{VOLUMES}@before", "--json", "-o", "node,name").json()
    assert len(taken) == 10 and {t["node"] for t in taken} == {"n1"}
    again = cli("-i", inv, "snapshot", VOLUMES, "--node", "n1", "--name", "before")
    assert again.code == 0 and "nothing to do" in again.out  # a re-run is harmless
    gone = cli("-i", inv, "destroy", f"{VOLUMES}@before", "--node", "n1", "--dry-run")
    assert gone.code == 0 and "10 dataset(s)" in gone.out and "dry run" in gone.err + gone.out
    refused = cli("-i", inv, "destroy", f"{VOLUMES}@before", "--node", "n1")
    assert refused.code == 2 and "without confirmation" in refused.err  # not a tty, no --yes
