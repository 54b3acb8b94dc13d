"""`zfs destroy`: refusals like zfs, dependents, recursion, what it updates and logs."""

from __future__ import annotations

from ..simkit import (
    a_volume_with_snapshots,
    by_name,
    history_records,
    listing,
    ok,
    parse_events,
    run,
    sim,
)


def test_destroy_refuses_with_dependents_like_zfs() -> None:
    t = sim(100, seed=1)
    recs = by_name(t)
    vol = a_volume_with_snapshots(recs, cloned=False)
    snaps = [n for n in recs if n.startswith(vol + "@")]
    ok(t, "zfs", "clone", snaps[0], "tank/t0000/branch")
    code, out, err = run(t, "zfs", "destroy", vol)
    assert code == 1 and out == ""
    assert err == (f"cannot destroy '{vol}': volume has children\n"
                   "use '-r' to destroy the following datasets:\n" + "\n".join(snaps) + "\n")
    code, _, err = run(t, "zfs", "destroy", "-r", vol)
    assert code == 1 and err == (f"cannot destroy '{vol}': volume has dependent clones\n"
                                 "use '-R' to destroy the following datasets:\n"
                                 "tank/t0000/branch\n")
    code, _, err = run(t, "zfs", "destroy", snaps[0])
    assert code == 1 and err == (f"cannot destroy '{snaps[0]}': snapshot has dependent clones\n"
                                 "use '-R' to destroy the following datasets:\n"
                                 "tank/t0000/branch\n")
    code, _, err = run(t, "zfs", "destroy", "tank")
    assert code == 1 and "operation does not apply to pools" in err
    code, _, err = run(t, "zfs", "destroy", "tank/nope")
    assert code == 1 and err == "cannot open 'tank/nope': dataset does not exist\n"
    out = ok(t, "zfs", "destroy", "-nvR", vol)
    assert out.splitlines()[0] == "would destroy tank/t0000/branch"
    assert out.splitlines()[-1] == f"would destroy {vol}"
    assert vol in by_name(t)  # -n changed nothing
    ok(t, "zfs", "destroy", "-R", vol)
    after = by_name(t)
    assert vol not in after and "tank/t0000/branch" not in after
    assert not any(n.startswith(vol + "@") for n in after)


def test_destroy_updates_parents_and_origin_snapshots() -> None:
    t = sim(200, seed=21)
    recs = by_name(t)
    clone = next(r for r in recs.values() if r.origin)
    origin = clone.origin
    assert origin is not None
    before = int(next(t.lines(["zfs", "list", "-H", "-o", "numclones", origin])))
    tenant = "/".join(clone.name.split("/")[:2])
    ok(t, "zfs", "destroy", "-r", clone.name)
    after = by_name(t)
    assert clone.name not in after
    assert int(next(t.lines(["zfs", "list", "-H", "-o", "numclones", origin]))) == before - 1
    assert after[tenant].used == (recs[tenant].used or 0) - (clone.used or 0)
    assert after["tank"].used == (recs["tank"].used or 0) - (clone.used or 0)
    vol = a_volume_with_snapshots(after, cloned=False)
    snaps = [n for n in after if n.startswith(vol + "@")]
    ok(t, "zfs", "destroy", snaps[-1])
    later = by_name(t)
    left = later[vol].usedbysnapshots
    assert snaps[-1] not in later and left is not None
    assert left <= (after[vol].usedbysnapshots or 0)
    assert (later[vol].written or 0) >= (after[vol].written or 0)


def test_destroy_recursive_of_a_tenant_and_of_the_pool() -> None:
    t = sim(300, seed=2)
    ok(t, "zfs", "destroy", "-r", "tank/t0003")
    names = set(by_name(t))
    assert not any(n.startswith("tank/t0003") for n in names)
    ok(t, "zfs", "snapshot", "tank@before")
    ok(t, "zfs", "destroy", "-r", "tank")
    assert [line.split("\t")[0] for line in listing(t)] == ["tank"]


def test_destroy_recursive_logs_every_dataset_and_the_queue_keeps_the_newest() -> None:
    t = sim(60, zevent_len_max=20)
    tenant = next(line.split("\t")[0] for line in ok(
        t, "zfs", "list", "-Hp", "-o", "name", "-d", "1", "tank").splitlines()[1:])
    gone = ok(t, "zfs", "list", "-Hp", "-o", "name,type", "-t", "filesystem,volume,snapshot",
              "-r", tenant).splitlines()
    ok(t, "zfs", "destroy", "-R", tenant)
    hist = [r for r in history_records(ok(t, "zpool", "history", "-il", "tank"))
            if r[0] == "internal" and r[1] == "destroy"]
    assert sorted(r[2] for r in hist) == sorted(line.split("\t")[0] for line in gone)
    events = parse_events(ok(t, "zpool", "events", "-H", "-v"))
    assert len(events) == 20  # only the newest stay
    assert [e["fields"]["history_dsname"] for e in events] == [r[2] for r in hist[-20:]]
