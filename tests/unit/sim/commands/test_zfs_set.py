"""`zfs set` and `zfs inherit`."""

from __future__ import annotations

from ..simkit import TENANT, by_name, ok, records, run, sim


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
