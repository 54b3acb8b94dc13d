"""The view of a node: inherited property values and their sources."""

from __future__ import annotations

from xfleet.core.zfs import parse_get, zfs_get

from .simkit import ok, sim


def test_mountpoints_inherit_with_the_relative_path() -> None:
    t = sim(60)
    ok(t, "zfs", "set", "mountpoint=/srv", "canmount=on", "tank")
    got = dict(line.split("\t") for line in
               t.lines(["zfs", "list", "-H", "-o", "name,mountpoint", "-d", "1", "tank"]))
    assert got == {"tank": "/srv", "tank/t0000": "/srv/t0000", "tank/t0001": "/srv/t0001"}
    mounted = list(parse_get(t.lines(zfs_get(["tank/t0001"], ["mounted", "mountpoint"]))))
    assert [(p.value, p.source) for p in mounted] == [("yes", None),
                                                      ("/srv/t0001", "inherited from tank")]
