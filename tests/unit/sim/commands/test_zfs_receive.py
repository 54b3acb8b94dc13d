"""`zfs receive`: streams from another simulated node become volumes and snapshots with the
sent guids; what real zfs refuses is refused with its words; a cut stream leaves a partial
receive that `send -t` resumes and `receive -A` discards; the events and history records are
the ones real OpenZFS 2.3 logs for the same operations (tests/fixtures/real/ops.json,
zpool_history_ops.txt)."""

from __future__ import annotations

import json
import re
import struct

import pytest

from xfleet.sim import SimTransport

from ..simkit import REAL, history_events, history_records, ok, run, sim


def _send(t: SimTransport, *args: str) -> bytes:
    return ok(t, "zfs", "send", *args).encode()


def _recv(t: SimTransport, data: bytes, *args: str) -> tuple[int, str, str]:
    r = t.run(["zfs", "receive", *args], stdin=data, check=False)
    return r.exit_status, r.stdout, r.stderr


def _source() -> SimTransport:
    t = sim(0, node="n1", seed=1)
    ok(t, "zfs", "create", "-p", "tank/app")
    ok(t, "zfs", "create", "-s", "-V", "1G", "-o", "compression=zstd", "tank/app/v")
    t.write("tank/app/v", 8 << 20)
    ok(t, "zfs", "snapshot", "tank/app/v@a")
    t.write("tank/app/v", 2 << 20)
    ok(t, "zfs", "snapshot", "tank/app/v@b")
    return t


def _rows(t: SimTransport, name: str, cols: str = "name,guid") -> list[list[str]]:
    out = ok(t, "zfs", "list", "-H", "-p", "-t", "all", "-o", cols, "-r", name)
    return [line.split("\t") for line in out.splitlines()]


def test_full_then_incremental_keep_the_snapshot_guids() -> None:
    a, b = _source(), sim(0, node="n2", seed=2)
    ok(b, "zfs", "create", "tank/app")
    code, _, err = _recv(b, _send(a, "-L", "-c", "tank/app/v@a"), "-u", "-o",
                         "compression=zstd", "-o", "volmode=none", "tank/app/v")
    assert code == 0, err
    assert _recv(b, _send(a, "-i", "@a", "tank/app/v@b"), "tank/app/v")[0] == 0
    src, dst = _rows(a, "tank/app/v"), _rows(b, "tank/app/v")
    assert [r[0] for r in dst] == [r[0] for r in src]
    assert [r[1] for r in dst[1:]] == [r[1] for r in src[1:]]  # snapshots: the sent guids
    assert dst[0][1] != src[0][1]  # the volume itself is a new dataset
    props = ok(b, "zfs", "get", "-H", "-p", "-o", "property,value,source",
               "compression,volmode,volsize,volblocksize,referenced", "tank/app/v")
    assert "compression\tzstd\tlocal" in props and "volmode\tnone\tlocal" in props
    assert "volsize\t1073741824" in props and "volblocksize\t16384" in props
    assert props.split("referenced\t")[1].split("\t")[0] == \
        ok(a, "zfs", "get", "-H", "-p", "-o", "value", "referenced", "tank/app/v@b").strip()
    # the same snapshot again: libzfs skips it ("already exists; ignoring")
    assert _recv(b, _send(a, "-i", "@a", "tank/app/v@b"), "tank/app/v")[0] == 0


def test_receive_refuses_like_zfs() -> None:
    a, b = _source(), sim(0, node="n2", seed=2)
    full = _send(a, "tank/app/v@a")
    incr = _send(a, "-i", "@a", "tank/app/v@b")
    assert _recv(b, full, "tank/app/v") == (
        1, "", "cannot open 'tank/app': dataset does not exist\n"
        "cannot receive new filesystem stream: unable to restore to destination\n")
    assert _recv(b, incr, "tank/x")[2] == \
        "cannot receive incremental stream: destination 'tank/x' does not exist\n"
    ok(b, "zfs", "create", "tank/app")
    assert _recv(b, full, "tank/app/v")[0] == 0
    assert _recv(b, full, "tank/app/v") == (
        1, "", "cannot receive new filesystem stream: destination 'tank/app/v' exists\n"
        "must specify -F to overwrite it\n")
    b.write("tank/app/v", 4096)
    assert _recv(b, incr, "tank/app/v")[2] == (
        "cannot receive incremental stream: destination tank/app/v has been modified\n"
        "since most recent snapshot\n")
    assert _recv(b, incr, "-F", "tank/app/v")[0] == 0  # -F rolls the write back
    assert _recv(b, incr, "tank/app/v@c")[2].endswith("has been modified\nsince most "
                                                      "recent snapshot\n")
    code, _, err = _recv(b, b"garbage\n", "tank/app/w")
    assert (code, err) == (1, "cannot receive: invalid stream (bad magic number)\n")
    assert _recv(b, b"", "tank/app/w")[2] == "cannot receive: failed to read from stream\n"
    assert _recv(b, incr, "-d", "-e", "tank")[0] == 2
    ok(a, "zfs", "snapshot", "tank/app/v@c")
    from_b = _send(a, "-i", "@b", "tank/app/v@c")
    ok(b, "zfs", "rename", "tank/app/v@b", "tank/app/v@b2")
    ok(b, "zfs", "destroy", "tank/app/v@b2")
    assert _recv(b, from_b, "tank/app/v")[2] == (
        "cannot receive incremental stream: most recent snapshot of tank/app/v does not\n"
        "match incremental source\n")


def test_a_cut_stream_resumes_from_its_token_or_is_aborted() -> None:
    a, b = _source(), sim(0, node="n2", seed=2)
    ok(b, "zfs", "create", "tank/app")
    full = _send(a, "-L", "-c", "tank/app/v@a")
    code, _, err = _recv(b, full[:len(full) // 2], "tank/app/v")
    assert (code, err) == (1, "cannot receive new filesystem stream: incomplete stream\n")
    assert run(b, "zfs", "list", "tank/app/v")[0] == 1  # nothing left without -s
    code, _, err = _recv(b, full[:len(full) // 2], "-s", "tank/app/v")
    assert code == 1 and err.startswith(
        "cannot receive new filesystem stream: checksum mismatch or incomplete stream.\n"
        "Partially received snapshot is saved.\nA resuming stream can be generated on the "
        "sending system by running:\n    zfs send -t 1-")
    token = ok(b, "zfs", "get", "-H", "-o", "value", "receive_resume_token", "tank/app/v")
    assert err.endswith(f"zfs send -t {token}")
    assert _rows(b, "tank/app/v", "name,inconsistent") == [["tank/app/v", "1"]]
    # a new full stream onto the partial one is refused; the rest of it resumes
    assert "must specify -F" in _recv(b, full, "-s", "tank/app/v")[2]
    estimate = ok(a, "zfs", "send", "-n", "-P", "-t", token.strip())
    assert estimate.startswith("resume token contents:\nnvlist version: 0\n")
    rest = _send(a, "-t", token.strip())
    assert int(estimate.rsplit("size\t", 1)[1]) == len(rest) < len(full)
    assert _recv(b, rest, "-s", "tank/app/v")[0] == 0
    assert _rows(b, "tank/app/v", "name,inconsistent,receive_resume_token") == [
        ["tank/app/v", "0", "-"], ["tank/app/v@a", "0", "-"]]
    # an incremental one cut: the partial state is tank/app/v/%recv's; -A discards it
    incr = _send(a, "-i", "@a", "tank/app/v@b")
    assert _recv(b, incr[:len(incr) - 100], "-s", "tank/app/v")[0] == 1
    assert ok(b, "zfs", "get", "-H", "-o", "value", "receive_resume_token",
              "tank/app/v").startswith("1-")
    assert "partially-complete state" in _recv(b, incr, "-s", "tank/app/v")[2]
    assert run(b, "zfs", "receive", "-A", "tank/app/v") == (0, "", "")
    assert run(b, "zfs", "receive", "-A", "tank/app/v") == (
        1, "", "'tank/app/v' does not have any resumable receive state to abort\n")
    assert run(b, "zfs", "receive", "-A", "tank/app/nope")[0] == 2
    assert _recv(b, incr, "-s", "tank/app/v")[0] == 0


# ---------------------------------------------------------------------------------------------
# parity with the lab's captures


def _real_ops() -> list[dict[str, object]]:
    ops = json.loads((REAL / "ops.json").read_text())["ops"]
    return [o for o in ops if o["op"] in ("receive", "receive_abort")]


def _lab_like() -> tuple[SimTransport, list[list[str]]]:
    """The receive operations of the capture (tests/fixtures/real/ops.json), played on a
    simulated node named like the lab's; returns it and each operation's events."""
    t = sim(0, node="lab1")
    ok(t, "zfs", "create", "-p", "tank/app2")
    ok(t, "zfs", "create", "tank/other")
    ok(t, "zfs", "create", "-s", "-V", "64M", "tank/app2/vol-comp")
    ok(t, "zfs", "create", "-s", "-V", "64M", "tank/app2/vol-next")
    for snap in ("vol-next@s1-renamed", "vol-next@s2"):
        ok(t, "zfs", "snapshot", f"tank/app2/{snap}")
    t.write("tank/app2/vol-comp", 8 << 20)
    ok(t, "zfs", "snapshot", "tank/app2/vol-comp@s2")
    t.write("tank/app2/vol-comp", 4 << 20)
    ok(t, "zfs", "snapshot", "tank/app2/vol-comp@r1")
    ok(t, "zpool", "events", "-c")
    got: list[list[str]] = []
    seen = [0]

    def step(code: int) -> None:
        assert code == 0 or code == 1
        evs = history_events(t)
        got.append([f"{e['fields']['history_internal_name']} "
                    f"{e['fields'].get('history_dsname', '')}" for e in evs[seen[0]:]])
        seen[0] = len(evs)

    def snapshot(name: str) -> None:
        t.write("tank/app2/vol-comp", 4 << 20)
        ok(t, "zfs", "snapshot", f"tank/app2/vol-comp@{name}")
        seen[0] = len(history_events(t))

    def cut(data: bytes) -> bytes:
        return data[:min(len(data) - 1, 1_000_000)]

    vc = "tank/app2/vol-comp"
    step(_recv(t, _send(t, f"{vc}@s2"), "tank/other/rx")[0])
    step(_recv(t, _send(t, "-i", "@s2", f"{vc}@r1"), "tank/other/rx")[0])
    step(_recv(t, cut(_send(t, f"{vc}@s2")), "-s", "tank/other/rx2")[0])
    step(run(t, "zfs", "receive", "-A", "tank/other/rx2")[0])
    snapshot("s3")
    step(_recv(t, cut(_send(t, "-i", "@r1", f"{vc}@s3")), "-s", "tank/other/rx")[0])
    token = ok(t, "zfs", "get", "-H", "-o", "value", "receive_resume_token", "tank/other/rx")
    step(_recv(t, _send(t, "-t", token.strip()), "-s", "tank/other/rx")[0])
    snapshot("s4")
    step(_recv(t, cut(_send(t, "-i", "@s3", f"{vc}@s4")), "-s", "tank/other/rx")[0])
    step(run(t, "zfs", "receive", "-A", "tank/other/rx")[0])
    step(_recv(t, _send(t, "-R", "tank/app2/vol-next@s2"), "tank/other/rep")[0])
    snapshot("f1")
    step(_recv(t, _send(t, "-i", "@s2", f"{vc}@f1"), "-F", "tank/other/rx")[0])
    return t, got


def test_receives_post_the_events_real_zfs_posts() -> None:
    _, got = _lab_like()
    real = [list(o["events"]) for o in _real_ops()]  # type: ignore[call-overload]
    assert len(got) == len(real)
    for mine, theirs in zip(got, real, strict=True):
        # the sender's holds interleave with the receive in a pipe; each side keeps its order
        for side in ("tank/app2", "tank/other"):
            assert [e for e in mine if side in e] == [e for e in theirs if side in e], theirs


def _receive_records(recs: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return [(r[1], r[2], re.sub(r"mintxg=[0-9]+", "mintxg=N", r[4]))
            for r in recs if r[0] == "internal" and r[2].startswith("tank/other/r")]


def _begin_record(recs: list[tuple[str, ...]]) -> tuple[object, ...]:
    """The fields of the one `ioctl receive` record that do not depend on guids or times."""
    (body,) = [r[2:] for r in recs if r[:2] == ("ioctl", "receive")]
    raw = bytes(int(line.split(": ")[1]) for line in body if "begin_record[" in line)
    f = struct.unpack("<IIQQQIIQQ256s", raw)
    return (f[0], f[1], f[2], f[3], f[5], f[6], f[9].rstrip(b"\0"),
            [line.strip() for line in body if "begin_record[" not in line
             and "read_bytes" not in line])


def test_receives_log_the_history_real_zfs_logs() -> None:
    t, _ = _lab_like()
    mine = history_records(ok(t, "zpool", "history", "-il", "tank"))
    real = history_records((REAL / "zpool_history_ops.txt").read_text())
    assert _receive_records(mine) == _receive_records(real)
    assert _begin_record(mine) == _begin_record(real)


@pytest.mark.parametrize("flags", [["-s"], []])
def test_a_resumable_receive_logs_its_ioctl(flags: list[str]) -> None:
    a, b = _source(), sim(0, node="n2", seed=2)
    ok(b, "zfs", "create", "tank/app")
    assert _recv(b, _send(a, "-L", "-c", "tank/app/v@a"), *flags, "-o", "volmode=none",
                 "tank/app/v")[0] == 0
    recs = history_records(ok(b, "zpool", "history", "-il", "tank"))
    ioctls = [r for r in recs if r[:2] == ("ioctl", "receive")]
    assert len(ioctls) == len(flags)
    if flags:
        body = ioctls[0][2:]
        assert body[:3] == ("        snapname: 'tank/app/v@a'", "        localprops:",
                            "            volmode: 3")
        assert "    output:" in body and "        errors:" in body
