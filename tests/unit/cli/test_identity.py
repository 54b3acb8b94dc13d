"""`xfleet identity assign|show` (xfleet/cli/identity.py) on the moves' simulated fleet: a volume
without a UUID shows its legacy per-node NQN, gets one from `assign` (a table and JSON), and then
shows the NQN and NGUID derived from it; errors are clear, without a traceback. The assignment
itself is tested in tests/unit/ops/test_identity.py."""

from __future__ import annotations

from pathlib import Path

from unit.ops.moves.conftest import make_fleet
from xfleet.core.identity import valid_volume_uuid, volume_identity

from .conftest import Cli

VOL = "tank/app/db"


def test_show_assign_show(tmp_path: Path, cli: Cli) -> None:
    _, inv_path, _ = make_fleet(tmp_path)
    inv = str(inv_path)
    before = cli("-i", inv, "identity", "show", VOL, "--json")
    assert before.code == 0, before.err
    assert before.json()["uuid"] is None
    assert before.json()["nqn"] == "nqn.2026-01.io.xfleet:n1:tank.app.db"
    text = cli("-i", inv, "identity", "show", VOL)
    assert text.code == 0 and "no UUID yet" in text.err and "uuid:           -" in text.out

    r = cli("-i", inv, "identity", "assign", "--node", "n1", "--limit", "5", "--json")
    assert r.code == 0, r.err
    got = r.json()
    assert got["ok"] is True and got["set"] == 5 and [n["node"] for n in got["nodes"]] == ["n1"]
    table = cli("-i", inv, "identity", "assign", "--node", "n1")
    assert table.code == 0 and "n1" in table.out and "set" in table.out, table.out

    after = cli("-i", inv, "identity", "show", VOL, "--node", "n1", "--json").json()
    assert valid_volume_uuid(after["uuid"])
    assert after["nqn"] == f"nqn.2026-01.io.xfleet:vol:{after['uuid']}"
    assert (after["namespace_uuid"], after["nguid"]) == volume_identity(after["uuid"])


def test_mistakes_are_clear_errors(tmp_path: Path, cli: Cli) -> None:
    _, inv_path, _ = make_fleet(tmp_path)
    inv = str(inv_path)
    r = cli("-i", inv, "identity", "show", "tank/nope")
    assert r.code != 0 and "tank/nope is not in the mirror" in r.err
    assert "Traceback" not in r.err
    r = cli("-i", inv, "identity", "show", "tank/app")
    assert r.code != 0 and "not a volume" in r.err
    r = cli("-i", inv, "identity", "assign", "--node", "nx")
    assert r.code != 0 and "no node 'nx'" in r.err and "Traceback" not in r.err
    r = cli("-i", inv, "identity", "assign", "--limit", "0")
    assert r.code != 0 and "--limit" in r.err
