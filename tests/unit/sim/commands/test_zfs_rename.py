"""`zfs rename` and `zfs promote`."""

from __future__ import annotations

from ..simkit import TENANT, by_name, ok, records, run, sim


def test_rename_moves_subtree_and_fixes_clone_origins() -> None:
    t = sim(200, seed=21)
    recs = by_name(t)
    clone = next(r for r in recs.values() if r.origin)
    assert clone.origin is not None
    parent_vol, snapname = clone.origin.split("@")
    ok(t, "zfs", "create", "tank/moved")
    ok(t, "zfs", "rename", parent_vol, "tank/moved/vol")
    after = by_name(t)
    assert parent_vol not in after and "tank/moved/vol" in after
    assert after["tank/moved/vol"].guid == recs[parent_vol].guid  # guid survives a rename
    assert after[clone.name].origin == f"tank/moved/vol@{snapname}"
    moved_snaps = [n for n in after if n.startswith("tank/moved/vol@")]
    assert len(moved_snaps) == sum(1 for n in recs if n.startswith(parent_vol + "@"))
    assert after["tank/moved/vol"].user_properties.get(TENANT) is None  # new parent, no tenant
    ok(t, "zfs", "rename", f"tank/moved/vol@{snapname}", "@renamed")
    assert by_name(t)[clone.name].origin == "tank/moved/vol@renamed"
    code, _, err = run(t, "zfs", "rename", "tank/moved", "tank/moved/inner")
    assert code == 1 and "descendant" in err
    code, _, err = run(t, "zfs", "rename", "tank/moved/vol", clone.name)
    assert code == 1 and err == f"cannot rename to '{clone.name}': dataset already exists\n"


def test_promote_swaps_origin_and_snapshots() -> None:
    t = sim(100, seed=1)
    ok(t, "zfs", "create", "-s", "-V", "4G", "tank/base")
    ok(t, "zfs", "snapshot", "tank/base@one")
    ok(t, "zfs", "snapshot", "tank/base@two")
    ok(t, "zfs", "clone", "tank/base@one", "tank/branch")
    ok(t, "zfs", "promote", "tank/branch")
    got = {r.name: r for r in records(t, ("tank/base", "tank/branch"))}
    assert got["tank/branch"].origin is None
    assert got["tank/base"].origin == "tank/branch@one"
    assert "tank/branch@one" in got and "tank/base@one" not in got
    assert "tank/base@two" in got  # later snapshots stay
    assert next(t.lines(["zfs", "list", "-H", "-o", "numclones", "tank/branch@one"])) == "1"
    code, _, err = run(t, "zfs", "promote", "tank/branch")
    assert code == 1 and err == "cannot promote 'tank/branch': not a cloned filesystem\n"
