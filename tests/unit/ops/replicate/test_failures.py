"""Replicas whose stream fails, on simulated nodes: a cut stream leaves the replica failed
with the partial receive's token, and the next round resumes it; a copy changed on its node
fails the replica with the rollback to consider, and nothing is destroyed or rolled back."""

from __future__ import annotations

import pytest

from unit.ops.moves.conftest import Fleet, killing_relay, node
from unit.ops.replicate.conftest import (
    VOL,
    bookmarks,
    change,
    holds,
    prop,
    replica,
    run_round,
    snapshots,
)
from xfleet.ops.replicate import round as replicate_round
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport


def _everything(t: SimTransport) -> list[str]:
    return t.run(["zfs", "list", "-H", "-o", "name", "-t", "all", "-r", "tank/app"]
                 ).stdout.splitlines()


def test_a_cut_stream_fails_the_replica_and_the_next_round_resumes_it(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    inv, _, t = fleet
    n2 = node(inv, "n2")
    run_round(inv)
    change(inv, t, "c", 60 << 20)  # ~30 MiB of stream (zstd): more than a cut lets through
    before = _everything(t)
    # every attempt of the round (the incremental, then two resumes) is cut after ~2 MiB
    monkeypatch.setattr(replicate_round, "relay", killing_relay(3, "send"))
    res = run_round(inv)
    assert res.sent == [] and len(res.failed) == 1, res.to_dict()
    r = replica(inv)
    assert r.state == "failed" and "after 3 attempts" in (r.error or "")
    assert r.cursor == "b"  # the cursor has not moved...
    assert holds(t) == [(f"{VOL}@b", r.tag)] and bookmarks(t) == [f"{VOL}#{r.tag}_b"]
    token = prop(n2, "receive_resume_token")[0]
    assert token not in ("", "-")  # ...and the partial receive is kept
    assert "c" not in snapshots(n2) and _everything(t) == before

    monkeypatch.undo()
    res = run_round(inv)
    assert [(s["snapshot"], s["how"]) for s in res.sent] == [("c", "resumed")], res.to_dict()
    assert res.failed == [] and 0 < res.sent[0]["bytes"] < 60 << 20
    assert snapshots(n2) == {k: v for k, v in snapshots(t).items() if k != "a"}
    assert prop(n2, "receive_resume_token")[0] == "-"
    r = replica(inv)
    assert (r.state, r.cursor, r.error) == ("idle", "c", None)
    assert holds(t) == [(f"{VOL}@c", r.tag)] and bookmarks(t) == [f"{VOL}#{r.tag}_c"]
    # nothing destroyed on the source: the same datasets, the bookmark moved on
    assert sorted(_everything(t)) == sorted([x for x in before if "#" not in x]
                                            + [f"{VOL}#{r.tag}_c"])


def test_a_first_full_send_cut_resumes_too(fleet: Fleet,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    inv, _, t = fleet
    n2 = node(inv, "n2")
    t.write(VOL, 60 << 20)
    t.run(["zfs", "snapshot", f"{VOL}@c"])
    assert sync(inv).ok
    monkeypatch.setattr(replicate_round, "relay", killing_relay(3, "send"))
    res = run_round(inv)
    assert res.sent == [] and len(res.failed) == 1
    r = replica(inv)
    assert r.state == "failed" and r.cursor is None
    assert holds(t) == [] and bookmarks(t) == []  # no cursor before the first is there
    assert prop(n2, "receive_resume_token")[0] not in ("", "-")
    monkeypatch.undo()
    res = run_round(inv)
    assert [(s["snapshot"], s["how"]) for s in res.sent] == [("c", "resumed")]
    assert snapshots(n2) == {"c": snapshots(t)["c"]}
    assert prop(n2, "volmode")[0] == "none"
    assert prop(n2, "xfleet:replica-of")[0] == f"n1:{VOL}"
    assert holds(t) == [(f"{VOL}@c", r.tag)]


def test_a_copy_changed_on_its_node_fails_the_replica_and_nothing_is_destroyed(
        fleet: Fleet) -> None:
    inv, _, t = fleet
    n2 = node(inv, "n2")
    run_round(inv)
    n2.write(VOL, 1 << 20)  # someone wrote to the copy
    change(inv, t, "c")
    on_n1, on_n2 = _everything(t), _everything(n2)
    res = run_round(inv)
    assert res.sent == [] and len(res.failed) == 1
    err = res.failed[0]["error"]
    assert f"the copy n2:{VOL} was changed since @b" in err, err
    assert f"zfs rollback {VOL}@b on n2" in err, err  # the hint: what to consider
    r = replica(inv)
    assert r.state == "failed" and r.error == err and r.cursor == "b"
    assert _everything(t) == on_n1 and _everything(n2) == on_n2  # nothing destroyed
    assert holds(t) == [(f"{VOL}@b", r.tag)] and bookmarks(t) == [f"{VOL}#{r.tag}_b"]
    assert prop(n2, "receive_resume_token")[0] == "-"
    assert int(n2.run(["zfs", "get", "-H", "-p", "-o", "value", "written", VOL]).stdout) > 0

    # it stays failed, round after round, until someone decides
    res = run_round(inv)
    assert res.sent == [] and len(res.failed) == 1 and _everything(n2) == on_n2
