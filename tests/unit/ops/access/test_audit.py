"""`target audit` on the simulator: exports open to any host, and every drift between the
mirror's attachments and what the target allows, from one listing per node."""

from __future__ import annotations

from pathlib import Path

from xfleet import mirror
from xfleet.mirror import store
from xfleet.ops.access import attach
from xfleet.ops.access.attach import Request
from xfleet.ops.access.audit import audit

from .conftest import HOSTS, Fleet

V1, V2, V3 = (f"tank/t0000/vol-0000{i}" for i in (21, 22, 25))  # on n1 only


def kinds(f: Fleet, *nodes: str) -> list[tuple[str, str | None, str | None]]:
    a = audit(f.inv, f.where, f.conns, nodes)
    return [(x.kind, x.volume, x.initiator) for x in a.findings if x.kind != "open"]


def test_a_fresh_fleet_is_all_open_exports(fleet: Fleet) -> None:
    a = audit(fleet.inv, fleet.where, fleet.conns)
    assert a.counts()["open"] == 50 and not a.clean
    assert {n.node: (n.exports, n.open, n.commands) for n in a.nodes} == \
        {"n1": (30, 30, 1), "n2": (20, 20, 1)}
    assert a.findings[0].message.endswith("allows any host")


def test_attached_volumes_are_clean_and_every_drift_is_found(fleet: Fleet) -> None:
    ok = attach.change(fleet.inv, fleet.where, fleet.conns, "attach",
                       [Request(V1, "db1"), Request(V2, "db1"), Request(V3, "db2")])
    assert ok.ok
    a = audit(fleet.inv, fleet.where, fleet.conns, ["n1"])
    assert a.counts()["open"] == 27 and kinds(fleet, "n1") == []
    t = fleet.conns.get("n1")
    nqn1, nqn2 = fleet.exports()[V1][0], fleet.exports()[V2][0]
    # by hand on the target: V1 loses db1 and gains db3; V2 gains a host nobody knows
    t.run(["xfleet-sim-target", "set-hosts"],
          stdin=f"{nqn1}\t{HOSTS['db3']}\n{nqn2}\t{HOSTS['db1']},nqn.2014-08.org.x:y\n".encode())
    t.run(["zfs", "destroy", "-r", V3])  # an attached volume gone from the target
    conn = mirror.connect(fleet.where)  # an attachment whose batch died mid-way
    with store.transaction(conn, "a test"):
        conn.execute("INSERT INTO attachments (node, volume, initiator, hostnqn, shared, state, "
                     "batch, created_at, updated_at) VALUES ('n1', 'tank/t0000/vol-000026', "
                     "'db2', ?, 0, 'attaching', 'b', 0, 0)", (HOSTS["db2"],))
    conn.close()
    assert kinds(fleet, "n1") == [
        ("missing", V1, "db1"), ("extra", V1, "db3"), ("extra", V2, None),
        ("no-export", V3, "db2"),
        ("unsettled", "tank/t0000/vol-000026", "db2")]
    a = audit(fleet.inv, fleet.where, fleet.conns, ["n1"])
    assert a.nodes[0].commands == 1 and a.nodes[0].restricted == 2
    extra = [f for f in a.findings if f.kind == "extra" and f.volume == V2][0]
    assert extra.hostnqn == "nqn.2014-08.org.x:y"


def test_a_node_that_cannot_be_listed_is_an_error_finding(fleet: Fleet, tmp_path: Path) -> None:
    fleet.conns.get("n2").run(["xfleet-sim-target", "restart", "", "2.0"])
    fleet.conns.get("n2").run(["xfleet-sim-target", "restart", "", ""])
    fleet.inv.hosts["n2"].target = None  # the inventory lost its target
    a = audit(fleet.inv, fleet.where, fleet.conns, ["n2"])
    assert [(f.kind, f.node) for f in a.findings] == [("error", "n2")]
    assert a.failed_nodes == ["n2"] and "no target in the inventory" in (a.nodes[0].error or "")
    assert [n.node for n in audit(fleet.inv, fleet.where, fleet.conns).nodes] == ["n1"]


def test_a_restart_reapplies_the_property_and_an_export_opened_by_hand_is_found(
        fleet: Fleet) -> None:
    assert attach.change(fleet.inv, fleet.where, fleet.conns, "attach",
                         [Request(V1, "db1"), Request(V2, "db2")]).ok
    t = fleet.conns.get("n1")
    t.run(["zfs", "inherit", "xfleet:hosts", V2])  # by hand: V2 is no longer restricted
    t.run(["xfleet-sim-target", "restart", "", ""])
    assert fleet.exports()[V1][1:] == (False, (HOSTS["db1"],))  # re-applied from the zvol
    a = audit(fleet.inv, fleet.where, fleet.conns, ["n1"])
    (opened,) = [f for f in a.findings if f.volume == V2]
    assert (opened.kind, opened.message.split(" allows ")[1]) == \
        ("open", "any host, though attached to db2 only")
