"""`zfs snapshot` and `zfs bookmark`."""

from __future__ import annotations

from ..simkit import a_volume_with_snapshots, by_name, ok, records, run, sim


def test_snapshot_many_names_is_atomic() -> None:
    t = sim(100, seed=1)
    vols = [r.name for r in records(t) if r.type == "volume"][:3]
    ok(t, "zfs", "snapshot", *(f"{v}@s 1" for v in vols))
    after = by_name(t)
    txgs = {after[f"{v}@s 1"].createtxg for v in vols}
    assert len(txgs) == 1  # one transaction group for the whole command
    for v in vols:
        snap, head = after[f"{v}@s 1"], after[v]
        assert snap.referenced == head.referenced and snap.used == 0
        assert head.written == 0
    code, _, err = run(t, "zfs", "snapshot", f"{vols[0]}@s 2", f"{vols[1]}@s 1")
    assert code == 1 and f"cannot create snapshot '{vols[1]}@s 1': dataset already exists" in err
    assert f"{vols[0]}@s 2" not in by_name(t)  # nothing was created
    code, _, err = run(t, "zfs", "snapshot", "tank/nope@x")
    assert code == 2 and err.startswith("cannot open 'tank/nope': dataset does not exist\n")
    ok(t, "zfs", "snapshot", "-r", "tank/t0002@daily")
    recs = by_name(t)
    below = [n for n, r in recs.items() if n.startswith("tank/t0002") and r.type != "snapshot"]
    assert all(f"{n}@daily" in recs for n in below)


def test_bookmarks_are_listed_and_destroyed() -> None:
    t = sim(60)
    vol = a_volume_with_snapshots(by_name(t))
    snap = next(n for n in by_name(t) if n.startswith(vol + "@"))
    ok(t, "zfs", "bookmark", snap, "#keep")
    rows = [line.split("\t") for line in t.lines(["zfs", "list", "-H", "-p", "-t", "all", "-o",
                                                  "name,type,guid,referenced,used", "-r", vol])]
    bm = next(r for r in rows if r[1] == "bookmark")
    assert bm[0] == vol + "#keep" and bm[2] == next(r[2] for r in rows if r[0] == snap)
    assert bm[4] == "-"
    assert rows.index(bm) == len(rows) - 1  # after the dataset's snapshots
    assert ok(t, "zfs", "list", "-H", "-o", "name", "-t", "bookmark", "-r", "tank") == bm[0] + "\n"
    ok(t, "zfs", "destroy", vol + "#keep")
    assert ok(t, "zfs", "list", "-H", "-o", "name", "-t", "bookmark", "-r", "tank") == ""
