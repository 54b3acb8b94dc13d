"""`zfs hold`, `zfs release`, `zfs holds`: a held snapshot cannot be destroyed; the history
records are the real ones (tests/fixtures/real/ops.json: hold and release ops)."""

from __future__ import annotations

import re

from ..simkit import REAL, history_records, mask, ok, run, sim


def test_hold_release_and_a_held_snapshot_is_busy() -> None:
    t = sim(0)
    ok(t, "zfs", "create", "-s", "-V", "1G", "tank/v")
    ok(t, "zfs", "snapshot", "tank/v@s")
    assert run(t, "zfs", "hold", "keep", "tank/v@s") == (0, "", "")
    assert run(t, "zfs", "hold", "keep", "tank/v@s") == (
        1, "", "cannot hold snapshot 'tank/v@s': tag already exists on this dataset\n")
    assert ok(t, "zfs", "get", "-H", "-o", "value", "userrefs", "tank/v@s") == "1\n"
    assert ok(t, "zfs", "holds", "-H", "-p", "tank/v@s").split("\t")[:2] == ["tank/v@s",
                                                                           "keep"]
    assert ok(t, "zfs", "holds", "tank/v@s").splitlines()[0].split() == ["NAME", "TAG",
                                                                         "TIMESTAMP"]
    assert run(t, "zfs", "destroy", "tank/v@s") == (
        1, "", "cannot destroy snapshot tank/v@s: dataset is busy\n")
    assert run(t, "zfs", "destroy", "-r", "tank/v")[2] == \
        "cannot destroy snapshot tank/v@s: dataset is busy\n"
    ok(t, "zfs", "rename", "tank/v", "tank/w")  # a hold follows the snapshot
    assert run(t, "zfs", "release", "nope", "tank/w@s") == (
        1, "", "cannot release hold from snapshot 'tank/w@s': no such tag on this dataset\n")
    assert run(t, "zfs", "release", "keep", "tank/w@s") == (0, "", "")
    ok(t, "zfs", "destroy", "-r", "tank/w")
    assert run(t, "zfs", "hold", ".x", "tank/w@s")[0] == 2  # tags starting with '.': libzfs'
    assert run(t, "zfs", "hold", "keep", "tank/w")[2] == "'tank/w' is not a snapshot\n"


def test_holds_log_what_real_zfs_logs() -> None:
    t = sim(0, node="lab1")
    ok(t, "zfs", "create", "-p", "tank/app2")
    ok(t, "zfs", "create", "-s", "-V", "32M", "tank/app2/vol-thick")
    ok(t, "zfs", "snapshot", "tank/app2/vol-thick@r1")
    before = len(history_records(ok(t, "zpool", "history", "-il", "tank")))
    ok(t, "zfs", "hold", "keep", "tank/app2/vol-thick@r1")
    ok(t, "zfs", "release", "keep", "tank/app2/vol-thick@r1")
    mine = history_records(ok(t, "zpool", "history", "-il", "tank"))[before:]
    real = history_records((REAL / "zpool_history_ops.txt").read_text())
    start = next(i for i, r in enumerate(real) if r[:2] == ("internal", "hold"))
    theirs = real[start:start + len(mine)]

    def shape(recs: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
        return [(r[0], r[1], r[2], mask(r[4])) if r[0] == "internal" else r for r in recs]

    assert shape(mine) == shape(theirs)
    assert re.search(r"tag=keep temp=0 refs=1$", mine[0][4])
