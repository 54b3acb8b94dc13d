"""Replication rounds on simulated nodes (xfleet/ops/replicate/round.py): the first round's
full send, a round with nothing new that issues no command, an incremental one that moves
the held, bookmarked cursor; copies never snapshotted or pruned by a policy; a snapshot that
wrote nothing made current without a stream; copies pruned as their source is; and a replica
another live round holds is left to it. The lab tests prove the same on real ZFS."""

from __future__ import annotations

import os
import time

from conftest import run_cli

from unit.ops.moves.conftest import Fleet, node
from unit.ops.replicate.conftest import (
    VOL,
    bookmarks,
    change,
    holds,
    policies,
    prop,
    replica,
    run_round,
    snapshots,
)
from xfleet import mirror
from xfleet.fleet.connections import Connections
from xfleet.mirror.backend import location
from xfleet.ops import lifecycle
from xfleet.ops.snapshots import apply
from xfleet.ops.snapshots import plan as snapplan
from xfleet.ops.sync import sync


def test_full_then_nothing_then_incremental_moves_the_cursor(fleet_at: Fleet) -> None:
    inv, inv_path, t = fleet_at
    n2 = node(inv, "n2")
    res = run_round(inv)
    assert (res.replicas, res.added, res.due, res.failed) == (1, 1, 1, [])
    assert [(s["volume"], s["snapshot"], s["how"]) for s in res.sent] == [(VOL, "b", "full")]
    r = replica(inv)
    src = snapshots(t)
    # the copy: the source's newest snapshot, the same one (guid), without a device
    assert snapshots(n2) == {"b": src["b"]}
    assert prop(n2, "volmode")[0] == "none"
    assert prop(n2, "xfleet:replica-of")[0] == f"n1:{VOL}"
    # the cursor: held with the replica's tag and bookmarked on the source
    assert r.tag == f"xfleet-replica-{r.target_node}"
    assert holds(t) == [(f"{VOL}@b", r.tag)]
    assert bookmarks(t) == [f"{VOL}#{r.tag}_b"]
    assert (r.state, r.cursor, r.cursor_guid, r.rounds) == ("idle", "b", src["b"], 1)
    assert r.target_node == "n2" and r.target_volume == VOL

    # nothing new: nothing sent, not a single remote command
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        res = run_round(inv, conns=conns)
        assert sum(conns.commands(n) for n in inv.hosts) == 0
    assert (res.due, res.sent, res.commands, res.bytes) == (0, [], 0, 0)
    assert replica(inv).rounds == 1

    # a write and a snapshot: an incremental from the cursor, which moves on
    change(inv, t, "c")
    res = run_round(inv)
    assert [(s["snapshot"], s["how"]) for s in res.sent] == [("c", "incremental")], res
    assert res.sent[0]["bytes"] > 1 << 20 and res.failed == []
    src = snapshots(t)
    assert snapshots(n2) == {"b": src["b"], "c": src["c"]}
    assert holds(t) == [(f"{VOL}@c", r.tag)]  # @b released
    assert bookmarks(t) == [f"{VOL}#{r.tag}_c"]  # the old bookmark destroyed
    r = replica(inv)
    assert (r.state, r.cursor, r.cursor_guid, r.rounds) == ("idle", "c", src["c"], 2)
    created_c = int(t.run(["zfs", "get", "-H", "-p", "-o", "value", "creation",
                           f"{VOL}@c"]).stdout)
    assert r.as_of == created_c
    # the mirror follows both nodes (the round synced them)
    conn = mirror.connect(inv.mirror)
    try:
        got = {(n, s) for n, s in conn.execute(
            "SELECT node, name FROM datasets WHERE name LIKE ? AND type = 'snapshot'",
            (f"{VOL}@%",))}
    finally:
        conn.close()
    assert got == {("n1", f"{VOL}@a"), ("n1", f"{VOL}@b"), ("n1", f"{VOL}@c"),
                   ("n2", f"{VOL}@b"), ("n2", f"{VOL}@c")}

    # the status: within its RPO
    out = run_cli("-i", str(inv_path), "replicate", "status", "--json")
    assert out.code == 0, out.err
    st = out.json()
    assert [(g["policy"], g["target_node"], g["replicas"], g["over_rpo"], g["failed"])
            for g in st["policies"]] == [("app", "n2", 1, 0, 0)]
    [row] = st["replicas"]
    assert row["within_rpo"] is True and 0 <= row["lag"] <= row["rpo"] == 3600


def test_copies_are_never_snapshotted_or_pruned_by_a_policy(fleet: Fleet) -> None:
    inv, _, t = fleet
    n2 = node(inv, "n2")
    pol = policies()
    assert run_round(inv, pol).sent
    db = str(inv.mirror)
    conn = mirror.connect(db)
    try:
        # the policy's match takes n2's tank/app/db too; only the source is due
        take = apply.take(conn, pol, inventory=inv)
        assert [(n, name.split("@")[0]) for n, name in take.created] == [("n1", VOL)]
        assert {(pp.node, pp.volumes) for pp in snapplan.plan(conn, pol, inventory=inv).pools
                } == {("n1", 1)}
        with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
            assert lifecycle.execute(inv, location(db), take, conns, source="test").ok
    finally:
        conn.close()
    [taken] = [s for s in snapshots(t) if s.startswith("xfleet_app_")]

    # that snapshot wrote nothing since the cursor: current without a stream
    before = replica(inv)
    res = run_round(inv, pol)
    assert (res.current, res.due, res.sent, res.commands) == (1, 0, [], 0)
    r = replica(inv)
    created = int(t.run(["zfs", "get", "-H", "-p", "-o", "value", "creation",
                         f"{VOL}@{taken}"]).stdout)
    assert r.as_of == created and before.as_of is not None and r.as_of >= before.as_of
    assert r.cursor == "b" and taken not in snapshots(n2)  # the cursor stays, nothing sent

    # the policy's snapshots reach the copy when they carry data; the retention (keep 1)
    # prunes the source's, never the copy's
    for i in range(2):
        t.write(VOL, 2 << 20)
        conn = mirror.connect(db)
        try:
            assert sync(inv, db).ok
            take = apply.take(conn, pol, now=time.time() + (i + 1) * 900, inventory=inv)
            with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
                assert lifecycle.execute(inv, location(db), take, conns, source="test").ok
        finally:
            conn.close()
    res = run_round(inv, pol)
    assert len(res.sent) == 1 and res.sent[0]["how"] == "incremental"
    on_copy = [s for s in snapshots(n2) if s.startswith("xfleet_app_")]
    assert len(on_copy) == 3  # -I: the one that wrote nothing, then the two
    conn = mirror.connect(db)
    try:
        prune = apply.prune(conn, pol, inventory=inv)
    finally:
        conn.close()
    pruned = [(n, name) for n, name, _ in prune.destroyed]
    assert pruned and all(n == "n1" for n, _ in pruned), pruned
    assert take.created and all(n == "n1" for n, _ in take.created)


def test_the_copies_keep_what_their_source_keeps_never_the_cursor(fleet: Fleet) -> None:
    inv, _, t = fleet
    n2 = node(inv, "n2")
    run_round(inv)
    change(inv, t, "c")
    change(inv, t, "d")
    assert run_round(inv).sent[0]["how"] == "incremental"
    assert list(snapshots(n2)) == ["b", "c", "d"]  # -I: every snapshot between

    # @c is destroyed on the source: the copy's @c goes too (journaled), @b and @d stay
    t.run(["zfs", "destroy", f"{VOL}@c"])
    assert sync(inv).ok
    res = run_round(inv)
    assert (res.pruned, res.sent, res.failed) == (1, [], [])
    assert list(snapshots(n2)) == ["b", "d"]
    conn = mirror.connect(inv.mirror)
    try:
        logged = [(n, a, ok) for n, a, ok in conn.execute(
            "SELECT node, argv, ok FROM lifecycle_log WHERE source = 'replicate'")]
    finally:
        conn.close()
    assert len(logged) == 1 and logged[0][0] == "n2" and f"{VOL}@c" in logged[0][1] \
        and logged[0][2] in (1, True), logged

    # the cursor's hold released by hand and @d destroyed on the source: the copy's @d,
    # the replica's base, is never pruned
    r = replica(inv)
    t.run(["zfs", "release", r.tag, f"{VOL}@d"])
    t.run(["zfs", "destroy", f"{VOL}@d", ])
    assert sync(inv).ok
    res = run_round(inv)
    assert res.pruned == 0 and list(snapshots(n2)) == ["b", "d"]
    # and the next change goes from the bookmark the cursor left
    change(inv, t, "e")
    res = run_round(inv)
    assert [(s["snapshot"], s["how"]) for s in res.sent] == \
        [("e", "incremental from the bookmark")], res.to_dict()
    assert snapshots(n2)["e"] == snapshots(t)["e"]
    assert holds(t) == [(f"{VOL}@e", r.tag)] and bookmarks(t) == [f"{VOL}#{r.tag}_e"]


def test_a_replica_another_live_round_holds_is_left_to_it(fleet: Fleet) -> None:
    inv, _, t = fleet
    n2 = node(inv, "n2")
    run_round(inv)
    change(inv, t, "c")
    r = replica(inv)
    conn = mirror.connect(inv.mirror)
    try:  # another round (another process, on another host) holds it, heartbeat fresh
        mirror.begin(conn, "test")
        conn.execute("UPDATE replicas SET pid = ?, host = 'elsewhere', heartbeat = ? "
                     "WHERE id = ?", (os.getpid() + 1, time.time(), r.id))
        conn.execute("COMMIT")
    finally:
        conn.close()
    res = run_round(inv)
    assert (res.due, res.busy, res.sent, res.failed) == (1, 1, [], [])
    assert "c" not in snapshots(n2) and holds(t) == [(f"{VOL}@b", r.tag)]
    assert replica(inv).cursor == "b"
