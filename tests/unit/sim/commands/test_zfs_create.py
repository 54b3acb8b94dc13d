"""`zfs create` and `zfs clone`."""

from __future__ import annotations

from pathlib import Path

from xfleet.core.zfs import parse_get, zfs_get

from ..simkit import TENANT, a_volume_with_snapshots, by_name, ok, records, run, sim, strcmp_key


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
    assert thick.referenced is not None
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
