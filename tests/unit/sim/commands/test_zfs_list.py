"""`zfs list`: selection by names, depth and types, missing names, and parity with real
OpenZFS 2.3 listings."""

from __future__ import annotations

import re

from xfleet.core.zfs import parse_datasets

from ..simkit import REAL, TENANT, listing, ok, replayed_scenario, sim


def test_recursive_root_depth_and_types_restrict_the_output() -> None:
    t = sim(300, seed=3)
    everything = listing(t)
    sub = listing(t, ("tank/t0002",))
    assert sub and all(line.split("\t")[0].startswith("tank/t0002") for line in sub)
    assert sub == [line for line in everything
                   if re.match(r"^tank/t0002([/@]|\t)", line)]
    vol = next(line.split("\t")[0] for line in sub if "\tvolume\t" in line)
    one = listing(t, (vol,))
    assert one[0].startswith(vol + "\t") and all(x.startswith(vol) for x in one)
    top = ok(t, "zfs", "list", "-H", "-o", "name", "-d", "1", "tank").split()
    assert top[0] == "tank" and all(n.count("/") == 1 for n in top[1:])
    vols = ok(t, "zfs", "list", "-H", "-o", "name,type", "-t", "volume", "-r", "tank")
    assert {line.split("\t")[1] for line in vols.splitlines()} == {"volume"}
    snaps = ok(t, "zfs", "list", "-H", "-o", "name", "-t", "snapshot", vol).split("\n")[:-1]
    assert snaps and all(s.startswith(vol + "@") for s in snaps)
    default = ok(t, "zfs", "list", "-H", "-o", "name", "-r", "tank").split("\n")
    assert not any("@" in n for n in default)  # snapshots only when asked for
    two = listing(t, ("tank/t0003", "tank/t0001"))
    assert two == [line for line in everything if re.match(r"^tank/t000[13]([/@]|\t)", line)]


def test_zfs_list_of_names_some_missing_lists_the_others_and_fails() -> None:
    t = sim(30)
    ok(t, "zfs", "create", "-V", "1G", "tank/v")
    ok(t, "zfs", "snapshot", "tank/v@s")
    for recursive in ([], ["-r"]):
        r = t.run(["zfs", "list", "-Hp", "-o", "name,guid,createtxg", "-t", "all", *recursive,
                   "tank/v", "tank/gone", "tank/v@s", "tank/gone@s"], check=False)
        assert r.exit_status == 1
        assert [line.split("\t")[0] for line in r.stdout.splitlines()] == ["tank/v", "tank/v@s"]
        assert r.stderr == ("cannot open 'tank/gone': dataset does not exist\n"
                            "cannot open 'tank/gone@s': dataset does not exist\n")
    real = (REAL / "zfs_errors.txt").read_text()
    assert "cannot open 'tank/vols/missing': dataset does not exist\n" in real


def test_replayed_scenario_lists_like_real_zfs() -> None:
    t, scenario = replayed_scenario()
    argv = scenario["commands"]["zfs_list_all.txt"]
    real = [line.rstrip("\n").split("\t") for line in
            (REAL / "zfs_list_all.txt").read_text().splitlines()]
    mine = [line.split("\t") for line in t.lines(argv)]
    # names, order, types, origins, sizes set at creation, compression, tenants: identical
    same = [0, 1, 4, 6, 7, 16, 19]
    assert [[r[i] for i in same] for r in mine] == [[r[i] for i in same] for r in real]
    # '-' exactly where real zfs prints '-', and thick volumes where real has them
    assert [[v == "-" for v in r] for r in mine] == [[v == "-" for v in r] for r in real]
    assert [r[14] != "0" for r in mine] == [r[14] != "0" for r in real]
    by_txg = [r[0] for r in sorted(mine, key=lambda r: (int(r[3]), r[1] == "bookmark"))]
    assert by_txg == [r[0] for r in sorted(real, key=lambda r: (int(r[3]), r[1] == "bookmark"))]
    list(parse_datasets((line for line in t.lines(argv)), user_properties=(TENANT,)))
    fast = [line.split("\t") for line in t.lines(scenario["commands"]["zfs_list_fast.txt"])]
    real_fast = [line.split("\t") for line in
                 (REAL / "zfs_list_fast.txt").read_text().splitlines()]
    assert [(r[0], r[3]) for r in fast] == [(r[0], r[3]) for r in real_fast]
