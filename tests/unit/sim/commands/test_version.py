"""`zfs version` and `zpool version`: what a real node prints, for the release the lab runs."""

from __future__ import annotations

import json
import re

from xfleet.sim import ZFS_KMOD_VERSION, ZFS_VERSION

from ..simkit import REAL, ok, sim


def test_versions_look_like_the_lab_nodes() -> None:
    t = sim(10)
    assert ok(t, "zfs", "version") == ok(t, "zpool", "version") == \
        f"{ZFS_VERSION}\n{ZFS_KMOD_VERSION}\n"
    real = json.loads((REAL / "scenario.json").read_text())["openzfs"]  # real `zfs version`
    mine = ok(t, "zfs", "version").splitlines()

    def release(lines: list[str]) -> list[str]:  # zfs-kmod-2.3.2-1 -> zfs-kmod-2.3.2
        return [m[0] for line in lines if (m := re.match(r"^zfs(-kmod)?-[0-9.]+(?=-)", line))]

    assert release(mine) == release(real) == ["zfs-2.3.2", "zfs-kmod-2.3.2"]
