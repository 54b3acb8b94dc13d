"""Pool health: `zpool status -j --json-int` and its text fallback `zpool status -p`, parsed
from output captured from real OpenZFS 2.3 (`python -m tools.capture --health`, see
tests/fixtures/real/README.md): a scrubbed pool, a DEGRADED mirror with a log, a cache and a
spare, a resilver in progress, checksum errors a scrub repaired, data errors, a paused scrub,
and vdev paths with a space, a tab, quotes, UTF-8, a line break and a byte that is not UTF-8."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import FIXTURES

from xfleet.core.errors import NameError_
from xfleet.core.zfs import (
    ParseError,
    PoolHealth,
    health_event,
    parse_status,
    parse_status_json,
    parse_status_text,
    status_json_unsupported,
    zpool_status,
    zpool_status_json,
)
from xfleet.remote.transport import quote_command

REAL = FIXTURES / "real"
DIR = "/var/tmp/xfleet health"
DEG, CKSUM, DATA = "hx deg.1", "hx_cksum", "hx-data:1"


def json_of(name: str) -> dict[str, PoolHealth]:
    return {p.name: p for p in parse_status_json((REAL / name).read_text())}


def text_of(name: str) -> dict[str, PoolHealth]:
    return {p.name: p for p in parse_status_text((REAL / name).read_text())}


def test_the_fixtures_were_captured_with_our_exact_commands() -> None:
    files = json.loads((REAL / "health.json").read_text())["files"]
    assert files["zpool_status_json_scrubbed.txt"] == ["scrubbed", zpool_status_json(["tank"])]
    assert files["zpool_status_json_degraded.txt"] == ["degraded", zpool_status_json([DEG])]
    assert files["zpool_status_degraded.txt"] == ["degraded", zpool_status([DEG])]
    assert files["zpool_status_json_all.txt"] == ["all", zpool_status_json()]
    assert files["zpool_status_all.txt"] == ["all", zpool_status()]
    assert zpool_status_json() == ["zpool", "status", "-j", "--json-int"]


def test_argv_validates_pool_names_and_keeps_each_one_argument() -> None:
    argv = zpool_status_json([DEG, "tank"])
    assert argv[-2:] == [DEG, "tank"]
    assert quote_command(argv) == "zpool status -j --json-int 'hx deg.1' tank"
    for bad in ("-x", "tank;reboot", "tank/child", "1pool", "mirror-1", ""):
        with pytest.raises(NameError_):
            zpool_status_json([bad])


def test_a_scrubbed_pool() -> None:
    (tank,) = json_of("zpool_status_json_scrubbed.txt").values()
    assert (tank.name, tank.state, tank.status, tank.action) == ("tank", "ONLINE", None, None)
    assert (tank.scan_function, tank.scan_state, tank.scan_errors) == ("SCRUB", "FINISHED", 0)
    assert tank.scan_start is not None and tank.scan_end is not None
    assert 0 <= tank.scan_end - tank.scan_start < 60
    assert (tank.read_errors, tank.write_errors, tank.checksum_errors, tank.data_errors) == \
        (0, 0, 0, 0)
    assert tank.errors == 0
    root, disk = tank.vdevs
    assert (root.position, root.parent, root.depth, root.name, root.vdev_type, root.leaf) == \
        (0, None, 0, "tank", "root", False)
    assert (disk.position, disk.parent, disk.depth, disk.name, disk.vdev_type) == \
        (1, 0, 1, "virtio-xfleet-data", "disk")
    assert disk.path == "/dev/disk/by-id/virtio-xfleet-data-part1" and disk.leaf
    assert (disk.state, disk.checksum_errors, disk.slow_ios) == ("ONLINE", 0, 0)
    assert root.slow_ios is None and root.path is None  # zpool reports them for leaves only


def test_a_degraded_mirror_with_a_log_a_cache_and_a_spare() -> None:
    pool = json_of("zpool_status_json_degraded.txt")[DEG]  # a pool name with a space
    assert pool.state == "DEGRADED"
    assert pool.status == ("One or more devices has been taken offline by the administrator. "
                           "Sufficient replicas exist for the pool to continue functioning in "
                           "a degraded state.")
    assert pool.action == ("Online the device using 'zpool online' or replace the device with "
                           "'zpool replace'.")
    assert pool.scan_function is None and pool.scan_state is None and pool.scan_start is None
    tree = [(v.position, v.parent, v.depth, v.name, v.vdev_type, v.state) for v in pool.vdevs]
    assert tree == [
        (0, None, 0, DEG, "root", "DEGRADED"),
        (1, 0, 1, "mirror-0", "mirror", "DEGRADED"),
        (2, 1, 2, f"{DIR}/deg a.img", "file", "ONLINE"),
        (3, 1, 2, f"{DIR}/deg\tb.img", "file", "OFFLINE"),  # a tab in the path
        (4, None, 0, "logs", None, None),  # the class headings, as zpool status shows them
        (5, 4, 1, f"{DIR}/log.img", "file", "ONLINE"),
        (6, None, 0, "cache", None, None),
        (7, 6, 1, f"{DIR}/cache \u00e9.img", "file", "ONLINE"),
        (8, None, 0, "spares", None, None),
        (9, 8, 1, f'{DIR}/spare "q".img', "file", "AVAIL"),
    ]
    spare = pool.vdevs[9]
    assert spare.leaf and spare.read_errors is None and spare.slow_ios is None
    assert [v.name for v in pool.vdevs if v.leaf] == [v.path for v in pool.vdevs if v.leaf]
    assert not any(v.leaf for v in pool.vdevs if v.vdev_type in (None, "root", "mirror"))


def test_a_resilver_in_progress() -> None:
    pool = json_of("zpool_status_json_resilver.txt")[DEG]
    assert (pool.state, pool.scan_function, pool.scan_state) == ("ONLINE", "RESILVER",
                                                                 "SCANNING")
    assert pool.scan_start is not None and pool.scan_end is None
    assert pool.status is not None and "currently being resilvered" in pool.status
    assert pool.action == "Wait for the resilver to complete."


def test_checksum_errors_a_scrub_repaired() -> None:
    pool = json_of("zpool_status_json_cksum.txt")[CKSUM]
    assert pool.state == "ONLINE" and pool.scan_state == "FINISHED"
    assert pool.scan_errors == 0 and pool.data_errors == 0  # repaired from the other side
    bad = [v for v in pool.vdevs if v.checksum_errors]
    assert [v.name for v in bad] == [f"{DIR}/ck b.img"]
    assert pool.checksum_errors == bad[0].checksum_errors and pool.checksum_errors > 0
    assert pool.errors == pool.checksum_errors
    assert pool.status is not None and "unrecoverable error" in pool.status


def test_every_pool_at_once() -> None:
    pools = json_of("zpool_status_json_all.txt")
    assert list(pools) == [DEG, DATA, CKSUM, "tank"]  # zpool's order
    deg = pools[DEG]
    assert (deg.state, deg.scan_function, deg.scan_state) == ("ONLINE", "RESILVER", "FINISHED")
    data = pools[DATA]
    assert data.data_errors and data.scan_errors == data.data_errors  # not repaired
    assert data.checksum_errors > 0 and data.errors > data.checksum_errors
    assert data.status is not None and "data corruption" in data.status
    paused = pools[CKSUM]
    assert (paused.scan_function, paused.scan_state) == ("SCRUB", "PAUSED")
    assert paused.scan_start is not None and paused.scan_end is None
    assert paused.checksum_errors > 0  # counters stay until `zpool clear`


def _comparable(p: PoolHealth) -> PoolHealth:
    """What the text form says too: no vdev types of leaves, no slow I/Os, a path only when
    it is the name (a disk's is not: `virtio-xfleet-data`), no scan errors while a scan
    runs."""
    vdevs = tuple(dataclasses.replace(v, slow_ios=None,
                                      vdev_type=None if v.leaf else v.vdev_type,
                                      path=v.path if v.path == v.name else None)
                  for v in p.vdevs)
    running = p.scan_state in ("SCANNING", "PAUSED")
    return dataclasses.replace(p, vdevs=vdevs,
                               scan_errors=None if running else p.scan_errors)


@pytest.mark.parametrize("case", ["degraded", "resilver", "cksum", "all"])
def test_the_text_form_reads_as_the_json(case: str) -> None:
    """The fallback for a zpool without -j: the same records, but for what the text does not
    say. Captured one right after the other on the same pools."""
    want = [_comparable(p) for p in json_of(f"zpool_status_json_{case}.txt").values()]
    got = list(text_of(f"zpool_status_{case}.txt").values())
    assert got == want


def test_json_cut_short_at_a_path_that_is_not_utf8_and_the_text_that_holds_it() -> None:
    with pytest.raises(ParseError, match="cut short"):
        parse_status_json((REAL / "zpool_status_json_cut.txt").read_text())
    (pool,) = text_of("zpool_status_cut.txt").values()
    assert [v.name for v in pool.vdevs] == [
        "hxcut", "mirror-0", f"{DIR}/bad\ufffd.img", f"{DIR}/n\nl.img"]
    assert [v.state for v in pool.vdevs] == ["ONLINE"] * 4
    assert [v.depth for v in pool.vdevs] == [0, 1, 2, 2]
    assert pool.vdevs[3].path == f"{DIR}/n\nl.img" and pool.vdevs[3].leaf


def test_a_zpool_without_json_is_told_apart_from_other_failures() -> None:
    blocks = (REAL / "zpool_status_bad_option.txt").read_text().split("### ")[1:]
    assert len(blocks) == 2
    for block in blocks:
        assert "exit=2\n" in block
        assert status_json_unsupported(block.split("--- stderr\n", 1)[1])
    # what OpenZFS 2.2 says of `zpool status -j`
    assert status_json_unsupported("invalid option 'j'\nusage:\n\tstatus [-c ...]\n")
    assert not status_json_unsupported("cannot open 'nope': no such pool\n")
    assert not status_json_unsupported("")


def test_text_scan_lines() -> None:
    def scan(line: str) -> tuple[object, ...]:
        text = (f"  pool: p\n state: ONLINE\n  scan: {line}\nconfig:\n\n\tNAME STATE READ "
                "WRITE CKSUM\n\tp ONLINE 0 0 0\n\nerrors: No known data errors\n")
        (p,) = parse_status_text(text)
        return (p.scan_function, p.scan_state, p.scan_start, p.scan_end, p.scan_errors)

    end = 1796522635.0  # Sun Dec  6 02:03:55 2026 UTC
    assert scan("scrub repaired 0B in 1 days 01:00:05 with 3 errors on Sun Dec  6 02:03:55 "
                "2026") == ("SCRUB", "FINISHED", end - 90005, end, 3)
    assert scan("resilvered 4.13M in 00:00:02 with 0 errors on Sun Dec  6 02:03:55 2026") == \
        ("RESILVER", "FINISHED", end - 2, end, 0)
    assert scan("scrub canceled on Sun Dec  6 02:03:55 2026") == \
        ("SCRUB", "CANCELED", None, end, None)
    assert scan("resilver in progress since Sun Dec  6 02:03:55 2026 0B / 20.3M scanned") == \
        ("RESILVER", "SCANNING", end, None, None)
    # a date in another locale does not read: the times are unknown, the rest is kept
    assert scan("scrub repaired 0B in 00:00:01 with 0 errors on So 6 Dez 02:03:55 2026") == \
        ("SCRUB", "FINISHED", None, None, 0)
    assert scan("none requested") == (None, None, None, None, None)


def test_text_config_lines_with_hostile_names() -> None:
    """parse_status (rollout's reader too) keeps names with spaces, tabs and state words."""
    text = ("  pool: a b\n state: ONLINE\nconfig:\n\n\tNAME  STATE  READ WRITE CKSUM\n"
            "\ta b                ONLINE 0 0 0\n"
            "\t  mirror-0         ONLINE 0 0 0\n"
            "\t    /d/x ONLINE 1.img  ONLINE 0 0 7  (resilvering)\n"
            "\t    /d/t\tab.img    FAULTED 2 1 0  too many errors\n"
            "\nerrors: 4 data errors, use '-v' for a list\n")
    (st,) = parse_status(text)
    assert [(v.name, v.state, v.depth) for v in st.vdevs] == [
        ("a b", "ONLINE", 0), ("mirror-0", "ONLINE", 1), ("/d/x ONLINE 1.img", "ONLINE", 2),
        ("/d/t\tab.img", "FAULTED", 2)]
    (p,) = parse_status_text(text)
    assert (p.read_errors, p.write_errors, p.checksum_errors, p.data_errors) == (2, 1, 7, 4)
    assert p.errors == 14


def test_empty_and_unexpected_json() -> None:
    assert parse_status_json("") == []
    assert parse_status_json('{"output_version": {}, "pools": {}}\n') == []
    for bad in ('{"pools": []}', "[1]", '{"pools": {"p": 1}}',
                '{"pools": {"p": {"vdevs": {"p": 3}}}}'):
        with pytest.raises(ParseError):
            parse_status_json(bad)


def test_the_events_that_make_a_health_read_due() -> None:
    for cls in ("ereport.fs.zfs.checksum", "ereport.fs.zfs.io",
                "resource.fs.zfs.statechange", "resource.fs.zfs.removed",
                "sysevent.fs.zfs.scrub_start", "sysevent.fs.zfs.scrub_finish",
                "sysevent.fs.zfs.scrub_paused", "sysevent.fs.zfs.resilver_start",
                "sysevent.fs.zfs.resilver_finish", "sysevent.fs.zfs.vdev_online",
                "sysevent.fs.zfs.vdev_clear"):
        assert health_event(cls), cls
    for cls in ("sysevent.fs.zfs.history_event", "sysevent.fs.zfs.config_sync",
                "sysevent.fs.zfs.pool_import"):
        assert not health_event(cls), cls
