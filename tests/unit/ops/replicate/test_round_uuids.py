"""A replication round's volume UUIDs (xfleet/ops/replicate/round.py, identity.ensure_many) on
simulated nodes: the volumes of a first round's replicas get their UUID in one remote command
per source node before the streams, whether 5 or 50 replicas are new; every copy is received
with its source's UUID; a volume that has one keeps it (no command at all when all have one);
a node that cannot be asked fails those replicas, nothing is received without the UUID, and
the next round sends them with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from unit.ops.replicate.conftest import policies, prop, rep_fleet, replica, run_round
from xfleet.core.errors import TransportError
from xfleet.core.identity import UUID_PROPERTY, valid_volume_uuid
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.ops import identity
from xfleet.ops.replicate.round import RoundResult
from xfleet.ops.sync import sync
from xfleet.remote.programs import identify
from xfleet.sim import SimTransport

POLICY = policies("""\
policies:
  - name: rep
    match: {node: n1, name: "tank/rep/*"}
    schedule: {every: 15m}
    keep: {frequently: 1}
    replicate: [{node: n2, pool: tank, rpo: 1h, root: tank/copies}]
""")


def _round(inv: inventory.Inventory) -> tuple[RoundResult, dict[str, int]]:
    """A round of POLICY and its assign_uuids commands per node."""
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        res = run_round(inv, POLICY, conns=conns)
        asked = {n: sum(1 for argv in conns.get(n).history
                        if (p := identify(argv)) is not None and p[0].name == "assign_uuids")
                 for n in inv.hosts}
    return res, asked


def _uuids(t: SimTransport, volumes: list[str]) -> dict[str, str]:
    """{volume: its xfleet:uuid on the node ('-': none)}, in one command."""
    out = t.run(["zfs", "get", "-H", "-o", "name,value", UUID_PROPERTY, *volumes]).stdout
    return dict(line.split("\t") for line in out.splitlines())


def _copies(inv: inventory.Inventory, vols: list[str]) -> dict[str, str]:
    """{source volume: its copy's xfleet:uuid on n2}."""
    n2 = SimTransport(inv.hosts["n2"], state_dir=inv.state_dir)
    got = _uuids(n2, [v.replace("tank/", "tank/copies/", 1) for v in vols])
    return {v.replace("tank/copies/", "tank/", 1): u for v, u in got.items()}


def _first_round(tmp_path: Path, volumes: int) -> tuple[dict[str, int], int]:
    """The first round over `volumes` new replicas: its assign_uuids commands per node and
    its remote commands; every copy checked to carry its source's own UUID."""
    inv, t, vols = rep_fleet(tmp_path, volumes)
    assert set(_uuids(t, vols).values()) == {"-"}  # new volumes: no UUID yet
    res, asked = _round(inv)
    assert res.failed == [] and len(res.sent) == volumes, (res.failed[:3], len(res.sent))
    assert {s["how"] for s in res.sent} == {"full"}
    src = _uuids(t, vols)
    assert all(valid_volume_uuid(u) for u in src.values()), src
    assert len(set(src.values())) == volumes, "two volumes were given the same UUID"
    copies = _copies(inv, vols)
    wrong = {v: (src[v], copies.get(v)) for v in vols if copies.get(v) != src[v]}
    assert not wrong, f"copies without their source's UUID (source, copy): {wrong}"
    return asked, res.commands


def test_a_first_round_gives_uuids_in_one_command_per_node_for_5_or_50_replicas(
        tmp_path: Path) -> None:
    small, small_total = _first_round(tmp_path / "small", 5)
    big, big_total = _first_round(tmp_path / "big", 50)
    # one assign_uuids on the source node for all its new replicas, none on the target
    assert small == big == {"n1": 1, "n2": 0}, \
        f"UUID commands per node: {small} for 5 new replicas, {big} for 50"
    print(f"\n  a first round: {small['n1']} UUID command for 5 new replicas ({small_total} "
          f"remote commands in all), {big['n1']} for 50 ({big_total})")


def test_volumes_that_have_a_uuid_keep_it_and_cost_no_command(tmp_path: Path) -> None:
    inv, t, vols = rep_fleet(tmp_path, 6)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        identity.assign(inv, inv.mirror, conns, volumes=[("n1", v) for v in vols[:3]])
    before = _uuids(t, vols)
    assert all(valid_volume_uuid(before[v]) for v in vols[:3]) and \
        {before[v] for v in vols[3:]} == {"-"}, before
    res, asked = _round(inv)
    assert res.failed == [] and len(res.sent) == 6 and asked == {"n1": 1, "n2": 0}, \
        (res.failed, asked)
    after = _uuids(t, vols)
    assert {v: after[v] for v in vols[:3]} == {v: before[v] for v in vols[:3]}, \
        "a volume's UUID was replaced"
    assert _copies(inv, vols) == after
    # new replicas of volumes that all have their UUID: not one UUID command
    more = [f"tank/rep/w{i}" for i in range(4)]
    for v in more:
        t.run(["zfs", "create", "-s", "-V", "1G", v])
    t.run(["zfs", "snapshot", *(f"{v}@r1" for v in more)])
    assert sync(inv).ok
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        assert identity.assign(inv, inv.mirror, conns,
                               volumes=[("n1", v) for v in more]).to_dict()["set"] == 4
    res, asked = _round(inv)
    assert sorted(s["volume"] for s in res.sent) == more and asked == {"n1": 0, "n2": 0}, \
        (res.sent, asked)
    assert _copies(inv, more) == _uuids(t, more)


def test_a_node_that_cannot_be_asked_fails_its_first_sends_until_it_can(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inv, t, vols = rep_fleet(tmp_path, 3)
    real = identity.ensure_many

    def down(*args: object, **kw: object) -> dict[str, str | None]:
        raise TransportError("connection reset", where="n1")

    monkeypatch.setattr(identity, "ensure_many", down)
    res, _ = _round(inv)
    assert res.sent == [] and len(res.failed) == 3, res.to_dict()
    assert all("could not be looked up: connection reset" in f["error"]
               for f in res.failed), res.failed
    # nothing received, and nothing prepared that a later round would send without a UUID
    n2 = SimTransport(inv.hosts["n2"], state_dir=inv.state_dir)
    assert n2.run(["zfs", "list", "-H", "-r", "-t", "volume", "tank/copies"],
                  check=False).stdout == ""
    assert all(replica(inv, f"n1:{v}").receive_properties == {} for v in vols)
    monkeypatch.setattr(identity, "ensure_many", real)
    res, asked = _round(inv)
    assert res.failed == [] and len(res.sent) == 3 and asked["n1"] == 1, res.to_dict()
    assert _copies(inv, vols) == _uuids(t, vols)
    assert all(valid_volume_uuid(u) for u in _uuids(t, vols).values())
    assert prop(n2, UUID_PROPERTY, vols[0].replace("tank/", "tank/copies/", 1))[0] == \
        _uuids(t, vols[:1])[vols[0]]
