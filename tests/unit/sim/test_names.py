"""Dataset names: their parts, `zfs list` order, and libzfs' reasons for refusing one."""

from __future__ import annotations

from xfleet.sim.names import (
    dataset_of,
    depth_below,
    in_subtree,
    list_key,
    name_problem,
    parent_of,
    pool_of,
)


def test_parts_of_a_name() -> None:
    assert dataset_of("tank/a/v@s") == dataset_of("tank/a/v#b") == "tank/a/v"
    assert pool_of("tank/a/v@s") == pool_of("tank") == "tank"
    assert [parent_of(n) for n in ("tank/a/v@s", "tank/a/v#b", "tank/a", "tank")] == \
        ["tank/a/v", "tank/a/v", "tank", None]
    assert in_subtree("tank/a/v@s", "tank/a") and in_subtree("tank/a", "tank/a")
    assert not in_subtree("tank/ab", "tank/a")  # a sibling that shares a prefix
    assert [depth_below(n, "tank") for n in ("tank", "tank/a", "tank/a/v", "tank/a@s")] == \
        [0, 1, 2, 2]


def test_list_order_puts_snapshots_right_after_their_dataset_by_txg() -> None:
    names = [("tank/a-b", 5), ("tank/a@s2", 9), ("tank/a", 3), ("tank/a/v", 4), ("tank/a@s1", 7)]
    got = [n for n, _ in sorted(names, key=lambda x: list_key(*x))]
    assert got == ["tank/a", "tank/a@s1", "tank/a@s2", "tank/a-b", "tank/a/v"]


def test_invalid_names_get_libzfs_reasons() -> None:
    assert name_problem("tank/a", snapshot=False) is None
    assert name_problem("tank/a@s 1", snapshot=True) is None
    assert name_problem("tank/a#b", snapshot=None, bookmark=True) is None
    cases = {
        ("", None): "empty component or misplaced '@' or '#' delimiter in name",
        ("/tank", None): "leading slash in name",
        ("tank/", None): "trailing slash in name",
        ("tank//a", None): "empty component or misplaced '@' or '#' delimiter in name",
        ("tank/a@b@c", None): "multiple '@' and/or '#' delimiters in name",
        ("tank/a@b", False): "snapshot delimiter '@' is not expected here",
        ("tank/a", True): "missing '@' delimiter in snapshot name",
        ("tank/a#b", False): "invalid character '#' in name",
        ("tank/a*", False): "invalid character '*' in name",
        ("tank/..", False): "self reference, '.' is found in name",
        ("1tank/a", False): "pool doesn't begin with a letter",
        ("my tank/a", False): "invalid character ' ' in pool name",
        ("t/" + "a" * 300, False): "name is too long",
    }
    for (name, snapshot), reason in cases.items():
        assert name_problem(name, snapshot=snapshot) == reason, name
    assert name_problem("tank/a@b", snapshot=None, bookmark=True) == \
        "missing '#' delimiter in bookmark name"
