"""The initiators' host NQNs: read from /etc/nvme/hostnqn (one command per initiator), never
typed; validated; a clone's duplicate refused; kept in the mirror."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write

from xfleet import mirror
from xfleet.core.errors import UsageError
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.mirror.backend import location
from xfleet.ops.access import initiators
from xfleet.ops.access.initiators import parse_hostnqn
from xfleet.ops.initiator import InitiatorError

NQN = "nqn.2014-08.org.nvmexpress:uuid:5c0ba2c4-3c19-4d34-a0f6-4b0c2b7e2a11"


def test_parse_hostnqn() -> None:
    assert parse_hostnqn(f"\n{NQN}\n") == NQN
    with pytest.raises(InitiatorError, match="db1: /etc/nvme/hostnqn holds 0 lines"):
        parse_hostnqn("", "db1")
    with pytest.raises(InitiatorError, match="does not hold a host NQN"):
        parse_hostnqn("hello world\n", "db1")
    with pytest.raises(InitiatorError, match="holds 2 lines"):
        parse_hostnqn(f"{NQN}\n{NQN}\n")


def test_read_one_command_per_initiator_and_record(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    files = {n: tmp_path / f"{n}.hostnqn" for n in ("db1", "db2", "db3", "db4")}
    files["db1"].write_text(NQN + "\n")
    files["db2"].write_text("nqn.2014-08.org.nvmexpress:uuid:b\n")
    files["db3"].write_text("nqn.2014-08.org.nvmexpress:uuid:b\n")  # a cloned VM
    inv = inventory.load(write(tmp_path, """
        all:
          vars: {mirror: m.db, state_dir: st}
          hosts: {n1: {kind: sim}}
          initiators:
            db1: {kind: local}
            db2: {kind: local}
            db3: {kind: local}
            db4: {kind: local}
        """))
    where = location(str(tmp_path / "m.db"))

    with Connections(inv.initiators, state_dir=inv.state_dir) as conns:
        monkeypatch.setattr(initiators, "HOSTNQN_FILE", str(files["db1"]))
        got = initiators.read(inv, where, conns, ["db1"])
        assert [(r.name, r.hostnqn, r.error) for r in got] == [("db1", NQN, None)]
        assert conns.commands("db1") == 1
        monkeypatch.setattr(initiators, "HOSTNQN_FILE", str(files["db2"]))
        got = initiators.read(inv, where, conns, ["db2", "db3"])
        assert [r.hostnqn for r in got] == [None, None]
        assert "also the host NQN of db3" in (got[0].error or "")
        monkeypatch.setattr(initiators, "HOSTNQN_FILE", str(tmp_path / "none"))
        (gone,) = initiators.read(inv, where, conns, ["db4"])
        assert gone.hostnqn is None and "No such file" in (gone.error or "")
    conn = mirror.connect(where, readonly=True)
    assert initiators.hostnqns(conn) == {"db1": NQN}
    listed = {r["name"]: (r["hostnqn"], r["in_inventory"]) for r in initiators.rows(inv, conn)}
    assert listed == {"db1": (NQN, True), "db2": (None, True), "db3": (None, True),
                      "db4": (None, True)}
    conn.close()
    with pytest.raises(UsageError, match="no initiator named 'db5'"):
        initiators.select(inv, ["db5"])
    assert initiators.select(inv) == ["db1", "db2", "db3", "db4"]
    assert list(initiators.rows(inv, None))[0]["hostnqn"] is None  # no mirror yet


def test_the_listing_says_where_a_secret_comes_from_never_the_secret(tmp_path: Path) -> None:
    key = tmp_path / "db1.key"
    key.write_text("DHHC-1:00:" + "A" * 44 + ":\n")
    key.chmod(0o600)
    path = tmp_path / "fleet.yaml"
    path.write_text("all:\n  hosts:\n    n1: {kind: local}\n  initiators:\n"
                    f"    db1: {{kind: local, dhchap_secret_file: {key}}}\n"
                    "    db2: {kind: local, dhchap_secret_command: [pass, show, db2]}\n"
                    "    db3: {kind: local}\n")
    rows = list(initiators.rows(inventory.load(path), None))
    assert [(r["name"], r["dhchap"]) for r in rows] == [
        ("db1", "file"), ("db2", "command"), ("db3", None)]
    assert "A" * 44 not in repr(rows)
