"""`zpool list`, `zpool status`: parsed by xfleet's real parsers."""

from __future__ import annotations

from xfleet.core.zfs import parse_pools, parse_status, zpool_list, zpool_status

from ..simkit import by_name, sim


def test_zpool_list_and_status_parse() -> None:
    t = sim(300, seed=10, pools=("tank", "fast"))
    pools = {p.name: p for p in parse_pools(t.lines(zpool_list()))}
    assert set(pools) == {"tank", "fast"}
    recs = by_name(t, ("tank", "fast"))
    for name, p in pools.items():
        assert p.health == "ONLINE" and p.ashift == 12 and p.dedupratio == 1.0
        assert p.size and p.allocated and p.free is not None
        assert p.size == p.allocated + p.free
        assert p.capacity == p.allocated * 100 // p.size
        assert 0 <= (p.fragmentation or 0) <= 100
        root = recs[name]
        assert root.used is not None and root.used < p.size  # reservations fit in the pool
        assert p.guid and p.guid.isdigit()
    (one,) = parse_pools(t.lines(zpool_list(["fast"])))
    assert one.name == "fast"
    status = parse_status("\n".join(t.lines(zpool_status())))
    assert [s.name for s in status] == ["fast", "tank"]
    for s in status:
        assert s.state == "ONLINE" and s.errors == "No known data errors"
        assert [v.name for v in s.vdevs][1] == "mirror-0"
        assert all(v.state == "ONLINE" and v.read == 0 for v in s.vdevs)
        assert s.scan and "scrub repaired" in s.scan and not s.scan_in_progress
    single = parse_status("\n".join(sim(10, vdev="single").lines(zpool_status())))
    assert len(single[0].vdevs) == 2
