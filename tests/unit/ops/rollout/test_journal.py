"""A rollout as the mirror records it (on both engines): one open rollout at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from unit.ops.rollout.conftest import SKIP, make_packages, setup_nodes
from xfleet.fleet import inventory
from xfleet.ops import rollout


def test_only_one_open_rollout(tmp_path: Path, mirror_at: str) -> None:
    inv_path = setup_nodes(tmp_path, ["n1"], mirror=mirror_at)
    inv = inventory.load(inv_path)
    o = rollout.Options(skip=SKIP).validate()
    rid = rollout.create(inv.mirror, "1.1", ["n1"], make_packages(tmp_path), o)
    with pytest.raises(rollout.RolloutError, match=f"rollout {rid} is not finished"):
        rollout.create(inv.mirror, "1.1", ["n1"], make_packages(tmp_path), o)
    assert rollout.request(inv.mirror, rid, "pause") == "paused"
    with pytest.raises(rollout.RolloutError, match=f"rollout {rid} is not finished"):
        rollout.create(inv.mirror, "1.1", ["n1"], make_packages(tmp_path), o)  # paused: open
    assert rollout.request(inv.mirror, rid, "stop") == "stopped"
    again = rollout.create(inv.mirror, "1.1", ["n1"], make_packages(tmp_path), o)
    assert again > rid  # the stopped one is finished: a new one may start
