"""The simulated fleet (`kind: sim`): output format, order, determinism, mutations, state."""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES

from xfleet.core.errors import RemoteCommandError, UsageError
from xfleet.core.zfs import (
    DATASET_COLUMNS,
    DatasetRecord,
    parse_datasets,
    parse_get,
    parse_pools,
    parse_status,
    zfs_get,
    zfs_list,
    zpool_list,
    zpool_status,
)
from xfleet.remote.host import Host
from xfleet.sim import DEFAULT_NOW, SimTransport

TENANT = "xfleet:tenant"
RATIO = re.compile(r"^[0-9]+\.[0-9]{2}$")


def sim(volumes: int = 300, seed: int = 1, *, node: str = "n1", pools: tuple[str, ...] = ("tank",),
        state_dir: Path | None = None, **extra: Any) -> SimTransport:
    host = Host(name=node, kind="sim", pools=pools, sim={"seed": seed, "volumes": volumes, **extra})
    return SimTransport(host, state_dir=state_dir)


def listing(t: SimTransport, roots: tuple[str, ...] = ()) -> list[str]:
    return list(t.lines(zfs_list(roots or t.base.pools, user_properties=(TENANT,))))


def records(t: SimTransport, roots: tuple[str, ...] = ()) -> list[DatasetRecord]:
    return list(parse_datasets(listing(t, roots), user_properties=(TENANT,)))


def by_name(t: SimTransport, roots: tuple[str, ...] = ()) -> dict[str, DatasetRecord]:
    return {r.name: r for r in records(t, roots)}


def run(t: SimTransport, *argv: str) -> tuple[int, str, str]:
    r = t.run(list(argv), check=False)
    return r.exit_status, r.stdout, r.stderr


def ok(t: SimTransport, *argv: str) -> str:
    code, out, err = run(t, *argv)
    assert code == 0, f"{argv}: {code} {err}"
    return out


def strcmp_key(name: str, txg: int) -> tuple[bytes, int, int]:
    ds, at, _ = name.partition("@")
    return (ds.encode(), 1 if at else 0, txg if at else 0)


def a_volume_with_snapshots(recs: dict[str, DatasetRecord], *, cloned: bool | None = None) -> str:
    """A non-clone volume that has snapshots (and whose snapshots do / do not have clones)."""
    clones = Counter(r.origin for r in recs.values() if r.origin)
    for name, r in recs.items():
        if r.type != "volume" or r.origin:
            continue
        snaps = [s for s in recs if s.startswith(name + "@")]
        if not snaps:
            continue
        has = any(clones[s] for s in snaps)
        if cloned is None or has == cloned:
            return name
    raise AssertionError("no such volume in the sim fleet")


# ---------------------------------------------------------------------------------------------
# the base fleet: format, determinism, order, realism


def test_same_seed_same_output_different_seed_or_node_differs() -> None:
    a, b = listing(sim(200, seed=7)), listing(sim(200, seed=7))
    assert a == b
    c = listing(sim(200, seed=8))
    assert c != a
    d = listing(sim(200, seed=7, node="n2"))
    guids_a = {line.split("\t")[2] for line in a}
    guids_d = {line.split("\t")[2] for line in d}
    assert not guids_a & guids_d  # same seed on another node: other datasets, other guids


def test_default_seed_comes_from_the_node_name() -> None:
    def unseeded(node: str) -> list[str]:
        t = SimTransport(Host(name=node, kind="sim", sim={"volumes": 50}))
        return listing(t)

    assert unseeded("a") == unseeded("a")
    assert unseeded("a") != unseeded("b")


def test_every_column_parses_with_the_real_parser() -> None:
    t = sim(400, seed=2)
    recs = records(t)
    assert len(recs) > 400 * 2
    types = Counter(r.type for r in recs)
    assert set(types) == {"filesystem", "volume", "snapshot"}
    guids = [r.guid for r in recs]
    assert len(set(guids)) == len(guids)
    for r in recs:
        assert r.guid is not None and r.guid.isdigit() and 0 < int(r.guid) < 2**64
        assert r.createtxg is not None and r.createtxg > 0
        assert r.creation is not None and 1.6e9 < r.creation <= DEFAULT_NOW
        assert r.used is not None and r.referenced is not None and r.written is not None
        assert r.logicalreferenced is not None
        assert r.compressratio is not None and r.compressratio >= 1.0
        assert r.refcompressratio is not None and r.refcompressratio >= 1.0
        if r.type == "snapshot":
            assert r.origin is None and r.compression is None and r.volblocksize is None
            assert r.logicalused is None and r.usedbysnapshots is None
            assert r.refreservation is None and r.usedbyrefreservation is None
            assert r.volsize is not None  # snapshots of zvols show volsize
        elif r.type == "volume":
            assert r.volsize and r.volblocksize in (8192, 16384, 65536)
            assert r.compression in ("lz4", "zstd", "off", "gzip-9")
            assert r.refreservation is not None and r.usedbyrefreservation is not None
        else:
            assert r.volsize is None and r.volblocksize is None and r.origin is None
            assert r.compression == "lz4" and r.refreservation == 0
        tenant = r.user_properties.get(TENANT)
        if r.name == "tank":
            assert tenant is None
        else:
            assert tenant is not None and r.name.startswith(f"tank/{tenant}")


def test_raw_field_formats_match_zfs_minus_p() -> None:
    t = sim(300, seed=4)
    cols = [*DATASET_COLUMNS, "numclones", "mountpoint", "available", "usedbydataset",
            "usedbychildren", "snapshots_changed", "readonly", "volmode", TENANT, "xfleet:other"]
    out = list(t.lines(["zfs", "list", "-H", "-p", "-t", "all", "-o", ",".join(cols), "-r",
                        "tank"]))
    idx = {c: i for i, c in enumerate(cols)}
    for line in out:
        f = line.split("\t")
        assert len(f) == len(cols)
        typ = f[idx["type"]]
        assert RATIO.match(f[idx["compressratio"]]) and RATIO.match(f[idx["refcompressratio"]])
        assert f[idx["xfleet:other"]] == "-"
        assert f[idx["creation"]].isdigit() and f[idx["guid"]].isdigit()
        if typ == "snapshot":
            assert f[idx["numclones"]].isdigit()
            for c in ("mountpoint", "available", "usedbydataset", "readonly", "volmode",
                      "snapshots_changed", "origin"):
                assert f[idx[c]] == "-", (c, line)
        else:
            assert f[idx["numclones"]] == "-"
            assert f[idx["available"]].isdigit() and f[idx["usedbydataset"]].isdigit()
            assert f[idx["readonly"]] == "off" and f[idx["volmode"]] == "default"
            assert f[idx["refreservation"]].isdigit()  # 'none' is 0 with -p
        if typ == "filesystem":
            assert f[idx["mountpoint"]] == "none"  # the pool root has mountpoint=none
            assert f[idx["volsize"]] == "-" and f[idx["snapshots_changed"]] == "-"
        if typ == "volume":
            assert f[idx["mountpoint"]] == "-"
            sc = f[idx["snapshots_changed"]]
            assert sc == "-" or sc.isdigit()


def test_listing_order_is_strcmp_with_snapshots_after_their_dataset() -> None:
    t = sim(500, seed=5, pools=("tank", "data"))
    recs = records(t, ("tank", "data"))
    keys = [strcmp_key(r.name, r.createtxg or 0) for r in recs]
    assert keys == sorted(keys)
    assert recs[0].name == "data"  # pools sorted by name too
    names = [r.name for r in recs]
    for i, r in enumerate(recs):
        if r.type == "snapshot":
            ds = r.name.split("@")[0]
            j = i
            while names[j].startswith(ds + "@"):
                j -= 1
            assert names[j] == ds  # snapshots directly follow their dataset ...
    snaps = [r for r in recs if r.type == "snapshot"]
    for a, b in zip(snaps, snaps[1:], strict=False):
        if a.name.split("@")[0] == b.name.split("@")[0]:
            assert a.createtxg is not None and b.createtxg is not None
            assert a.createtxg < b.createtxg and (a.creation or 0) < (b.creation or 0)


def test_row_counts_scale_with_volumes() -> None:
    small = len(listing(sim(100, seed=9)))
    big = len(listing(sim(2000, seed=9)))
    assert big > 2 * 2000  # volumes, ~2 snapshots each, tenants
    assert 15 < big / small < 25


def test_space_accounting_is_consistent() -> None:
    recs = by_name(sim(600, seed=11))
    clones = Counter(r.origin for r in recs.values() if r.origin)
    assert clones, "default settings produce clones"
    thick = thin = 0
    for r in recs.values():
        assert r.used is not None and r.logicalreferenced is not None
        if r.type == "volume":
            assert r.usedbysnapshots is not None and r.usedbyrefreservation is not None
            assert r.refreservation is not None and r.volsize and r.referenced
            assert r.logicalused is not None and r.written is not None
            ubd = r.used - r.usedbysnapshots - r.usedbyrefreservation
            if not r.origin:
                assert ubd == r.referenced  # used = referenced + usedbysnapshots + usedbyrefres
            assert 0 <= ubd <= r.referenced
            assert r.written <= r.referenced
            physical = r.used - r.usedbyrefreservation
            assert r.compressratio == int(100 * r.logicalused / physical) / 100
            assert r.refcompressratio == int(100 * r.logicalreferenced / r.referenced) / 100
            if r.compression == "off":
                assert r.compressratio == r.refcompressratio == 1.0
            if r.refreservation:
                thick += 1
                assert not r.origin and r.refreservation > r.volsize
                assert r.usedbyrefreservation == max(0, r.refreservation - r.written)
            else:
                thin += 1
                assert r.usedbyrefreservation == 0
        if r.type == "snapshot":
            head = recs[r.name.split("@")[0]]
            assert head.createtxg is not None and r.createtxg is not None
            assert r.createtxg > head.createtxg and r.volsize == head.volsize
            assert re.match(r"^auto-\d{8}-\d{4}$", r.name.split("@")[1])
            assert r.referenced is not None and r.written is not None
            assert r.written <= r.referenced
    assert thick and thin > thick
    assert all(recs[name].type == "snapshot" for name in clones)  # origins are snapshots
    # filesystems add up their children
    fs = recs["tank/t0000"]
    kids = [r for n, r in recs.items() if n.startswith("tank/t0000/") and "@" not in n]
    assert fs.used == 98304 + sum(k.used or 0 for k in kids)
    root = recs["tank"]
    tops = [r for n, r in recs.items() if n.count("/") == 1 and "@" not in n]
    assert root.used == 98304 + sum(k.used or 0 for k in tops)


def test_numclones_counts_the_clones_of_each_snapshot() -> None:
    t = sim(800, seed=12)
    lines = t.lines(["zfs", "list", "-H", "-p", "-t", "all", "-o",
                     "name,type,origin,numclones,creation,createtxg", "-r", "tank"])
    rows = [line.split("\t") for line in lines]
    origins = Counter(r[2] for r in rows if r[2] != "-")
    info = {r[0]: r for r in rows}
    snaps = [r for r in rows if r[1] == "snapshot"]
    assert sum(int(r[3]) for r in snaps) == sum(origins.values()) > 0
    for r in snaps:
        assert int(r[3]) == origins.get(r[0], 0)
    for clone, row in info.items():
        if row[2] != "-":
            origin = info[row[2]]
            assert int(row[4]) > int(origin[4]) and int(row[5]) > int(origin[5])
            assert clone.split("/")[1] == row[2].split("/")[1]  # branches stay in the tenant
    with_clone = sum(1 for r in snaps if int(r[3]))
    assert 0.01 < with_clone / len(snaps) < 0.1  # clone_fraction 0.05


def test_realistic_distributions() -> None:
    recs = [r for r in records(sim(3000, seed=13)) if r.type == "volume"]
    sizes = sorted(r.volsize or 0 for r in recs)
    gib = 1 << 30
    assert sizes[len(sizes) // 2] <= 20 * gib  # most are small
    assert sizes[-1] > 200 * gib and sizes[-1] <= 2048 * gib  # a few are huge
    comp = Counter(r.compression for r in recs if not r.origin)
    assert comp.most_common(1)[0][0] == "lz4"
    assert {"zstd", "off", "gzip-9"} <= set(comp)
    vbs = Counter(r.volblocksize for r in recs)
    assert vbs.most_common(1)[0][0] == 16384 and set(vbs) == {8192, 16384, 65536}
    tenants = Counter(r.user_properties[TENANT] for r in recs)
    assert len(tenants) == 3000 // 25
    assert max(tenants.values()) > 3 * min(tenants.values())  # uneven tenants


def test_settings_are_validated() -> None:
    with pytest.raises(UsageError, match="unknown sim setting 'volume'"):
        sim(10, volume=5)
    with pytest.raises(UsageError, match="clone_fraction"):
        sim(10, clone_fraction=2)
    t = sim(0)
    assert listing(t) == [listing(t)[0]] and listing(t)[0].startswith("tank\t")


def test_snapshot_and_clone_settings() -> None:
    none = records(sim(300, seed=1, snapshots=0))
    assert not any(r.type == "snapshot" for r in none)
    assert not any(r.origin for r in none)
    many = records(sim(300, seed=1, snapshots=4, max_snapshots=8, clone_fraction=0.2))
    snaps = sum(1 for r in many if r.type == "snapshot")
    assert snaps > 300 * 3
    assert sum(1 for r in many if r.origin) > 0.1 * snaps


# ---------------------------------------------------------------------------------------------
# selecting what is listed


def test_recursive_root_depth_and_types_restrict_the_output() -> None:
    t = sim(300, seed=3)
    everything = listing(t)
    sub = listing(t, ("tank/t0002",))
    assert sub and all(line.split("\t")[0].startswith("tank/t0002") for line in sub)
    assert sub == [line for line in everything
                   if re.match(r"^tank/t0002([/@]|\t)", line)]
    vol = next(line.split("\t")[0] for line in sub if "\tvolume\t" in line)
    one = listing(t, (vol,))
    assert one[0].startswith(vol + "\t") and all(x.startswith(vol) for x in one)
    top = ok(t, "zfs", "list", "-H", "-o", "name", "-d", "1", "tank").split()
    assert top[0] == "tank" and all(n.count("/") == 1 for n in top[1:])
    vols = ok(t, "zfs", "list", "-H", "-o", "name,type", "-t", "volume", "-r", "tank")
    assert {line.split("\t")[1] for line in vols.splitlines()} == {"volume"}
    snaps = ok(t, "zfs", "list", "-H", "-o", "name", "-t", "snapshot", vol).split("\n")[:-1]
    assert snaps and all(s.startswith(vol + "@") for s in snaps)
    default = ok(t, "zfs", "list", "-H", "-o", "name", "-r", "tank").split("\n")
    assert not any("@" in n for n in default)  # snapshots only when asked for
    two = listing(t, ("tank/t0003", "tank/t0001"))
    assert two == [line for line in everything if re.match(r"^tank/t000[13]([/@]|\t)", line)]


def test_fast_columns_list_the_same_datasets() -> None:
    t = sim(500, seed=6)
    full = [line.split("\t") for line in listing(t)]
    fast = [line.split("\t") for line in
            t.lines(zfs_list(["tank"], columns=("name", "guid", "createtxg", "origin")))]
    assert [(f[0], f[2], f[3], f[4]) for f in full] == [tuple(f) for f in fast]


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


def test_zpool_list_and_status_parse() -> None:
    t = sim(300, seed=10, pools=("tank", "fast"))
    pools = {p.name: p for p in parse_pools(t.lines(zpool_list()))}
    assert set(pools) == {"tank", "fast"}
    recs = by_name(t, ("tank", "fast"))
    for name, p in pools.items():
        assert p.health == "ONLINE" and p.ashift == 12 and p.dedupratio == 1.0
        assert p.size and p.allocated and p.free is not None
        assert p.size == p.allocated + p.free
        assert p.capacity == p.allocated * 100 // p.size
        assert 0 <= (p.fragmentation or 0) <= 100
        root = recs[name]
        assert root.used is not None and root.used < p.size  # reservations fit in the pool
        assert p.guid and p.guid.isdigit()
    (one,) = parse_pools(t.lines(zpool_list(["fast"])))
    assert one.name == "fast"
    status = parse_status("\n".join(t.lines(zpool_status())))
    assert [s.name for s in status] == ["fast", "tank"]
    for s in status:
        assert s.state == "ONLINE" and s.errors == "No known data errors"
        assert [v.name for v in s.vdevs][1] == "mirror-0"
        assert all(v.state == "ONLINE" and v.read == 0 for v in s.vdevs)
        assert s.scan and "scrub repaired" in s.scan and not s.scan_in_progress
    single = parse_status("\n".join(sim(10, vdev="single").lines(zpool_status())))
    assert len(single[0].vdevs) == 2


# ---------------------------------------------------------------------------------------------
# mutations


def test_create_appears_in_sorted_position_with_real_defaults(tmp_path: Path) -> None:
    t = sim(100, seed=1)
    ok(t, "zfs", "create", "-V", "10G", "-o", "xfleet:note=hi", "tank/t0001-branch")
    ok(t, "zfs", "create", "-s", "-V", "1G", "tank/t0001/new vol:1.a-b_c")
    recs = records(t)
    keys = [strcmp_key(r.name, r.createtxg or 0) for r in recs]
    assert keys == sorted(keys)
    new = {r.name: r for r in recs}
    thick, thin = new["tank/t0001-branch"], new["tank/t0001/new vol:1.a-b_c"]
    assert thick.volsize == 10 << 30 and thick.volblocksize == 16384
    assert thick.refreservation and thick.refreservation > thick.volsize
    assert thick.used == thick.referenced + thick.refreservation - (thick.written or 0)
    assert thin.refreservation == 0 and thin.used == thin.referenced
    assert thin.user_properties[TENANT] == "t0001"  # inherited from the new parent
    assert thick.user_properties.get(TENANT) is None
    created = {"tank/t0001-branch", "tank/t0001/new vol:1.a-b_c"}
    base_max = max(r.createtxg or 0 for r in recs if r.name not in created)
    assert (thin.createtxg or 0) > (thick.createtxg or 0) > base_max  # txgs keep growing
    code, _, err = run(t, "zfs", "create", "-V", "1G", "tank/t0001-branch")
    assert code == 1 and err == "cannot create 'tank/t0001-branch': dataset already exists\n"
    code, _, err = run(t, "zfs", "create", "tank/x/y")
    assert code == 1 and err == "cannot create 'tank/x/y': parent does not exist\n"
    code, _, err = run(t, "zfs", "create", "-V", "1G", "tank/t0001-branch/z")
    assert code == 1 and "parent is not a filesystem" in err
    code, _, err = run(t, "zfs", "create", "-V", "1000", "tank/odd")
    assert code == 1 and "multiple of volume block size" in err
    ok(t, "zfs", "create", "-p", "tank/x/y")
    assert {"tank/x", "tank/x/y"} <= set(by_name(t))
    code, _, err = run(t, "zfs", "create", "-b", "8K", "-s", "-V", "8K", "tank/small")
    assert code == 0 and err.startswith("Warning: volblocksize (8192)")


def test_snapshot_many_names_is_atomic() -> None:
    t = sim(100, seed=1)
    vols = [r.name for r in records(t) if r.type == "volume"][:3]
    ok(t, "zfs", "snapshot", *(f"{v}@s 1" for v in vols))
    after = by_name(t)
    txgs = {after[f"{v}@s 1"].createtxg for v in vols}
    assert len(txgs) == 1  # one transaction group for the whole command
    for v in vols:
        snap, head = after[f"{v}@s 1"], after[v]
        assert snap.referenced == head.referenced and snap.used == 0
        assert head.written == 0
    code, _, err = run(t, "zfs", "snapshot", f"{vols[0]}@s 2", f"{vols[1]}@s 1")
    assert code == 1 and f"cannot create snapshot '{vols[1]}@s 1': dataset already exists" in err
    assert f"{vols[0]}@s 2" not in by_name(t)  # nothing was created
    code, _, err = run(t, "zfs", "snapshot", "tank/nope@x")
    assert code == 2 and err.startswith("cannot open 'tank/nope': dataset does not exist\n")
    ok(t, "zfs", "snapshot", "-r", "tank/t0002@daily")
    recs = by_name(t)
    below = [n for n, r in recs.items() if n.startswith("tank/t0002") and r.type != "snapshot"]
    assert all(f"{n}@daily" in recs for n in below)


def test_clone_and_numclones() -> None:
    t = sim(100, seed=1)
    recs = by_name(t)
    vol = a_volume_with_snapshots(recs, cloned=False)
    snap = next(n for n in recs if n.startswith(vol + "@"))
    ok(t, "zfs", "clone", snap, "tank/t0000/branch-1")
    ok(t, "zfs", "clone", "-o", "compression=zstd", snap, "tank/t0000/branch-2")
    after = by_name(t)
    b1 = after["tank/t0000/branch-1"]
    assert b1.origin == snap and b1.type == "volume" and b1.volsize == recs[vol].volsize
    assert b1.referenced == recs[snap].referenced and b1.used == b1.written == 8192  # as real
    assert after["tank/t0000/branch-2"].compression == "zstd"
    got = dict(line.split("\t") for line in
               t.lines(["zfs", "list", "-H", "-o", "name,numclones", snap]))
    assert got == {snap: "2"}
    clones = list(parse_get(t.lines(zfs_get([snap], ["clones"]))))
    assert clones[0].value == "tank/t0000/branch-1,tank/t0000/branch-2"
    code, _, err = run(t, "zfs", "clone", vol, "tank/t0000/x")
    assert code == 1 and "operation not applicable to datasets of this type" in err


def test_destroy_refuses_with_dependents_like_zfs() -> None:
    t = sim(100, seed=1)
    recs = by_name(t)
    vol = a_volume_with_snapshots(recs, cloned=False)
    snaps = [n for n in recs if n.startswith(vol + "@")]
    ok(t, "zfs", "clone", snaps[0], "tank/t0000/branch")
    code, out, err = run(t, "zfs", "destroy", vol)
    assert code == 1 and out == ""
    assert err == (f"cannot destroy '{vol}': volume has children\n"
                   "use '-r' to destroy the following datasets:\n" + "\n".join(snaps) + "\n")
    code, _, err = run(t, "zfs", "destroy", "-r", vol)
    assert code == 1 and err == (f"cannot destroy '{vol}': volume has dependent clones\n"
                                 "use '-R' to destroy the following datasets:\n"
                                 "tank/t0000/branch\n")
    code, _, err = run(t, "zfs", "destroy", snaps[0])
    assert code == 1 and err == (f"cannot destroy '{snaps[0]}': snapshot has dependent clones\n"
                                 "use '-R' to destroy the following datasets:\n"
                                 "tank/t0000/branch\n")
    code, _, err = run(t, "zfs", "destroy", "tank")
    assert code == 1 and "operation does not apply to pools" in err
    code, _, err = run(t, "zfs", "destroy", "tank/nope")
    assert code == 1 and err == "cannot open 'tank/nope': dataset does not exist\n"
    out = ok(t, "zfs", "destroy", "-nvR", vol)
    assert out.splitlines()[0] == "would destroy tank/t0000/branch"
    assert out.splitlines()[-1] == f"would destroy {vol}"
    assert vol in by_name(t)  # -n changed nothing
    ok(t, "zfs", "destroy", "-R", vol)
    after = by_name(t)
    assert vol not in after and "tank/t0000/branch" not in after
    assert not any(n.startswith(vol + "@") for n in after)


def test_destroy_updates_parents_and_origin_snapshots() -> None:
    t = sim(200, seed=21)
    recs = by_name(t)
    clone = next(r for r in recs.values() if r.origin)
    origin = clone.origin
    assert origin is not None
    before = int(next(t.lines(["zfs", "list", "-H", "-o", "numclones", origin])))
    tenant = "/".join(clone.name.split("/")[:2])
    ok(t, "zfs", "destroy", "-r", clone.name)
    after = by_name(t)
    assert clone.name not in after
    assert int(next(t.lines(["zfs", "list", "-H", "-o", "numclones", origin]))) == before - 1
    assert after[tenant].used == (recs[tenant].used or 0) - (clone.used or 0)
    assert after["tank"].used == (recs["tank"].used or 0) - (clone.used or 0)
    vol = a_volume_with_snapshots(after, cloned=False)
    snaps = [n for n in after if n.startswith(vol + "@")]
    ok(t, "zfs", "destroy", snaps[-1])
    later = by_name(t)
    assert snaps[-1] not in later and later[vol].usedbysnapshots is not None
    assert later[vol].usedbysnapshots <= (after[vol].usedbysnapshots or 0)
    assert (later[vol].written or 0) >= (after[vol].written or 0)


def test_destroy_recursive_of_a_tenant_and_of_the_pool() -> None:
    t = sim(300, seed=2)
    ok(t, "zfs", "destroy", "-r", "tank/t0003")
    names = set(by_name(t))
    assert not any(n.startswith("tank/t0003") for n in names)
    ok(t, "zfs", "snapshot", "tank@before")
    ok(t, "zfs", "destroy", "-r", "tank")
    assert [line.split("\t")[0] for line in listing(t)] == ["tank"]


def test_set_and_inherit_are_visible() -> None:
    t = sim(100, seed=1)
    vol = next(r.name for r in records(t) if r.type == "volume")
    ok(t, "zfs", "set", "compression=gzip-9", "xfleet:tenant=t9999", "readonly=on", vol)
    r = by_name(t)[vol]
    assert r.compression == "gzip-9" and r.user_properties[TENANT] == "t9999"
    assert next(t.lines(["zfs", "list", "-H", "-o", "readonly", vol])) == "on"
    ok(t, "zfs", "inherit", TENANT, vol)
    assert by_name(t)[vol].user_properties[TENANT] == vol.split("/")[1]
    ok(t, "zfs", "set", "compression=zstd", "tank")  # inherited all the way down
    fs_comp = {r.compression for r in records(t) if r.type == "filesystem"}
    assert fs_comp == {"zstd"}
    ok(t, "zfs", "set", "volsize=20G", vol)
    assert by_name(t)[vol].volsize == 20 << 30
    code, _, err = run(t, "zfs", "set", "compression=fast", vol)
    assert code == 1 and err.startswith(f"cannot set property for '{vol}': 'compression' must be")
    code, _, err = run(t, "zfs", "set", "used=1", vol)
    assert code == 1 and err == f"cannot set property for '{vol}': 'used' is readonly\n"
    code, _, err = run(t, "zfs", "set", "bogus=1", vol)
    assert code == 1 and "invalid property 'bogus'" in err
    code, _, err = run(t, "zfs", "set", "compression=lz4", vol + "@nope")
    assert code == 1 and "dataset does not exist" in err


def test_rename_moves_subtree_and_fixes_clone_origins() -> None:
    t = sim(200, seed=21)
    recs = by_name(t)
    clone = next(r for r in recs.values() if r.origin)
    assert clone.origin is not None
    parent_vol, snapname = clone.origin.split("@")
    ok(t, "zfs", "create", "tank/moved")
    ok(t, "zfs", "rename", parent_vol, "tank/moved/vol")
    after = by_name(t)
    assert parent_vol not in after and "tank/moved/vol" in after
    assert after["tank/moved/vol"].guid == recs[parent_vol].guid  # guid survives a rename
    assert after[clone.name].origin == f"tank/moved/vol@{snapname}"
    moved_snaps = [n for n in after if n.startswith("tank/moved/vol@")]
    assert len(moved_snaps) == sum(1 for n in recs if n.startswith(parent_vol + "@"))
    assert after["tank/moved/vol"].user_properties.get(TENANT) is None  # new parent, no tenant
    ok(t, "zfs", "rename", f"tank/moved/vol@{snapname}", "@renamed")
    assert by_name(t)[clone.name].origin == "tank/moved/vol@renamed"
    code, _, err = run(t, "zfs", "rename", "tank/moved", "tank/moved/inner")
    assert code == 1 and "descendant" in err
    code, _, err = run(t, "zfs", "rename", "tank/moved/vol", clone.name)
    assert code == 1 and err == f"cannot rename to '{clone.name}': dataset already exists\n"


def test_promote_swaps_origin_and_snapshots() -> None:
    t = sim(100, seed=1)
    ok(t, "zfs", "create", "-s", "-V", "4G", "tank/base")
    ok(t, "zfs", "snapshot", "tank/base@one")
    ok(t, "zfs", "snapshot", "tank/base@two")
    ok(t, "zfs", "clone", "tank/base@one", "tank/branch")
    ok(t, "zfs", "promote", "tank/branch")
    got = {r.name: r for r in records(t, ("tank/base", "tank/branch"))}
    assert got["tank/branch"].origin is None
    assert got["tank/base"].origin == "tank/branch@one"
    assert "tank/branch@one" in got and "tank/base@one" not in got
    assert "tank/base@two" in got  # later snapshots stay
    assert next(t.lines(["zfs", "list", "-H", "-o", "numclones", "tank/branch@one"])) == "1"
    code, _, err = run(t, "zfs", "promote", "tank/branch")
    assert code == 1 and err == "cannot promote 'tank/branch': not a cloned filesystem\n"


def test_mountpoints_inherit_with_the_relative_path() -> None:
    t = sim(60)
    ok(t, "zfs", "set", "mountpoint=/srv", "canmount=on", "tank")
    got = dict(line.split("\t") for line in
               t.lines(["zfs", "list", "-H", "-o", "name,mountpoint", "-d", "1", "tank"]))
    assert got == {"tank": "/srv", "tank/t0000": "/srv/t0000", "tank/t0001": "/srv/t0001"}
    mounted = list(parse_get(t.lines(zfs_get(["tank/t0001"], ["mounted", "mountpoint"]))))
    assert [(p.value, p.source) for p in mounted] == [("yes", None),
                                                      ("/srv/t0001", "inherited from tank")]


def test_bookmarks_are_listed_and_destroyed() -> None:
    t = sim(60)
    vol = a_volume_with_snapshots(by_name(t))
    snap = next(n for n in by_name(t) if n.startswith(vol + "@"))
    ok(t, "zfs", "bookmark", snap, "#keep")
    rows = [line.split("\t") for line in t.lines(["zfs", "list", "-H", "-p", "-t", "all", "-o",
                                                  "name,type,guid,referenced,used", "-r", vol])]
    bm = next(r for r in rows if r[1] == "bookmark")
    assert bm[0] == vol + "#keep" and bm[2] == next(r[2] for r in rows if r[0] == snap)
    assert bm[4] == "-"
    assert rows.index(bm) == len(rows) - 1  # after the dataset's snapshots
    assert ok(t, "zfs", "list", "-H", "-o", "name", "-t", "bookmark", "-r", "tank") == bm[0] + "\n"
    ok(t, "zfs", "destroy", vol + "#keep")
    assert ok(t, "zfs", "list", "-H", "-o", "name", "-t", "bookmark", "-r", "tank") == ""


def test_untouched_rows_stay_byte_identical_after_mutations() -> None:
    t = sim(400, seed=17)
    cols = ",".join([*DATASET_COLUMNS, "usedbydataset", "numclones", "available", TENANT])
    argv = ["zfs", "list", "-H", "-p", "-t", "all", "-o", cols, "-r", "tank"]
    before = list(t.lines(argv))
    vol = before[3].split("\t")[0]
    ok(t, "zfs", "set", "xfleet:note=changed", vol)  # not a listed column: nothing changes
    assert list(t.lines(argv)) == before
    generic = list(t.lines(argv[:6] + ["-o", cols + ",checksum", "-r", "tank"]))
    assert [line.rsplit("\t", 1)[0] for line in generic] == before  # slow path == fast path


# ---------------------------------------------------------------------------------------------
# state, errors, scale


def test_state_persists_across_instances(tmp_path: Path) -> None:
    a = sim(100, seed=1, state_dir=tmp_path)
    b = sim(100, seed=1, state_dir=tmp_path)
    ok(a, "zfs", "create", "-V", "1G", "tank/from-a")
    assert "tank/from-a" in by_name(b)  # another process's view of the same node
    ok(b, "zfs", "destroy", "tank/from-a")
    assert "tank/from-a" not in by_name(a)
    assert (tmp_path / "sim-n1.sqlite").is_file()
    conn = sqlite3.connect(tmp_path / "sim-n1.sqlite")
    assert conn.execute("SELECT count(*) FROM records").fetchone()[0] < 10  # only the overlay
    other = sim(100, seed=1, node="n2", state_dir=tmp_path)
    assert "tank/from-a" not in by_name(other)
    ok(a, "zfs", "create", "tank/kept")
    changed = sim(101, seed=1, state_dir=tmp_path)  # other settings: a fresh base
    assert "tank/kept" not in by_name(changed)
    in_memory = sim(100, seed=1)
    assert "tank/kept" not in by_name(in_memory)


def test_concurrent_changes_from_two_transports_all_land(tmp_path: Path) -> None:
    import threading

    nodes = [sim(50, state_dir=tmp_path) for _ in range(2)]

    def work(t: SimTransport, prefix: str) -> None:
        for i in range(8):
            ok(t, "zfs", "create", "-s", "-V", "1G", f"tank/{prefix}{i}")
            ok(t, "zfs", "snapshot", f"tank/{prefix}{i}@s")

    threads = [threading.Thread(target=work, args=(t, p)) for t, p in zip(nodes, "ab",
                                                                         strict=True)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    names = set(by_name(sim(50, state_dir=tmp_path)))
    assert {f"tank/{p}{i}@s" for p in "ab" for i in range(8)} <= names


def test_unusable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    from xfleet.core.errors import TransportError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TransportError, match="cannot open the simulator state"):
        sim(10, state_dir=blocker / "state")


def test_errors_look_like_zfs() -> None:
    t = sim(50)
    with pytest.raises(RemoteCommandError) as exc:
        list(t.lines(zfs_list(["tank/missing"])))
    assert exc.value.exit_status == 1
    assert exc.value.stderr == "cannot open 'tank/missing': dataset does not exist\n"
    code, _, err = run(t, "zfs", "list", "-o", "name,bogus")
    assert code == 2 and err.startswith("bad property list: invalid property 'bogus'\nusage:")
    code, _, err = run(t, "zfs", "list", "-t", "thing")
    assert code == 2 and err.startswith("invalid type 'thing'")
    code, _, err = run(t, "zfs", "list", "-Q")
    assert code == 2 and err.startswith("invalid option 'Q'")
    code, _, err = run(t, "zfs", "frobnicate")
    assert code == 2 and "unrecognized command 'frobnicate'" in err
    code, _, err = run(t, "ls", "-l")
    assert code == 127 and "command not found" in err
    code, _, err = run(t, "zpool", "list", "nopool")
    assert code == 1 and err == "cannot open 'nopool': no such pool\n"
    code, _, err = run(t, "zfs", "get", "bogus", "tank")
    assert code == 2 and "invalid property 'bogus'" in err
    code, out, _ = run(t, "zfs", "list", "-H", "-o", "name", "tank", "tank/missing")
    assert code == 1 and out == "tank\n"  # what exists is still listed
    assert ok(t, "zfs", "version").startswith("zfs-2.3")


def test_human_readable_output_without_p() -> None:
    t = sim(50)
    out = ok(t, "zfs", "list", "-o", "name,used,refer,ratio", "-d", "1", "tank").splitlines()
    assert out[0].split() == ["NAME", "USED", "REFER", "RATIO"]
    assert out[1].split()[2] == "96K" and out[1].split()[3].endswith("x")
    pools = ok(t, "zpool", "list").splitlines()
    assert pools[0].split()[:3] == ["NAME", "SIZE", "ALLOC"] and pools[1].endswith("-")


_MEMORY_PROBE = """
import resource, sys, tracemalloc
from xfleet.remote.host import Host
from xfleet.sim import SimTransport
from xfleet.core.zfs import zfs_list
t = SimTransport(Host(name="n1", kind="sim", pools=("tank",), sim={"seed": 3, "volumes": %d}))
small = t.lines(zfs_list(["tank"], columns=("name",)))
next(small); small.close()  # compile the generators, load the settings
tracemalloc.start()
n = 0
for _ in t.lines(zfs_list(["tank"], columns=("name",), user_properties=())):
    n += 1
    if n == 5000:
        break
_, peak_small = tracemalloc.get_traced_memory()
tracemalloc.stop()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows = sum(1 for _ in t.lines(zfs_list(["tank"], user_properties=("xfleet:tenant",))))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(rows, (after - before) * 1024, peak_small)
"""


def test_listing_memory_does_not_grow_with_rows() -> None:
    """Streaming 200k+ rows (all columns) leaves the process's peak RSS where it was."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE % 70000], capture_output=True,
                         text=True, check=True, timeout=120).stdout.split()
    rows, grew, peak_small = int(out[0]), int(out[1]), int(out[2])
    assert rows > 200_000
    assert grew < 16 << 20, f"peak RSS grew by {grew} bytes while streaming {rows} rows"
    assert peak_small < 2 << 20  # traced allocations while streaming: one tenant at a time


def test_streaming_rate_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    t = sim(30000, seed=4)
    argv = zfs_list(["tank"], user_properties=(TENANT,))
    start = time.perf_counter()
    n = sum(1 for _ in t.lines(argv))
    full = n / (time.perf_counter() - start)
    start = time.perf_counter()
    m = sum(1 for _ in t.lines(zfs_list(["tank"], columns=("name", "guid", "createtxg",
                                                           "origin"))))
    fast = m / (time.perf_counter() - start)
    assert n == m > 90_000
    with capsys.disabled():
        print(f"\nsim zfs list: {n} rows, all columns {full:,.0f} lines/s, "
              f"fast columns {fast:,.0f} lines/s")


def test_throttled_node_is_slower() -> None:
    t = sim(20, rows_per_second=2000)
    start = time.perf_counter()
    n = len(listing(t))
    assert time.perf_counter() - start >= (n - 256) / 2000 * 0.9


# ---------------------------------------------------------------------------------------------
# against real OpenZFS 2.3 output captured in the lab (tests/fixtures/real, see its README)

REAL = FIXTURES / "real"


def replayed_scenario() -> tuple[SimTransport, dict[str, Any]]:
    """The lab scenario played on an empty simulated pool (writes cannot be replayed)."""
    import json

    assert (REAL / "scenario.json").is_file(), "real fixtures missing: python -m tools.capture"
    scenario = json.loads((REAL / "scenario.json").read_text())
    t = sim(0)
    ok(t, "zfs", "inherit", "compression", "tank")  # the lab pool keeps the default: on
    for step in scenario["steps"]:
        for argv in step.get("argv") or []:
            ok(t, *argv)
    return t, scenario


def test_replayed_scenario_lists_like_real_zfs() -> None:
    t, scenario = replayed_scenario()
    argv = scenario["commands"]["zfs_list_all.txt"]
    real = [line.rstrip("\n").split("\t") for line in
            (REAL / "zfs_list_all.txt").read_text().splitlines()]
    mine = [line.split("\t") for line in t.lines(argv)]
    # names, order, types, origins, sizes set at creation, compression, tenants: identical
    same = [0, 1, 4, 6, 7, 16, 19]
    assert [[r[i] for i in same] for r in mine] == [[r[i] for i in same] for r in real]
    # '-' exactly where real zfs prints '-', and thick volumes where real has them
    assert [[v == "-" for v in r] for r in mine] == [[v == "-" for v in r] for r in real]
    assert [r[14] != "0" for r in mine] == [r[14] != "0" for r in real]
    by_txg = [r[0] for r in sorted(mine, key=lambda r: (int(r[3]), r[1] == "bookmark"))]
    assert by_txg == [r[0] for r in sorted(real, key=lambda r: (int(r[3]), r[1] == "bookmark"))]
    list(parse_datasets((line for line in t.lines(argv)), user_properties=(TENANT,)))
    fast = [line.split("\t") for line in t.lines(scenario["commands"]["zfs_list_fast.txt"])]
    real_fast = [line.split("\t") for line in
                 (REAL / "zfs_list_fast.txt").read_text().splitlines()]
    assert [(r[0], r[3]) for r in fast] == [(r[0], r[3]) for r in real_fast]


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


def test_replayed_errors_are_byte_identical_to_real_zfs() -> None:
    t, scenario = replayed_scenario()
    blocks = (REAL / "zfs_errors.txt").read_text().split("### ")[1:]
    assert len(blocks) == len(scenario["failing_commands"])
    for argv, block in zip(scenario["failing_commands"], blocks, strict=True):
        _, rest = block.split("\n", 1)
        status, stderr = rest.split("\n", 1)
        assert run(t, *argv) == (int(status.split("=")[1]), "", stderr), argv
