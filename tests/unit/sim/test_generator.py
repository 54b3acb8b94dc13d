"""The compiled generator: every column in `zfs list -H -p` format, the fast path equal to the
slow one, listings streamed one tenant at a time."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from xfleet.core.zfs import DATASET_COLUMNS, zfs_list
from xfleet.sim import DEFAULT_NOW

from .simkit import RATIO, TENANT, listing, ok, records, sim


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


def test_fast_columns_list_the_same_datasets() -> None:
    t = sim(500, seed=6)
    full = [line.split("\t") for line in listing(t)]
    fast = [line.split("\t") for line in
            t.lines(zfs_list(["tank"], columns=("name", "guid", "createtxg", "origin")))]
    assert [(f[0], f[2], f[3], f[4]) for f in full] == [tuple(f) for f in fast]


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
