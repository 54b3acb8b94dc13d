"""`zfs send`: size estimates as zfs prints them (and equal to the bytes sent), the checks and
words of libzfs, the temporary holds `-I` takes, and resume tokens it cannot use."""

from __future__ import annotations

from xfleet.sim import SimTransport

from ..simkit import history_records, ok, run, sim


def _source() -> SimTransport:
    t = sim(0, node="n1", seed=1)
    ok(t, "zfs", "create", "-s", "-V", "1G", "tank/v")
    t.write("tank/v", 8 << 20)
    ok(t, "zfs", "snapshot", "tank/v@a")
    t.write("tank/v", 2 << 20)
    ok(t, "zfs", "snapshot", "tank/v@b")
    t.write("tank/v", 1 << 20)
    ok(t, "zfs", "snapshot", "tank/v@c")
    return t


def _size(out: str) -> int:
    return int(out.rsplit("size\t", 1)[1])


def test_estimates_print_like_zfs_and_equal_what_is_sent() -> None:
    t = _source()
    full = ok(t, "zfs", "send", "-n", "-P", "-L", "-c", "tank/v@a").splitlines()
    assert full[0].startswith("full\ttank/v@a\t") and full[1] == f"size\t{full[0].split()[-1]}"
    assert len(ok(t, "zfs", "send", "-L", "-c", "tank/v@a").encode()) == _size(full[1])
    one = ok(t, "zfs", "send", "-n", "-P", "-i", "@a", "tank/v@c").splitlines()
    assert one[0].startswith("incremental\ttank/v@a\ttank/v@c\t")
    chain = ok(t, "zfs", "send", "-nP", "-I", "@a", "tank/v@c").splitlines()
    assert [line.split("\t")[:3] for line in chain[:2]] == [
        ["incremental", "a", "tank/v@b"], ["incremental", "b", "tank/v@c"]]
    assert sum(int(line.split("\t")[3]) for line in chain[:2]) == _size(chain[2])
    assert len(ok(t, "zfs", "send", "-I", "@a", "tank/v@c").encode()) == _size(chain[2])
    human = ok(t, "zfs", "send", "-n", "-v", "tank/v@a").splitlines()
    assert human[0].startswith("full send of tank/v@a estimated size is ")
    assert human[1].startswith("total estimated size is ")
    # without -c blocks travel uncompressed: the estimate grows with the ratio
    ok(t, "zfs", "create", "-s", "-V", "1G", "-o", "compression=gzip", "tank/z")
    t.write("tank/z", 8 << 20)
    ok(t, "zfs", "snapshot", "tank/z@a")
    plain = _size(ok(t, "zfs", "send", "-nP", "tank/z@a"))
    assert plain >= _size(ok(t, "zfs", "send", "-nP", "-c", "tank/z@a"))
    assert ok(t, "zfs", "send", "-n", "tank/v@a") == ""  # no -v: nothing to say


def test_send_refuses_like_zfs() -> None:
    t = _source()
    history = ok(t, "zpool", "history", "-il", "tank")
    assert run(t, "zfs", "send", "tank/v@nope") == (
        1, "", "cannot open 'tank/v@nope': dataset does not exist\n")
    assert run(t, "zfs", "send", "-i", "@nope", "tank/v@b")[2] == \
        "cannot open 'tank/v@nope': dataset does not exist\n"
    assert run(t, "zfs", "send", "-i", "@c", "tank/v@b")[2] == \
        "warning: cannot send 'tank/v@b': not an earlier snapshot from the same fs\n"
    assert run(t, "zfs", "send", "-I", "@nope", "tank/v@b")[2] == \
        "cannot open 'tank/v@nope': dataset does not exist\n"
    assert run(t, "zfs", "send", "-I", "@a", "tank/v") == (
        1, "", "Error: Unsupported flag with filesystem or bookmark.\n")
    assert run(t, "zfs", "send", "tank/v")[2].startswith("warning: cannot send 'tank/v': "
                                                          "target is busy")
    code, _, err = run(t, "zfs", "send", "-i", "@a", "-I", "@a", "tank/v@b")
    assert code == 2 and err.startswith("usage:\n\tsend [-DLPbcehnpsVvw]")
    code, _, err = run(t, "zfs", "send", "-i", "@a", "-t", "1-2-3-00")
    assert code == 2 and err.startswith("invalid flags combined with -t\nusage:")
    assert run(t, "zfs", "send")[2].startswith("missing snapshot argument\n")
    assert run(t, "zfs", "send", "tank/v@a", "tank/v@b")[2].startswith("too many arguments\n")
    assert run(t, "zfs", "send", "-t", "nonsense") == (
        1, "", "cannot resume send: resume token is corrupt (invalid format)\n")
    assert ok(t, "zpool", "history", "-il", "tank") == history  # nothing sent, nothing logged


def test_a_chain_takes_temporary_holds_and_a_single_send_none() -> None:
    t = _source()
    before = history_records(ok(t, "zpool", "history", "-il", "tank"))
    ok(t, "zfs", "send", "-i", "@a", "tank/v@b")
    assert history_records(ok(t, "zpool", "history", "-il", "tank")) == before
    ok(t, "zfs", "send", "-L", "-I", "@a", "tank/v@c")
    new = history_records(ok(t, "zpool", "history", "-il", "tank"))[len(before):]
    tags = {r[4].split(" ")[0] for r in new if r[0] == "internal"}
    assert len(tags) == 1 and next(iter(tags)).startswith("tag=.send-")
    assert [(r[1], r[2]) for r in new if r[0] == "internal"] == [
        ("hold", "tank/v@a"), ("hold", "tank/v@b"), ("hold", "tank/v@c"),
        ("release", "tank/v@a"), ("release", "tank/v@b"), ("release", "tank/v@c")]
    assert new[-1] == ("command", "zfs send -L -I @a tank/v@c")
    assert ok(t, "zfs", "get", "-H", "-o", "value", "userrefs", "tank/v@a") == "0\n"


def test_a_token_whose_snapshot_is_gone_is_refused() -> None:
    a, b = _source(), sim(0, node="n2", seed=2)
    data = ok(a, "zfs", "send", "tank/v@a").encode()
    r = b.run(["zfs", "receive", "-s", "tank/v"], stdin=data[:len(data) // 3], check=False)
    assert r.exit_status == 1
    token = ok(b, "zfs", "get", "-H", "-o", "value", "receive_resume_token", "tank/v").strip()
    ok(a, "zfs", "destroy", "tank/v@a")
    assert run(a, "zfs", "send", "-t", token) == (
        1, "", "cannot resume send: 'tank/v@a' used in the initial send no longer exists\n")
    ok(a, "zfs", "snapshot", "tank/v@a")
    assert run(a, "zfs", "send", "-t", token)[2] == ("cannot resume send: 'tank/v@a' is no "
                                                     "longer the same snapshot used in the "
                                                     "initial send\n")
