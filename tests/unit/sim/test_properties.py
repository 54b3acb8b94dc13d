"""Dataset properties: canonical names, the numbers the kernel logs, and `prop=value`
validated and applied as zfs does."""

from __future__ import annotations

import pytest

from xfleet.sim.properties import (
    ALL_PROPS,
    PROP_ORDER,
    assign,
    canon_prop,
    prop_number,
)
from xfleet.sim.registry import Fail
from xfleet.sim.space import reservation


def test_canonical_names() -> None:
    assert [canon_prop(p) for p in ("avail", "refer", "compress", "lused", "used")] == \
        ["available", "referenced", "compression", "logicalused", "used"]
    assert canon_prop("xfleet:tenant") == "xfleet:tenant"
    assert canon_prop("bogus") is None and canon_prop("Bad:Prop") is None
    assert [p for p, _ in PROP_ORDER[:3]] == ["type", "creation", "used"]  # `zfs get all` order
    assert "numclones" in ALL_PROPS  # hidden from `all`, but known


def test_values_as_the_kernel_logs_them() -> None:
    # the numbers real `zpool history -il` shows (tests/fixtures/real/zpool_history.txt)
    assert prop_number("compression", "zstd-3") == "400"
    assert prop_number("compression", "lz4") == "15" and prop_number("compression", "gzip") == "10"
    assert prop_number("compression", "zstd-fast-1") == str(16 | 103 << 7)
    assert prop_number("atime", "off") == "0" and prop_number("sync", "disabled") == "2"
    assert prop_number("xfleet:note", "off") == "off" and prop_number("quota", "1024") == "1024"


def vol() -> dict[str, object]:
    return {"name": "tank/v", "type": "volume", "volsize": 1 << 30, "volblocksize": 16384,
            "refreservation": reservation(1 << 30, 16384), "local": {}}


def test_assign_validates_and_applies_like_zfs() -> None:
    rec = vol()
    assign(rec, "compress", "gzip-6", "p")
    assign(rec, "xfleet:note", "hi", "p")
    assign(rec, "volsize", "2G", "p")  # a thick volume's refreservation follows
    assert rec["local"] == {"compression": "gzip", "xfleet:note": "hi"}
    assert rec["volsize"] == 2 << 30 and rec["refreservation"] == reservation(2 << 30, 16384)
    errors = {
        ("used", "1"): "p: 'used' is readonly",
        ("bogus", "1"): "p: invalid property 'bogus'",
        ("sync", "sometimes"): "p: 'sync' must be one of 'standard | always | disabled'",
        ("atime", "off"): "p: 'atime' does not apply to datasets of this type",
        ("volsize", "1000"): "p: volume size must be a multiple of volume block size",
        ("volsize", "0"): "p: volume size cannot be zero",
        ("refreservation", "lots"): "p: bad numeric value 'lots'",
    }
    for (prop, value), message in errors.items():
        with pytest.raises(Fail) as exc:
            assign(vol(), prop, value, "p")
        assert exc.value.stderr == message + "\n", prop
    fs = {"name": "tank/f", "type": "filesystem", "local": {}}
    with pytest.raises(Fail, match="'recordsize' must be power of 2 from 512B to 16M"):
        assign(fs, "recordsize", "3K", "p")
    assign(fs, "recordsize", "1M", "p")
    assert fs["local"] == {"recordsize": str(1 << 20)}
    with pytest.raises(Fail, match="can not be modified for snapshots"):
        assign({"name": "tank/f@s", "type": "snapshot", "local": {}}, "compression", "lz4", "p")
