"""ZFS naming rules (OpenZFS zfs_namecheck.c and zpool_name_valid())."""

from __future__ import annotations

import pytest

from xfleet.core.errors import NameError_, UsageError
from xfleet.core.names import pool_of, validate_dataset, validate_pool


@pytest.mark.parametrize(
    "name",
    [
        "tank",
        "tank/vol-1",
        "tank/tenant_42/db.main:branch-7",
        "tank/with space/and more",
        "Tank2/A.B_C-D:E",
        "tank/vol@snap-2026-05-01T12:00",
        "tank@pool-level-snap",
        "tank/" + "a" * 250,  # 255 characters in all
        "tank/.hidden",
        "tank/...",
        "/".join(["tank"] + ["d"] * 49),  # 49 levels below the pool
    ],
)
def test_valid_dataset_names(name: str) -> None:
    assert validate_dataset(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty name"),
        ("tank//vol", "empty dataset component"),
        ("tank/vol/", "trailing '/'"),
        ("/tank/vol", "starts with its pool"),
        ("tank/vol@", "empty snapshot component"),
        ("tank/./vol", "may not be '.' or '..'"),
        ("tank/../etc", "may not be '.' or '..'"),
        ("tank/vol@a@b", "only one '@'"),
        ("tank/vol@snap/x", "no '/' is allowed after '@'"),
        ("tank/vol#mark", "'#' is only allowed before a bookmark name"),
        ("tank/v#x@s", "not both"),
        ("tank/vol\x00", "control characters"),
        ("tank/vol\nzfs destroy", "control characters"),
        ("tank/vol\r", "control characters"),
        ("tank/vol\x7f", "control characters"),
        ("tank/" + "a" * 251, "longer than 255"),
        ("/".join(["tank"] + ["d"] * 50), "nested 50 levels deep"),
        ("1tank/vol", "must start with a letter"),
        ("mirror/vol", "reserved pool name"),
        ("tank/vol;rm -rf /", "';'"),
        ("tank/$(reboot)", "'$'"),
        ("tank/`id`", "'`'"),
        ("tank/it's", '"\'"'),
        ('tank/"quoted"', "'\"'"),
        ("tank/*", "'*'"),
        ("tank/a|b", "'|'"),
        ("tank/a&b", "'&'"),
        ("tank/a>b", "'>'"),
        ("tank/%recv", "'%'"),  # ZFS's own temporary clones only
        ("tank/vol@snap;id", "';'"),
        ("tank/t\u00e4nk", "'\u00e4'"),
    ],
)
def test_invalid_dataset_names(name: str, why: str) -> None:
    with pytest.raises(NameError_) as exc:
        validate_dataset(name)
    assert why in exc.value.message
    assert isinstance(exc.value, UsageError)  # the CLI reports it as a usage error (exit 2)
    assert exc.value.hint and "letters, digits" in exc.value.hint


def test_snapshot_and_bookmark_switches() -> None:
    with pytest.raises(NameError_, match="snapshot name is not allowed here"):
        validate_dataset("tank/vol@s", allow_snapshot=False)
    assert validate_dataset("tank/vol#mark-1", allow_bookmark=True) == "tank/vol#mark-1"
    with pytest.raises(NameError_, match="only one '#'"):
        validate_dataset("tank/vol#a#b", allow_bookmark=True)
    with pytest.raises(NameError_, match="no '/' is allowed after '#'"):
        validate_dataset("tank/vol#a/b", allow_bookmark=True)
    with pytest.raises(NameError_, match="empty bookmark component"):
        validate_dataset("tank/vol#", allow_bookmark=True)


@pytest.mark.parametrize("pool", ["tank", "T", "data-01", "nvme.pool:a_b", "pool with space",
                                  "c0t0d0", "logs", "zmirror", "p" * 239])
def test_valid_pool_names(pool: str) -> None:
    assert validate_pool(pool) == pool


@pytest.mark.parametrize(
    ("pool", "why"),
    [
        ("", "empty pool name"),
        ("1tank", "must start with a letter"),
        ("-o", "must start with a letter"),
        ("_tank", "must start with a letter"),
        (" tank", "must start with a letter"),
        ("log", "reserved"),
        ("mirror", "reserved"),
        ("mirror2", "reserved"),
        ("raidz", "reserved"),
        ("raidz1-data", "reserved"),
        ("draid", "reserved"),
        ("spare", "reserved"),
        ("spares", "reserved"),
        ("tank/vol", "'/'"),
        ("tank@s", "'@'"),
        ("ta;nk", "';'"),
        ("p" * 240, "at most 239"),
    ],
)
def test_invalid_pool_names(pool: str, why: str) -> None:
    with pytest.raises(NameError_) as exc:
        validate_pool(pool)
    assert why in exc.value.message


def test_pool_of() -> None:
    assert pool_of("tank/a/b@s") == "tank"
    assert pool_of("tank@s") == "tank"
    assert pool_of("tank#b") == "tank"
    assert pool_of("tank") == "tank"
