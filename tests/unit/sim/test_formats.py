"""What zfs prints without -p: sizes, ratios, tables."""

from __future__ import annotations

import time

from xfleet.sim.formats import human, nicenum, parse_size, table

from .simkit import ok, sim


def test_human_readable_output_without_p() -> None:
    t = sim(50)
    out = ok(t, "zfs", "list", "-o", "name,used,refer,ratio", "-d", "1", "tank").splitlines()
    assert out[0].split() == ["NAME", "USED", "REFER", "RATIO"]
    assert out[1].split()[2] == "96K" and out[1].split()[3].endswith("x")
    pools = ok(t, "zpool", "list").splitlines()
    assert pools[0].split()[:3] == ["NAME", "SIZE", "ALLOC"] and pools[1].endswith("-")


def test_sizes_parse_and_print_like_zfs() -> None:
    assert parse_size("10G") == 10 << 30 and parse_size("1.5t") == 3 << 39
    assert parse_size("4096") == 4096 and parse_size("16K") == parse_size("16KiB") == 16384
    assert parse_size(".5K") == 512 and parse_size("x") is None and parse_size("1Q") is None
    assert [nicenum(n) for n in (0, 512, 1023, 98304, 1610612736, 13524788510720, 1 << 40)] == \
        ["0B", "512B", "1023B", "96K", "1.50G", "12.3T", "1T"]


def test_human_values_and_tables() -> None:
    assert human("refreservation", "0") == "none" and human("quota", "0") == "none"
    assert human("compressratio", "1.50") == "1.50x" and human("capacity", "7") == "7%"
    assert human("used", "98304") == "96K" and human("used", "-") == "-"
    assert human("creation", "0") == time.strftime("%a %b %e %k:%M %Y", time.localtime(0))
    assert human("guid", "12345") == "12345"  # not a size
    rows = list(table(["NAME", "USED"], [["tank", "96K"], ["tank/long-name", "1.50G"]], {1}))
    assert rows == ["NAME             USED", "tank              96K", "tank/long-name  1.50G"]
