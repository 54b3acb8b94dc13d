"""A moved volume's attachments go with it (xfleet/ops/access/attach.follow_move, called by the
move's last step): the rows name the target node, the copy carries xfleet:hosts, and the
target node's export of it allows exactly the attached host; journaled as `moved`."""

from __future__ import annotations

from pathlib import Path

from xfleet import mirror
from xfleet.ops import moves
from xfleet.ops.access import attach
from xfleet.ops.access.attach import Request

from .conftest import HOSTS, Fleet

VOL = "tank/t0000/vol-000021"  # on n1 only


def test_a_move_takes_the_attachments_and_the_allowed_hosts_along(fleet: Fleet,
                                                                  tmp_path: Path) -> None:
    res = attach.change(fleet.inv, fleet.where, fleet.conns, "attach",
                        [Request(VOL, "db1")])
    assert res.ok, res.to_dict()
    t = fleet.conns.get("n1")
    t.run(["zfs", "snapshot", f"{VOL}@a"])
    conn = mirror.connect(fleet.where)
    try:
        m = moves.create(fleet.inv, conn, moves.plan_move(fleet.inv, conn, VOL, "n2"), {})
    finally:
        conn.close()
    done = moves.Runner(fleet.inv, fleet.where, fleet.conns).run(m.id)
    assert done.state == "done", done
    conn = mirror.connect(fleet.where, readonly=True)
    try:
        rows = [(r["node"], r["volume"], r["initiator"]) for r in attach.attachments(conn)]
        log = [(r["action"], r["node"], r["initiator"]) for r in attach.log(conn)]
        journal = [r["message"] for r in moves.log(conn, m.id)]
    finally:
        conn.close()
    assert rows == [("n2", VOL, "db1")]
    assert ("moved", "n2", "db1") in log
    assert fleet.prop(VOL, "n2") == HOSTS["db1"]  # received with the copy
    nqn, any_host, hosts = fleet.exports("n2")[VOL]
    assert (any_host, hosts) == (False, (HOSTS["db1"],)), fleet.exports("n2")[VOL]
    assert any(f"allowed hosts on n2: {HOSTS['db1']}" == j for j in journal), journal
