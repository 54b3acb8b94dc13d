"""Volume UUIDs at first sight (xfleet/ops/identity.py) on simulated nodes: one remote command
per node whatever the volumes, only the volume the mirror saw (a re-created name gets a new
UUID), a value already there is learned, never replaced, and replicas' copies are left alone;
ensure_many (a round's first streams) asks a node once for 5 or 50 volumes and answers for
each, reading the mirror in chunks (both engines)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import write_sim_inventory

from xfleet import mirror
from xfleet.core.identity import UUID_PROPERTY, valid_volume_uuid
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.ops import identity
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport

MIRRORED = f"    user_properties: [xfleet:tenant, {UUID_PROPERTY}]\n"


def _fleet(tmp_path: Path, volumes: int = 30) -> inventory.Inventory:
    inv = inventory.load(write_sim_inventory(tmp_path / "fleet.yaml", {
        "n1": {"volumes": volumes, "seed": 11}, "n2": {"volumes": 10, "seed": 12}},
        extra=MIRRORED))
    assert sync(inv).ok
    return inv


def _uuid(t: SimTransport, volume: str) -> tuple[str, str]:
    value, source = t.run(["zfs", "get", "-H", "-o", "value,source", UUID_PROPERTY,
                           volume]).stdout.strip().split("\t")
    return value, source


def _mirror_uuids(inv: inventory.Inventory, node: str) -> dict[str, str | None]:
    assert isinstance(inv.mirror, Path)
    db = sqlite3.connect(inv.mirror)
    try:
        rows = db.execute("SELECT name, user_properties FROM datasets WHERE node = ? AND type "
                          "= 'volume'", (node,)).fetchall()
    finally:
        db.close()
    return {n: json.loads(p or "{}").get(UUID_PROPERTY) for n, p in rows}


def test_every_volume_gets_its_own_uuid_in_one_command_per_node(tmp_path: Path) -> None:
    inv = _fleet(tmp_path)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        before = {n: conns.commands(n) for n in inv.hosts}
        res = identity.assign(inv, inv.mirror, conns)
        assert {n: conns.commands(n) - before[n] for n in inv.hosts} == {"n1": 1, "n2": 1}
    assert res.ok and res.to_dict()["set"] == 40, res.to_dict()
    seen = {**_mirror_uuids(inv, "n1"), **{f"n2:{k}": v for k, v in
                                           _mirror_uuids(inv, "n2").items()}}
    assert len(seen) == 40 and all(v is not None and valid_volume_uuid(v) for v in seen.values())
    assert len(set(seen.values())) == 40  # every volume its own
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    name, value = next(iter(_mirror_uuids(inv, "n1").items()))
    assert _uuid(t, name) == (value, "local")  # on the node, as the mirror says
    # a sync reads back the same values; a second assign has nothing to do
    assert sync(inv).ok
    assert _mirror_uuids(inv, "n1")[name] == value
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        again = identity.assign(inv, inv.mirror, conns)
        assert conns.commands("n1") == conns.commands("n2") == 0
    assert again.to_dict()["set"] == 0 and again.ok


def test_a_recreated_name_is_never_given_the_old_volumes_identity(tmp_path: Path) -> None:
    inv = _fleet(tmp_path, volumes=5)
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/app"])
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/had"])
    t.run(["zfs", "set", f"{UUID_PROPERTY}=0f0e0d0c-0b0a-4909-8807-060504030201", "tank/had"])
    assert sync(inv).ok
    t.run(["zfs", "destroy", "tank/app"])  # re-created after the mirror saw it
    t.run(["zfs", "create", "-s", "-V", "2G", "tank/app"])
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        res = identity.assign(inv, inv.mirror, conns, nodes=["n1"],
                              volumes=[("n1", "tank/app"), ("n1", "tank/had")])
    n1 = res.nodes[0]
    # tank/had: the mirror knew its value (set before the sync) and did not ask; tank/app: the
    # mirror's guid is the old volume's
    assert (n1.asked, n1.set, n1.gone) == (1, 0, 1), n1
    assert _uuid(t, "tank/app") == ("-", "-")
    assert sync(inv).ok  # the new tank/app is seen: now it gets one
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        res = identity.assign(inv, inv.mirror, conns, nodes=["n1"],
                              volumes=[("n1", "tank/app")])
    assert res.nodes[0].set == 1 and _uuid(t, "tank/app")[1] == "local"


def test_a_value_the_mirror_did_not_know_is_learned_not_replaced(tmp_path: Path) -> None:
    inv = _fleet(tmp_path, volumes=5)
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    vol = sorted(_mirror_uuids(inv, "n1"))[0]
    mine = "0f0e0d0c-0b0a-4909-8807-060504030201"
    t.run(["zfs", "set", f"{UUID_PROPERTY}={mine}", vol])  # by hand, after the sync
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        res = identity.assign(inv, inv.mirror, conns, nodes=["n1"])
    assert res.nodes[0].had == 1 and res.nodes[0].set == 4
    assert _uuid(t, vol) == (mine, "local") and _mirror_uuids(inv, "n1")[vol] == mine


def test_an_inherited_value_is_not_an_identity(tmp_path: Path) -> None:
    inv = _fleet(tmp_path, volumes=3)
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    t.run(["zfs", "create", "tank/grp"])
    t.run(["zfs", "set", f"{UUID_PROPERTY}=0f0e0d0c-0b0a-4909-8807-060504030201", "tank/grp"])
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/grp/a"])
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/grp/b"])
    assert sync(inv).ok
    conn = mirror.connect(inv.mirror)
    try:
        missing = [v for v, _ in identity.without(conn, "n1")]
        assert identity.of(conn, "n1", "tank/grp/a") is None
    finally:
        conn.close()
    assert {"tank/grp/a", "tank/grp/b"} <= set(missing)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        identity.assign(inv, inv.mirror, conns, nodes=["n1"],
                        volumes=[("n1", "tank/grp/a"), ("n1", "tank/grp/b")])
    a, b = _uuid(t, "tank/grp/a"), _uuid(t, "tank/grp/b")
    assert a[1] == b[1] == "local" and a[0] != b[0]


def test_limit_and_unknown_node_are_clear(tmp_path: Path) -> None:
    from xfleet.core.errors import UsageError

    inv = _fleet(tmp_path, volumes=8)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        res = identity.assign(inv, inv.mirror, conns, nodes=["n1"], limit=3)
        assert res.nodes[0].set == 3
        with pytest.raises(UsageError, match="no node 'nx'"):
            identity.assign(inv, inv.mirror, conns, nodes=["nx"])
        with pytest.raises(UsageError, match="--limit"):
            identity.assign(inv, inv.mirror, conns, limit=0)


def _ensure_many(tmp_path: Path, volumes: int) -> tuple[int, dict[str, str | None], list[str]]:
    """ensure_many over `volumes` of n1's volumes, the first 2 with a UUID already: its
    remote commands on n1, its answer, and the volumes asked."""
    tmp_path.mkdir()
    inv = _fleet(tmp_path, volumes=volumes + 5)
    asked = sorted(_mirror_uuids(inv, "n1"))[:volumes]
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        identity.assign(inv, inv.mirror, conns, volumes=[("n1", v) for v in asked[:2]])
    had = {v: _mirror_uuids(inv, "n1")[v] for v in asked[:2]}
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        got = identity.ensure_many(inv, inv.mirror, conns, "n1", asked)
        commands = conns.commands("n1") + conns.commands("n2")
        # asked again: every one has its UUID now; the same answer without a command
        assert identity.ensure_many(inv, inv.mirror, conns, "n1", asked) == got
        assert conns.commands("n1") + conns.commands("n2") == commands
    assert sorted(got) == asked, "not one answer per volume asked"
    assert {v: got[v] for v in had} == had, "a UUID the volume had was replaced"
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    mirrored = _mirror_uuids(inv, "n1")
    for v in asked:  # on the node, in the mirror, as answered; every one its own
        value = got[v]
        assert value is not None and valid_volume_uuid(value), (v, value)
        assert _uuid(t, v) == (value, "local") and mirrored[v] == value, v
    assert len(set(got.values())) == volumes
    assert all(mirrored[v] is None for v in mirrored if v not in got), "an unasked one got one"
    return commands, got, asked


def test_ensure_many_asks_the_node_once_for_5_or_50_volumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "CHUNK", 7)  # the mirror read in several chunks
    small, _, _ = _ensure_many(tmp_path / "small", 5)
    big, _, _ = _ensure_many(tmp_path / "big", 50)
    assert small == big == 1, f"remote commands: {small} for 5 volumes, {big} for 50"


def test_ensure_many_answers_none_for_a_volume_the_node_cannot_give_one(
        tmp_path: Path) -> None:
    inv = _fleet(tmp_path, volumes=3)
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/app"])
    assert sync(inv).ok
    t.run(["zfs", "destroy", "tank/app"])  # re-created since the mirror saw it
    t.run(["zfs", "create", "-s", "-V", "2G", "tank/app"])
    other = next(v for v in sorted(_mirror_uuids(inv, "n1")) if v != "tank/app")
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        got = identity.ensure_many(inv, inv.mirror, conns, "n1", ["tank/app", other])
        assert conns.commands("n1") == 1
        assert identity.ensure_many(inv, inv.mirror, conns, "n1", []) == {}
        assert conns.commands("n1") == 1  # nothing asked: no command
    assert got["tank/app"] is None and _uuid(t, "tank/app") == ("-", "-")
    assert got[other] is not None and _uuid(t, other) == (got[other], "local")
    # ensure: the same for one volume
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        assert identity.ensure(inv, inv.mirror, conns, "n1", other) == got[other]
        assert conns.commands("n1") == 0


def test_without_and_known_read_the_mirror_in_chunks_in_name_order(
        tmp_path: Path, mirror_at: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On both engines: the names asked in any order, with repeats, read CHUNK at a time."""
    from unit.ops.moves.conftest import with_mirror

    monkeypatch.setattr(identity, "CHUNK", 4)
    inv = inventory.load(with_mirror(write_sim_inventory(
        tmp_path / "fleet.yaml", {"n1": {"volumes": 20, "seed": 11}}), mirror_at))
    assert sync(inv).ok
    conn = mirror.connect(inv.mirror)
    try:
        names = [v for v, _ in identity.without(conn, "n1")]
        asked = names[::-1] + names[:3]
        assert len(names) == 20 and names == sorted(names)
        assert [v for v, _ in identity.without(conn, "n1", volumes=asked)] == names
        assert [v for v, _ in identity.without(conn, "n1", limit=9, volumes=asked)] == \
            names[:9]
        assert identity.known(conn, "n1", [*asked, "tank/nope"]) == \
            dict.fromkeys([*names, "tank/nope"])
    finally:
        conn.close()
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        assert identity.assign(inv, inv.mirror, conns, nodes=["n1"]).to_dict()["set"] == 20
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    conn = mirror.connect(inv.mirror)
    try:
        assert identity.without(conn, "n1", volumes=asked) == []
        got = identity.known(conn, "n1", asked)
    finally:
        conn.close()
    assert sorted(got) == names
    assert all(got[v] is not None and _uuid(t, v) == (got[v], "local") for v in names), got


def test_parse_assign_output_keeps_only_well_formed_lines() -> None:
    text = "tank/a\tset\tu1\ntank/b\tgone\t\ngarbage\ntank/c\terr\tcannot set\n"
    assert identity.parse_assign_output(text) == [
        ("tank/a", "set", "u1"), ("tank/b", "gone", ""), ("tank/c", "err", "cannot set")]


def test_a_move_and_a_replica_carry_the_volumes_uuid(tmp_path: Path) -> None:
    """The volume has no UUID when its move starts: it gets one at first sight, and the moved
    volume and a replica's copy on n2 have that same UUID (received with -o)."""
    from unit.ops.moves.conftest import make_fleet, node, planned, run_move
    from unit.ops.replicate.conftest import policies, run_round

    inv, _, t = make_fleet(tmp_path)
    assert _uuid(t, "tank/app/db") == ("-", "-")
    m = run_move(inv, planned(inv))
    assert m.state == "done", m
    value, source = _uuid(node(inv, "n2"), "tank/app/db")
    assert valid_volume_uuid(value) and source in ("local", "received")
    retired = [n for n in _mirror_uuids(inv, "n1") if n.startswith("tank/app/db.")]
    assert retired and _uuid(t, retired[0])[0] == value  # the old one keeps it, retired
    # a replica of another volume of n1
    t.run(["zfs", "create", "-s", "-V", "1G", "tank/app/logs"])
    t.run(["zfs", "snapshot", "tank/app/logs@a"])
    assert sync(inv).ok
    res = run_round(inv, policies(POLICY_LOGS))
    assert [s["volume"] for s in res.sent] == ["tank/app/logs"], res.to_dict()
    src_uuid = _uuid(t, "tank/app/logs")
    copy = _uuid(node(inv, "n2"), "tank/copies/app/logs")
    assert valid_volume_uuid(src_uuid[0]) and copy[0] == src_uuid[0]


POLICY_LOGS = """\
policies:
  - name: logs
    match: {node: n1, name: "tank/app/logs"}
    schedule: {every: 15m}
    keep: {frequently: 1}
    replicate: [{node: n2, pool: tank, rpo: 1h, root: tank/copies}]
"""
