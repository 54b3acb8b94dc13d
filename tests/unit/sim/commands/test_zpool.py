"""`zpool list`, `zpool status` (text and -j): parsed by xfleet's real parsers, with the
shape of real OpenZFS 2.3's output."""

from __future__ import annotations

import json
import re
from typing import Any

from xfleet.core.zfs import (
    CLASS_HEADINGS,
    parse_pools,
    parse_status,
    parse_status_json,
    parse_status_text,
    status_json_unsupported,
    zpool_list,
    zpool_status,
    zpool_status_json,
)

from ..simkit import REAL, by_name, ok, run, sim


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


# ---------------------------------------------------------------------------------------------
# pool health: `zpool status -j --json-int`, parity with real OpenZFS 2.3


def _keys(doc: dict[str, Any], pool: str) -> dict[str, set[tuple[str, ...]]]:
    """The keys, in order, of each level of one pool in `zpool status -j` output: the
    document, the pool, its scan, and its vdevs by kind (a leaf's keys are kept per parent
    type: zpool prints the space of a leaf only when it is a top-level vdev)."""
    p = doc["pools"][pool]
    out: dict[str, set[tuple[str, ...]]] = {
        "doc": {tuple(doc)}, "pool": {tuple(p)}, "scan_stats": {tuple(p.get("scan_stats", {}))}}

    def walk(v: dict[str, Any], parent: str) -> None:
        below = v.get("vdevs", {})
        kind = v["vdev_type"] if below or v["vdev_type"] == "root" else f"leaf in {parent}"
        out.setdefault(kind, set()).add(tuple(v))
        for c in below.values():
            walk(c, v["vdev_type"])

    for v in p["vdevs"].values():
        walk(v, "")
    return out


def _real(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((REAL / name).read_text())
    return doc


def test_zpool_status_json_has_the_shape_of_real_openzfs() -> None:
    single = sim(50, seed=4, vdev="single")
    mine = json.loads(ok(single, *zpool_status_json()))
    real = _real("zpool_status_json_scrubbed.txt")  # tank: one disk, a finished scrub
    assert mine["output_version"] == real["output_version"]
    assert _keys(mine, "tank") == _keys(real, "tank")
    # a mirror with checksum errors a scrub repaired (msgid and moreinfo, self_healed ...)
    cksum = sim(50, seed=4, faults={"tank": "checksum"})
    mine = json.loads(ok(cksum, *zpool_status_json()))
    real = _real("zpool_status_json_cksum.txt")
    assert _keys(mine, "tank") == _keys(real, "hx_cksum")
    assert len(_keys(mine, "tank")["leaf in mirror"]) == 2  # the healthy and the healed side
    # an offline side: the pool's keys of the real DEGRADED pool (which had no scan yet)
    off = json.loads(ok(sim(50, seed=4, faults={"tank": "offline"}), *zpool_status_json()))
    (deg,) = _keys(_real("zpool_status_json_degraded.txt"), "hx deg.1")["pool"]
    plain = [k for k in deg if k not in CLASS_HEADINGS]  # it has a log, a cache, a spare
    at = plain.index("vdevs")
    assert _keys(off, "tank")["pool"] == {(*plain[:at], "scan_stats", *plain[at:])}
    # one line, compact, as zpool prints it
    assert ok(cksum, *zpool_status_json()).count("\n") == 1
    assert ": " not in ok(cksum, *zpool_status_json())


def test_zpool_status_json_parses_like_the_real_output() -> None:
    """What sync reads: the records of the sim's JSON have the real ones' values where the
    sim models them (types, states, the messages of each fault), and its text reads alike."""
    t = sim(200, seed=6, pools=("tank", "fast"), faults={"fast": "offline", "tank": "checksum"})
    health = {p.name: p for p in parse_status_json(ok(t, *zpool_status_json()))}
    assert list(health) == ["fast", "tank"]
    real = {p.name: p for p in parse_status_json(
        (REAL / "zpool_status_json_all.txt").read_text())}
    real_deg = parse_status_json((REAL / "zpool_status_json_degraded.txt").read_text())[0]
    fast, tank = health["fast"], health["tank"]
    assert (fast.state, fast.status, fast.action) == ("DEGRADED", real_deg.status,
                                                      real_deg.action)
    assert [(v.depth, v.vdev_type, v.state) for v in fast.vdevs] == [
        (0, "root", "DEGRADED"), (1, "mirror", "DEGRADED"), (2, "disk", "ONLINE"),
        (2, "disk", "OFFLINE")]
    cksum = parse_status_json((REAL / "zpool_status_json_cksum.txt").read_text())[0]
    assert (tank.state, tank.status, tank.action) == ("ONLINE", cksum.status, cksum.action)
    assert tank.checksum_errors > 0 and tank.vdevs[3].checksum_errors == tank.checksum_errors
    for p in health.values():
        assert (p.scan_function, p.scan_state, p.scan_errors) == (
            real["tank"].scan_function, real["tank"].scan_state, 0)
        assert p.scan_start is not None and p.scan_end is not None
        assert p.scan_start < p.scan_end
        assert [v.path for v in p.vdevs if v.leaf] == [f"/dev/{v.name}p1" for v in p.vdevs
                                                       if v.leaf]
    # the text form agrees, as the real one does; and zpool list says DEGRADED too
    text = {p.name: p for p in parse_status_text("\n".join(t.lines(zpool_status())))}
    for name, p in health.items():
        assert text[name].state == p.state and text[name].errors == p.errors
        assert (text[name].scan_start, text[name].scan_end) == (p.scan_start, p.scan_end)
        assert [v.name for v in text[name].vdevs] == [v.name for v in p.vdevs]
    assert {p.name: p.health for p in parse_pools(t.lines(zpool_list()))} == {
        "fast": "DEGRADED", "tank": "ONLINE"}
    # one pool named: the same devices as in the listing of all
    (one,) = parse_status_json(ok(t, *zpool_status_json(["tank"])))
    assert one == tank


def test_zpool_status_options_like_real_zpool() -> None:
    t = sim(20, seed=2)
    blocks = (REAL / "zpool_status_bad_option.txt").read_text().split("### ")[1:]
    real_long = blocks[1].split("--- stderr\n", 1)[1]
    code, out, err = run(t, "zpool", "status", "--json-bogus")
    assert (code, out) == (2, "") and err.splitlines()[0] == real_long.splitlines()[0]
    assert status_json_unsupported(err)
    strings = json.loads(ok(t, "zpool", "status", "-j"))  # without --json-int: strings
    tank = strings["pools"]["tank"]
    assert isinstance(tank["txg"], str) and tank["txg"].isdigit()
    # as real zpool shows a time without --json-int: "Sun Dec  6 02:02:25 UTC 2026"
    assert re.fullmatch(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \w+ \d{4}",
                        tank["scan_stats"]["end_time"])
    code, out, err = run(t, *zpool_status_json(["nope"]))
    assert code == 1 and "cannot open 'nope': no such pool" in err
