"""Transactions: every mutation logs what OpenZFS logs (history records, ioctls, events, in
its txgs), and nothing when it fails or only says what it would do."""

from __future__ import annotations

from typing import Any

from .simkit import history_events, history_records, ok, sim, what


def test_mutations_log_like_openzfs() -> None:
    t = sim(0)
    ok(t, "zfs", "create", "-p", "-o", "xfleet:tenant=a", "-o", "quota=1G",
       "-o", "atime=off", "tank/a/b")
    ok(t, "zfs", "create", "-V", "64M", "-o", "compression=zstd-3", "tank/a/thick")
    ok(t, "zfs", "snapshot", "tank/a/thick@s1", "tank/a/b@s1")
    ok(t, "zfs", "snapshot", "-o", "xfleet:note=x", "tank/a/thick@s2")
    ok(t, "zfs", "clone", "tank/a/thick@s1", "tank/a/c")
    ok(t, "zfs", "set", "sync=disabled", "xfleet:tenant=b", "tank/a/b", "tank/a/c")
    ok(t, "zfs", "set", "volsize=128M", "tank/a/thick")  # thick: libzfs resizes refreservation
    ok(t, "zfs", "set", "volsize=128M", "tank/a/c")  # sparse: nothing is logged
    ok(t, "zfs", "inherit", "xfleet:tenant", "tank/a/c")
    ok(t, "zfs", "rename", "tank/a/thick@s2", "tank/a/thick@s3")
    ok(t, "zfs", "rename", "tank/a/b", "tank/a/b2")
    ok(t, "zfs", "bookmark", "tank/a/thick@s1", "tank/a/thick#bm")
    ok(t, "zfs", "destroy", "tank/a/thick#bm")
    ok(t, "zfs", "promote", "tank/a/c")
    ok(t, "zfs", "destroy", "-r", "tank/a/thick")
    ok(t, "zfs", "destroy", "-R", "tank/a/c")
    got = history_events(t)
    assert [(n, d, s) for n, d, s in what(got) if n not in ("open", "import")] == [
        ("create", "tank/a", " "),
        ("create", "tank/a/b", " "),
        ("set", "tank/a/b", "quota=1073741824"),
        ("set", "tank/a/b", "xfleet:tenant=a"),
        ("set", "tank/a/b", "atime=0"),
        ("create", "tank/a/thick", " "),
        ("set", "tank/a/thick", "refreservation=70254592"),
        ("set", "tank/a/thick", "compression=400"),
        ("snapshot", "tank/a/thick@s1", " "),
        ("snapshot", "tank/a/b@s1", " "),
        ("snapshot", "tank/a/thick@s2", " "),
        ("set", "tank/a/thick@s2", "xfleet:note=x"),
        ("clone", "tank/a/c", got[next(i for i, e in enumerate(got) if e["fields"].get(
            "history_internal_name") == "clone")]["fields"]["history_internal_str"]),
        ("set", "tank/a/b", "sync=2"),
        ("set", "tank/a/b", "xfleet:tenant=b"),
        ("set", "tank/a/c", "sync=2"),
        ("set", "tank/a/c", "xfleet:tenant=b"),
        ("set", "tank/a/thick", "refreservation=138412032"),
        ("inherit", "tank/a/c", "xfleet:tenant="),
        ("rename", "tank/a/thick@s2", "-> @s3"),
        ("rename", "tank/a/b", "-> tank/a/b2"),
        ("bookmark", "tank/a/thick", got[next(i for i, e in enumerate(got) if e["fields"].get(
            "history_internal_name") == "bookmark")]["fields"]["history_internal_str"]),
        ("promote", "tank/a/c", " "),
        # destroy -r of the promoted-away origin: its snapshot, then itself (thick: first
        # its refreservation), each in its own txg
        ("destroy", "tank/a/thick@s3", " "),
        ("set", "tank/a/thick", "refreservation=0"),
        ("destroy", "tank/a/thick", f"(bptree, mintxg={createtxg(got, 'tank/a/thick@s1')})"),
        ("destroy", "tank/a/c@s1", " "),
        ("destroy", "tank/a/c", "(bptree, mintxg=1)"),
    ]
    by_txg: dict[int, list[str]] = {}
    for e in got:
        by_txg.setdefault(int(e["fields"]["history_txg"], 16), []).append(
            e["fields"]["history_internal_name"])
    assert ["set", "destroy"] in by_txg.values()  # a thick volume's last txg
    assert ["snapshot", "snapshot"] in by_txg.values()  # one snapshot command, one txg
    assert ["destroy", "destroy"] not in by_txg.values()
    hist = history_records(ok(t, "zpool", "history", "-il", "tank"))
    ioctls = [r[1] for r in hist if r[0] == "ioctl"]
    assert ioctls == ["create", "create", "create", "snapshot", "snapshot", "clone", "bookmark",
                      "destroy_bookmarks", "destroy_snaps", "destroy_snaps"]
    commands = [r[1] for r in hist if r[0] == "command"]
    assert commands[-3:] == ["zfs promote tank/a/c", "zfs destroy -r tank/a/thick",
                             "zfs destroy -R tank/a/c"]
    assert "zfs set volsize=128M tank/a/c" in commands  # logged, though no internal record


def createtxg(events: list[dict[str, Any]], name: str) -> int:
    return next(int(e["fields"]["history_txg"], 16) for e in events
                if e["fields"].get("history_dsname") == name
                and e["fields"]["history_internal_name"] in ("snapshot", "create", "clone"))


def test_failed_and_dry_run_commands_log_nothing_and_partial_ones_no_command() -> None:
    t = sim(20)
    before = ok(t, "zpool", "history", "-il", "tank")
    events = history_events(t)
    for argv in (["zfs", "create", "tank/nope/x"], ["zfs", "destroy", "-n", "-r", "tank"],
                 ["zfs", "snapshot", "tank/missing@s"], ["zfs", "rename", "tank", "tank2"]):
        assert t.run(argv, check=False).exit_status != 0 or "-n" in argv
    assert ok(t, "zpool", "history", "-il", "tank") == before
    assert history_events(t) == events
    r = t.run(["zfs", "set", "xfleet:x=1", "tank/missing", "tank"], check=False)
    assert r.exit_status == 1
    after = history_records(ok(t, "zpool", "history", "-il", "tank"))
    assert after[-1] == ("internal", "set", "tank", after[-1][3], "xfleet:x=1")
    assert what(history_events(t))[-1] == ("set", "tank", "xfleet:x=1")
