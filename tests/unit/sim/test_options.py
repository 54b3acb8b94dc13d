"""Command lines parsed like zfs parses them: GNU getopt, type and column lists, assignments,
and the usage errors (exit status 2) zfs prints."""

from __future__ import annotations

import pytest

from xfleet.sim.options import (
    getopt,
    parse_assignments,
    parse_columns,
    parse_types,
    source_and_target,
    usage,
)
from xfleet.sim.registry import Fail


def test_getopt_like_gnu() -> None:
    opts, rest = getopt("list", ["-Hp", "tank", "-o", "name", "-dx", "--", "-r"], "Hpr", "odtsS")
    assert opts == [("H", ""), ("p", ""), ("o", "name"), ("d", "x")]
    assert rest == ["tank", "-r"]  # options may follow operands; `--` ends them
    with pytest.raises(Fail) as exc:
        getopt("list", ["-Q"], "Hpr", "odtsS")
    assert exc.value.code == 2 and exc.value.stderr.startswith("invalid option 'Q'\nusage:\n")
    with pytest.raises(Fail, match="missing argument for 'o' option"):
        getopt("list", ["-o"], "Hpr", "odtsS")


def test_usage_errors_end_with_zfs_help_but_not_zpool() -> None:
    zfs = usage("get", "missing property argument")
    assert zfs.code == 2 and zfs.stderr.startswith("missing property argument\nusage:\n\tget ")
    assert zfs.stderr.endswith("For further help on a command or topic, run: zfs help [<topic>]\n")
    zpool = usage("zpool events")
    assert zpool.stderr == "usage:\n\tevents [-vHf [pool] | -c]\n"


def test_types_columns_and_assignments() -> None:
    assert parse_types("list", "fs,snap") == {"fs", "snap"}
    assert parse_types("get", "all") == {"fs", "vol", "snap", "bm"}
    with pytest.raises(Fail, match="invalid type 'thing'"):
        parse_types("list", "thing")
    assert parse_columns("list", "name,avail,refer,xfleet:tenant") == \
        ["name", "available", "referenced", "xfleet:tenant"]
    assert parse_columns("list", "space")[:3] == ["name", "available", "used"]
    with pytest.raises(Fail, match="bad property list: invalid property 'space'"):
        parse_columns("get", "space")  # a `zfs list` shorthand only
    assert parse_assignments("set", ["a:b=1=2", "compression=lz4"]) == \
        [("a:b", "1=2"), ("compression", "lz4")]
    with pytest.raises(Fail, match="property 'x:y' specified multiple times"):
        parse_assignments("set", ["x:y=1", "x:y=2"])
    with pytest.raises(Fail, match="missing '=' for property argument"):
        parse_assignments("create", ["quota"])
    assert source_and_target("clone", ["a@s", "b"]) == ("a@s", "b")
    with pytest.raises(Fail, match="missing target dataset argument"):
        source_and_target("rename", ["a"])
