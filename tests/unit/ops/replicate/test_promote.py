"""Promotions on simulated nodes (xfleet/ops/replicate/promote.py): planned, the copy is
brought up to date and a move adopting it runs the move engine's cutover to done; with the
source lost, the copy becomes the primary as it is without a single command to the source."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from unit.ops.moves.conftest import Fleet, node
from unit.ops.replicate.conftest import VOL, change, holds, prop, replica, run_round, snapshots
from xfleet import mirror
from xfleet.core.errors import ConnectError
from xfleet.fleet.connections import Connections
from xfleet.ops.access import attach
from xfleet.ops.replicate import promote
from xfleet.ops.replicate.journal import ReplicaError
from xfleet.sim import SimTransport


def _device_hash(t: SimTransport, volume: str = VOL) -> str:
    return t.run(["sha256sum", f"/dev/zvol/{volume}"]).stdout.split()[0]


def test_a_planned_promotion_moves_the_volume_onto_its_copy(fleet: Fleet) -> None:
    inv, _, t = fleet
    n2 = node(inv, "n2")
    run_round(inv)
    change(inv, t, "c")  # the copy is behind: the promotion brings it up first
    t.write(VOL, 3 << 20)  # and the source is written after its newest snapshot
    r = replica(inv)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        p = promote.promote(inv, inv.mirror, conns, str(r.id))
    assert p.mode == "planned" and p.move is not None
    m = p.move
    assert m["state"] == "done" and m["verified"], m
    retired = m["retired_as"]
    assert retired == f"{VOL}.xfleet-moved-{m['id']}"
    # n2's volume is the primary: a device, no longer a replica, the source's data
    assert prop(n2, "volmode")[0] != "none"
    assert prop(n2, "xfleet:replica-of")[0] == "-"
    assert _device_hash(n2) == _device_hash(t, retired)  # what the source had at cutover
    final = f"xfleet-move-{m['id']}-final"
    copy = snapshots(n2)
    assert {"b", "c", final} <= set(copy) and copy["c"] == snapshots(t, retired)["c"]
    # n1's volume retired read-only, held by the move alone (the replica's hold let go)
    assert prop(t, "readonly", retired)[0] == "on"
    assert not t.run(["zfs", "list", VOL], check=False).ok
    tags = holds(t, retired)
    assert (f"{retired}@{final}", f"xfleet-move-{m['id']}") in tags
    assert all(tag != r.tag for _, tag in tags), tags
    r = replica(inv)
    assert (r.state, r.move, r.error) == ("promoted", m["id"], None)
    # a promoted replica is never sent again, nor counted by the rounds; nor is the retired
    # source (tank/app/db.xfleet-moved-ID, which the policy's match takes) replicated
    res = run_round(inv)
    assert (res.replicas, res.sent, res.failed) == (0, [], []), res.to_dict()


class Lost(SimTransport):
    """A node that is gone: every command it is asked is recorded, and fails to connect."""

    asked: list[list[str]]

    def _start(self, argv: Sequence[str]) -> list[str]:
        self.asked.append(list(argv))
        raise ConnectError("connection refused", where=self.node)


def test_with_its_source_lost_the_copy_becomes_the_primary_as_it_is(fleet: Fleet) -> None:
    inv, _, t = fleet
    n2 = node(inv, "n2")
    run_round(inv)
    change(inv, t, "c")
    run_round(inv)
    at_c = _device_hash(t)  # nothing written since @c: the source's @c
    t.write(VOL, 3 << 20)  # written after @c: lost with n1
    assert _device_hash(t) != at_c
    conn = mirror.connect(inv.mirror)  # the volume is attached to two hosts (one leaving)
    for host, state in (("db1", "attached"), ("db2", "detaching")):
        conn.execute("INSERT INTO attachments (node, volume, initiator, hostnqn, shared, state, "
                     "batch, created_at, updated_at) VALUES ('n1', ?, ?, ?, 0, ?, 'b', 0, 0)",
                     (VOL, host, f"nqn.2014-08.org.nvmexpress:uuid:{host}", state))
    conn.close()
    assert prop(n2, "xfleet:hosts")[0] == "-"  # a replica's copy is received without them
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        lost = Lost(inv.hosts["n1"], state_dir=inv.state_dir)
        lost.asked = []
        conns.use("n1", lost)
        p = promote.promote_lost(inv, inv.mirror, conns, f"n1:{VOL}")
        assert lost.asked == [] and conns.commands("n1") == 0  # not a word to n1
    # its allowed hosts on the copy (only the attached one), and the attachments follow it
    assert prop(n2, "xfleet:hosts")[0] == "nqn.2014-08.org.nvmexpress:uuid:db1"
    conn = mirror.connect(inv.mirror, readonly=True)
    assert sorted((a["node"], a["volume"], a["initiator"])
                  for a in attach.attachments(conn)) == [("n2", VOL, "db1"), ("n2", VOL, "db2")]
    assert sorted((x["action"], x["batch"], x["initiator"]) for x in attach.log(conn)
                  if x["action"] == "moved") == [("moved", f"promote-{p.replica.id}", "db1"),
                                           ("moved", f"promote-{p.replica.id}", "db2")]
    conn.close()
    created_c = int(t.run(["zfs", "get", "-H", "-p", "-o", "value", "creation",
                           f"{VOL}@c"]).stdout)
    assert p.mode == "source lost" and p.as_of == created_c and p.move is None
    assert prop(n2, "volmode")[0] != "none" and prop(n2, "xfleet:replica-of")[0] == "-"
    assert _device_hash(n2) == at_c  # the source's data as of @c, device and all
    r = replica(inv)
    assert (r.state, r.as_of) == ("promoted", created_c)
    with pytest.raises(ReplicaError, match="promoted already"), \
            Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        promote.promote_lost(inv, inv.mirror, conns, str(r.id))
