"""The content identity of simulated volumes (xfleet/sim/content.py): snapshots take their
volume's, clones their origin's, a write makes a new one, and a write posts no event."""

from __future__ import annotations

import pytest

from xfleet.core.errors import UsageError
from xfleet.sim import SimTransport
from xfleet.sim.content import content_of, device_volume, full_hash, slice_hash
from xfleet.sim.view import View

from .simkit import ok, sim


def _content(t: SimTransport, name: str) -> str:
    rec = View(t, t.current_overlay()).record(name)
    assert rec is not None
    return content_of(rec)


def test_snapshots_clones_and_writes_carry_content() -> None:
    t = sim(0)
    ok(t, "zfs", "create", "-s", "-V", "1G", "tank/v")
    born = _content(t, "tank/v")
    ok(t, "zfs", "snapshot", "tank/v@a")
    assert _content(t, "tank/v@a") == born
    events = ok(t, "zpool", "events", "-H")
    figures = ["zfs", "get", "-H", "-p", "-o", "value", "written,referenced,logicalreferenced",
               "tank/v"]
    before = [int(x) for x in ok(t, *figures).split()]
    t.write("tank/v", 5 << 20)
    assert ok(t, "zpool", "events", "-H") == events  # a write posts nothing
    written = _content(t, "tank/v")
    assert written != born and _content(t, "tank/v@a") == born
    after = [int(x) for x in ok(t, *figures).split()]
    assert after[2] - before[2] == 5 << 20  # logical bytes as written
    assert after[0] == after[1] - before[1] < 5 << 20  # stored compressed (lz4, inherited)
    ok(t, "zfs", "clone", "tank/v@a", "tank/c")
    assert _content(t, "tank/c") == born
    with pytest.raises(UsageError, match="dataset does not exist"):
        t.write("tank/nope", 1)


def test_hashes_follow_the_content_and_the_size() -> None:
    assert slice_hash("x", 10 << 20, 3) == slice_hash("x", 10 << 20, 3)
    assert slice_hash("x", 10 << 20, 3) != slice_hash("y", 10 << 20, 3)
    assert slice_hash("x", 10 << 20, 10) == slice_hash("y", 1 << 20, 5)  # past the end
    assert full_hash("x", 1 << 20) != full_hash("x", 2 << 20)
    assert device_volume("/dev/zvol/tank/a+b") == "tank/a b"
    assert device_volume("/dev/sda") is None
