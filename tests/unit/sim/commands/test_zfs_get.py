"""`zfs get`: values, sources, applicability, and parity with real OpenZFS 2.3."""

from __future__ import annotations

from xfleet.core.zfs import parse_get, zfs_get

from ..simkit import REAL, TENANT, a_volume_with_snapshots, by_name, replayed_scenario, sim


def test_zfs_get_values_and_sources() -> None:
    t = sim(200, seed=8)
    recs = by_name(t)
    vol = a_volume_with_snapshots(recs)
    got = {(p.name, p.property): p for p in
           parse_get(t.lines(zfs_get([vol, "tank/t0000"], ["used", "compression", TENANT,
                                                            "volsize", "xfleet:none"])))}
    assert got[(vol, "used")].value == str(recs[vol].used)
    assert got[(vol, TENANT)].source == "inherited from tank/t0000"
    assert got[("tank/t0000", TENANT)].source == "local"
    assert got[("tank/t0000", "volsize")].value is None
    assert got[(vol, "xfleet:none")].value is None
    comp = got[(vol, "compression")]
    assert comp.source == ("inherited from tank" if comp.value == "lz4" else "local")
    every = list(parse_get(t.lines(zfs_get([vol]))))
    props = [p.property for p in every]
    assert props[:3] == ["type", "creation", "used"] and "origin" not in props
    assert TENANT in props and "volblocksize" in props and "mountpoint" not in props
    snap = next(n for n in recs if n.startswith(vol + "@"))
    snap_props = {p.property for p in parse_get(t.lines(zfs_get([snap])))}
    assert {"numclones", "compression", "available"}.isdisjoint(snap_props)
    assert {"used", "referenced", "volsize", "written"} <= snap_props


def test_replayed_scenario_gets_like_real_zfs() -> None:
    t, scenario = replayed_scenario()
    mine = [line.split("\t") for line in t.lines(scenario["commands"]["zfs_get_all.txt"])]
    real = [line.rstrip("\n").split("\t") for line in
            (REAL / "zfs_get_all.txt").read_text().splitlines()]
    assert [(r[0], r[1], r[3]) for r in mine] == [(r[0], r[1], r[3]) for r in real]
    measured = {"used", "available", "referenced", "compressratio", "usedbysnapshots",
                "usedbydataset", "usedbychildren", "usedbyrefreservation", "refcompressratio",
                "written", "logicalused", "logicalreferenced", "creation", "createtxg", "guid",
                "objsetid", "snapshots_changed", "refreservation"}
    assert [r for r in mine if r[1] not in measured] == \
        [r for r in real if r[1] not in measured]
