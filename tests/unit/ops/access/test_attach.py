"""attach / detach / attachments on the simulator: the target's allowed hosts, the zvol's
xfleet:hosts property and the mirror's journal move together; a second writer is refused
unless every attachment is shared; input errors refuse the whole batch before any change."""

from __future__ import annotations

from typing import Any

import pytest

from xfleet import mirror
from xfleet.core.errors import UsageError
from xfleet.mirror import store
from xfleet.ops.access import attach
from xfleet.ops.access.attach import Request, parse_requests
from xfleet.ops.sync import sync

from .conftest import HOSTS, Fleet

V1, V2, V3 = (f"tank/t0000/vol-0000{i}" for i in (21, 22, 23))  # on n1 only


def change(f: Fleet, action: str, *reqs: tuple[Any, ...],
           node: str | None = None) -> attach.Result:
    return attach.change(f.inv, f.where, f.conns, action,
                         [Request(r[0], r[1], len(r) > 2 and bool(r[2])) for r in reqs],
                         node=node)


def rows(f: Fleet, **kw: Any) -> list[dict[str, Any]]:
    conn = mirror.connect(f.where, readonly=True)
    try:
        return list(attach.attachments(conn, **kw))
    finally:
        conn.close()


def journal(f: Fleet) -> list[tuple[str, str, str, str]]:
    conn = mirror.connect(f.where, readonly=True)
    try:
        return [(r["action"], r["volume"], r["initiator"], r["outcome"])
                for r in reversed(attach.log(conn))]
    finally:
        conn.close()


def test_attach_restricts_the_subsystem_to_the_host_and_journals_it(fleet: Fleet) -> None:
    before = fleet.exports()
    assert before[V1][1:] == (True, ())  # the legacy open export
    r = change(fleet, "attach", (V1, "db1"))
    assert r.ok and [i.outcome for i in r.items] == ["ok"]
    assert r.commands == {"n1": 3}  # listing, property, target
    nqn = before[V1][0]
    assert r.items[0].nqn == nqn  # found in the listing by device, not recomputed
    assert fleet.exports()[V1] == (nqn, False, (HOSTS["db1"],))
    assert fleet.exports()[V2][1] is True  # others untouched
    assert fleet.prop(V1) == HOSTS["db1"]
    (row,) = rows(fleet)
    assert (row["node"], row["volume"], row["initiator"], row["hostnqn"], row["nqn"],
            row["shared"], row["state"], row["error"]) == \
        ("n1", V1, "db1", HOSTS["db1"], nqn, False, "attached", None)
    again = change(fleet, "attach", (V1, "db1"))
    assert [i.outcome for i in again.items] == ["unchanged"] and again.ok
    assert journal(fleet) == [("attach", V1, "db1", "ok"), ("attach", V1, "db1", "unchanged")]


def test_a_second_writer_is_refused_unless_every_attachment_is_shared(fleet: Fleet) -> None:
    assert change(fleet, "attach", (V1, "db1")).ok
    r = change(fleet, "attach", (V1, "db2"))
    assert not r.ok and r.items[0].outcome == "refused"
    assert "attached to db1: a second writer is refused" in r.items[0].message
    assert r.commands == {}  # nothing was sent
    assert change(fleet, "attach", (V1, "db2", True)).items[0].outcome == "refused"
    assert fleet.exports()[V1][2] == (HOSTS["db1"],)
    # shared: every attachment of the volume says so
    assert change(fleet, "attach", (V2, "db1", True), (V2, "db2", True)).ok
    assert fleet.exports()[V2][1:] == (False, (HOSTS["db1"], HOSTS["db2"]))
    assert fleet.prop(V2) == f"{HOSTS['db1']},{HOSTS['db2']}"
    r = change(fleet, "attach", (V2, "db3"))  # not shared: refused
    assert r.items[0].outcome == "refused" and "db1 (shared), db2 (shared)" in \
        r.items[0].message
    # within one batch, the second of two writers is refused
    r = change(fleet, "attach", (V3, "db1"),
               (V3, "db2"))
    assert [i.outcome for i in r.items] == ["ok", "refused"]
    assert ("attach", V1, "db2", "refused") in journal(fleet)


def test_detach_takes_the_host_off_and_the_last_detach_closes_the_volume(fleet: Fleet) -> None:
    assert change(fleet, "attach", (V2, "db1", True), (V2, "db2", True)).ok
    r = change(fleet, "detach", (V2, "db1"))
    assert r.ok and r.items[0].shared is True
    assert fleet.exports()[V2][1:] == (False, (HOSTS["db2"],))
    r = change(fleet, "detach", (V2, "db2"))
    assert r.ok and rows(fleet) == []
    assert fleet.exports()[V2][1:] == (False, ())  # closed to every host, not opened
    assert fleet.prop(V2) == "none"
    r = change(fleet, "detach", (V2, "db2"))
    assert [(i.outcome, i.message) for i in r.items] == [("unchanged", "not attached")]
    assert r.commands == {}
    assert [j[3] for j in journal(fleet)] == ["ok", "ok", "ok", "ok", "unchanged"]


def test_input_errors_refuse_the_whole_batch_before_any_change(fleet: Fleet) -> None:
    conns_before = fleet.conns.commands("n1")
    bad = [("tank/no/such", "db1", "is not in the mirror"),
           (V1, "dbx", "no initiator named 'dbx'"),
           ("tank/t0000", "db1", "exists on several nodes"),
           ("tank/bad@snap", "db1", "snapshot")]
    for vol, host, needle in bad:
        with pytest.raises(UsageError, match=needle):
            change(fleet, "attach", (V2, "db1"), (vol, host))
    with pytest.raises(UsageError, match="did you mean db1"):
        change(fleet, "attach", (V1, "db1x"))
    with pytest.raises(UsageError, match="nothing to attach"):
        change(fleet, "attach")
    assert rows(fleet) == [] and fleet.conns.commands("n1") == conns_before
    assert fleet.exports()[V2][1] is True


def test_a_host_never_read_and_an_ambiguous_name(fleet: Fleet) -> None:
    conn = mirror.connect(fleet.where)
    with store.transaction(conn, "a test"):
        conn.execute("DELETE FROM initiators WHERE name = 'db3'")
    conn.close()
    with pytest.raises(UsageError, match=r"host NQN of db3 was never read \(xfleet "
                       r"initiators --read db3\)"):
        change(fleet, "attach", (V1, "db3"))
    both = "tank/t0000/vol-000000"  # on n1 and n2 (the generator's names)
    with pytest.raises(UsageError, match="exists on several nodes: n1, n2"):
        change(fleet, "attach", (both, "db1"))
    r = change(fleet, "attach", (both, "db1"), node="n2")
    assert r.ok and r.commands == {"n2": 3} and fleet.exports("n2")[both][2] == (HOSTS["db1"],)
    assert fleet.exports("n1")[both][1] is True


def test_a_volume_the_target_does_not_export_fails_and_changes_nothing(fleet: Fleet) -> None:
    fleet.conns.get("n1").run(["zfs", "destroy", "-r", V1])  # gone from the node, still mirrored
    r = change(fleet, "attach", (V1, "db1"), (V2, "db1"))
    assert [(i.outcome, i.message) for i in r.items] == [
        ("failed", f"the target on n1 has no export for {V1}"), ("ok", "")]
    assert [x["volume"] for x in rows(fleet)] == [V2]  # the failed attach left no row
    assert ("attach", V1, "db1", "failed") in journal(fleet)


def test_parse_requests() -> None:
    text = "# volumes of tenant a\ntank/db/a1  db-a-01\n\ntank/a b/c db-a-02 shared\n"
    assert parse_requests(text, "f.txt") == [
        Request("tank/db/a1", "db-a-01", False, "f.txt:2"),
        Request("tank/a b/c", "db-a-02", True, "f.txt:4")]
    assert parse_requests("tank/x h1\n", shared=True)[0].shared
    with pytest.raises(UsageError, match="expected VOLUME HOST") as exc:
        parse_requests("tank/x h1\nlonely\n", "f.txt")
    assert exc.value.where == "f.txt:2"


def test_attachments_listing_filters(fleet: Fleet) -> None:
    assert change(fleet, "attach", (V1, "db1"), (V2, "db2")).ok
    assert [r["volume"] for r in rows(fleet)] == [V1, V2]
    assert [r["volume"] for r in rows(fleet, initiator="db2")] == [V2]
    assert [r["volume"] for r in rows(fleet, node="n2")] == []
    assert [r["volume"] for r in rows(fleet, volume=V1, limit=5)] == [V1]


def test_a_destroyed_volume_can_still_be_detached(fleet: Fleet) -> None:
    assert change(fleet, "attach", (V1, "db1")).ok
    fleet.conns.get("n1").run(["zfs", "destroy", "-r", V1])
    assert sync(fleet.inv, fleet.where).ok  # gone from the mirror's datasets too
    r = change(fleet, "detach", (V1, "db1"))
    assert r.ok and r.items[0].message == f"no export of {V1} on n1: nothing to take off"
    assert rows(fleet) == []


def test_allowed_is_every_attachment_but_those_being_detached(fleet: Fleet) -> None:
    assert change(fleet, "attach", (V1, "db1", True), (V1, "db2", True), (V1, "db3", True)).ok
    conn = mirror.connect(fleet.where)
    try:
        assert attach.allowed(conn, "n1", V1) == [
            attach.Allowed(h, HOSTS[h]) for h in ("db1", "db2", "db3")]
        # a detach and an attach interrupted half way: the one leaving is not allowed any
        # more, the one coming is (as the batch planned it for the target)
        conn.execute("UPDATE attachments SET state = 'detaching' WHERE initiator = 'db2'")
        conn.execute("UPDATE attachments SET state = 'attaching' WHERE initiator = 'db3'")
        assert [a.initiator for a in attach.allowed(conn, "n1", V1)] == ["db1", "db3"]
        assert attach.allowed(conn, "n2", V1) == [] and attach.allowed(conn, "n1", V2) == []
    finally:
        conn.close()
