"""Pure parsers and command builders, tested on output captured from real OpenZFS 2.3 (lab)."""

from __future__ import annotations

import json
import time

import pytest
from conftest import FIXTURES

from xfleet.core.errors import NameError_
from xfleet.core.zfs import (
    DATASET_COLUMNS,
    ParseError,
    parse_dataset_line,
    parse_datasets,
    parse_get,
    parse_pools,
    parse_status,
    zfs_get,
    zfs_list,
    zpool_list,
)
from xfleet.ops.sync import dataset_rows
from xfleet.remote.transport import quote_command

REAL = FIXTURES / "real"
UP = ("xfleet:tenant",)


def known(value: int | None) -> int:
    """A column the fixture has a value for (None means '-')."""
    assert value is not None
    return value


def real_lines(name: str) -> list[str]:
    return (REAL / name).read_text().splitlines()


def test_fixture_was_captured_with_our_exact_command() -> None:
    scenario = json.loads((REAL / "scenario.json").read_text())
    assert scenario["commands"]["zfs_list_all.txt"] == zfs_list(user_properties=list(UP))
    assert scenario["commands"]["zpool_list.txt"] == zpool_list()


def test_parse_real_zfs_list() -> None:
    recs = list(parse_datasets(real_lines("zfs_list_all.txt"), user_properties=UP))
    by = {r.name: r for r in recs}
    assert len(recs) == len(real_lines("zfs_list_all.txt"))
    assert {r.type for r in recs} == {"filesystem", "volume", "snapshot", "bookmark"}
    db1 = by["tank/vols/db 1"]  # a name with a space
    assert db1.type == "volume" and db1.pool == "tank"
    assert db1.volsize == 536870912 and db1.volblocksize == 16384
    assert db1.compression == "gzip-9" and db1.compressratio == pytest.approx(1.98)
    assert db1.origin is None and db1.user_properties == {"xfleet:tenant": "globex corp"}
    assert db1.used == (known(db1.referenced) + known(db1.usedbysnapshots)
                        + known(db1.usedbyrefreservation))
    assert isinstance(db1.guid, str) and int(db1.guid) > 2**63  # does not fit signed int64
    snap = by["tank/vols/db 1@before upgrade"]
    assert snap.type == "snapshot" and snap.compression is None and snap.volblocksize is None
    thick = by["tank/vols/big.thick"]
    assert thick.refreservation and thick.usedbyrefreservation and thick.refreservation > 0
    clone = by["tank/vols/branch-1.1"]
    assert clone.origin == "tank/vols/branch-1@s1"
    bookmark = by["tank/vols/pg-thin#daily.1"]
    assert bookmark.type == "bookmark" and bookmark.guid == by["tank/vols/pg-thin@daily.1"].guid
    assert by["tank"].user_properties == {}  # '-' means unset


def test_real_listing_ordering_rules() -> None:
    """What the simulator must reproduce: strcmp order of the dataset part of the name, a
    dataset before its snapshots (by createtxg) and bookmarks, before its children."""
    recs = list(parse_datasets(real_lines("zfs_list_all.txt"), user_properties=UP))
    names = [r.name for r in recs]
    assert names.index("tank/vols/branch 2") < names.index("tank/vols/branch-1")
    assert names.index("tank/vols/branch-1@s1") < names.index("tank/vols/branch-1.1")
    snaps = [r for r in recs if r.name.startswith("tank/vols/pg-main-next@")]
    assert [s.createtxg for s in snaps] == sorted(known(s.createtxg) for s in snaps)
    assert [s.name.split("@")[1] for s in snaps] != sorted(s.name.split("@")[1] for s in snaps)


def test_parse_real_fast_listing() -> None:
    lines = real_lines("zfs_list_fast.txt")
    recs = [parse_dataset_line(line, ("name", "guid", "createtxg", "origin")) for line in lines]
    assert len(recs) == 31
    assert all(isinstance(r[2], int) for r in recs)


def test_parse_real_zfs_get() -> None:
    recs = list(parse_get(real_lines("zfs_get_all.txt")))
    props = {(r.name, r.property): r for r in recs}
    assert props[("tank/vols", "mountpoint")].source == "inherited from tank"
    assert props[("tank/vols", "type")].value == "filesystem"
    assert props[("tank/vols", "type")].source is None
    names = {r.name for r in recs}
    assert len(names) == 3 and any("@" in n for n in names)


def test_parse_real_zpool_list_and_status() -> None:
    (pool,) = parse_pools(real_lines("zpool_list.txt"))
    assert pool.name == "tank" and pool.health == "ONLINE" and pool.ashift == 12
    assert pool.size == known(pool.allocated) + known(pool.free)
    assert pool.dedupratio == 1.0 and pool.capacity == 2 and pool.fragmentation == 0
    (st,) = parse_status((REAL / "zpool_status.txt").read_text())
    assert st.name == "tank" and st.state == "ONLINE" and not st.scan_in_progress
    assert st.errors == "No known data errors"
    assert [v.name for v in st.vdevs] == ["tank", "virtio-xfleet-data"]
    assert [v.depth for v in st.vdevs] == [0, 1]


def test_parse_status_with_scan_and_degraded_mirror() -> None:
    text = (
        "  pool: tank\n state: DEGRADED\nstatus: One or more devices could not be used.\n"
        "action: Attach the missing device.\n  scan: resilver in progress since Mon\n"
        "\t1.2G scanned at 100M/s\nconfig:\n\n\tNAME        STATE     READ WRITE CKSUM\n"
        "\ttank        DEGRADED     0     0     0\n\t  mirror-0  DEGRADED     0     0     0\n"
        "\t    sda     ONLINE       0     0     0\n\t    sdb     UNAVAIL      0     0     0\n"
        "\nerrors: No known data errors\n"
    )
    (st,) = parse_status(text)
    assert st.state == "DEGRADED" and st.scan_in_progress
    assert "1.2G scanned" in (st.scan or "")
    assert [(v.name, v.depth) for v in st.vdevs] == [("tank", 0), ("mirror-0", 1), ("sda", 2),
                                                     ("sdb", 2)]


def test_hot_path_rows_equal_typed_parse() -> None:
    """sync's fast row builder (SQLite affinity does the typing) agrees with the typed parser."""
    lines = real_lines("zfs_list_all.txt")  # DATASET_COLUMNS, then the tenant
    recs = list(parse_datasets(lines, user_properties=UP))
    values = {r.name: r.user_properties for r in recs}
    native = [line.rsplit("\t", 1)[0] for line in lines]
    rows = list(dataset_rows(native, "n1", 7, lambda n: values[n], "xfleet:tenant",
                             time.time()))
    for row, rec in zip(rows, recs, strict=True):
        assert row[0] == "n1" and row[1] == rec.pool
        for i, col in enumerate(DATASET_COLUMNS):
            want = getattr(rec, col)
            got = row[2 + i]
            assert (None if got is None else type(want)(got)) == want, col
        assert row[2 + len(DATASET_COLUMNS)] == rec.user_properties.get("xfleet:tenant")


def test_wrong_field_count_is_a_parse_error() -> None:
    with pytest.raises(ParseError) as exc:
        list(parse_datasets(["tank\tfilesystem"]))
    assert "expected" in str(exc.value)
    with pytest.raises(ParseError):
        list(dataset_rows(["a\tb"], "n", 1, lambda _: {}, "xfleet:tenant", 0.0))


def test_builders_are_argument_lists_with_validated_names() -> None:
    argv = zfs_list(["tank/db 1"], user_properties=["xfleet:tenant"])
    assert argv[:4] == ["zfs", "list", "-H", "-p"]
    assert argv[-2:] == ["-r", "tank/db 1"]
    assert quote_command(argv).endswith("-r 'tank/db 1'")
    assert zfs_get(["tank/v@s"], ["used", "written"])[-2:] == ["used,written", "tank/v@s"]
    for bad in ("tank/x;reboot", "-o", "tank/$(id)", "tank/a\nb"):
        with pytest.raises(NameError_):
            zfs_get([bad])
    with pytest.raises(ParseError):
        zfs_list(user_properties=["Tenant"])


def test_zfs_list_of_exact_names_takes_snapshots_and_bookmarks_but_not_with_roots() -> None:
    argv = zfs_list(names=["tank/v", "tank/v@s1", "tank/v#b1"], user_properties=["a:b"])
    assert argv[-3:] == ["tank/v", "tank/v@s1", "tank/v#b1"] and "-r" not in argv
    assert argv[argv.index("-o") + 1].endswith(",a:b")
    with pytest.raises(ValueError):
        zfs_list(["tank"], names=["tank/v"])
    with pytest.raises(NameError_):
        zfs_list(names=["tank/v; rm -rf /"])
