"""The base fleet: deterministic per seed and node, in zfs list order, realistic, its space
accounting consistent."""

from __future__ import annotations

import re
from collections import Counter

from .simkit import TENANT, by_name, listing, records, sim, strcmp_key


def test_same_seed_same_output_different_seed_or_node_differs() -> None:
    a, b = listing(sim(200, seed=7)), listing(sim(200, seed=7))
    assert a == b
    c = listing(sim(200, seed=8))
    assert c != a
    d = listing(sim(200, seed=7, node="n2"))
    guids_a = {line.split("\t")[2] for line in a}
    guids_d = {line.split("\t")[2] for line in d}
    assert not guids_a & guids_d  # same seed on another node: other datasets, other guids


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
