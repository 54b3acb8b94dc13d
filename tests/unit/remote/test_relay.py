"""Binary processes (`Transport.start`) and the relay between two nodes (xfleet/remote/relay.py).

"Two nodes" are two SSHTransports to the loopback sshd (tests/sshd.py) or two LocalTransports;
the remote commands run on this machine either way, so /proc shows whether they still run and
a file written by the destination can be read back. Durations are only ever asserted as lower
bounds (that a rate limit holds); a hang is caught by the relay's own `timeout`.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from sshd import SSHD, process_running

from xfleet.core.errors import CommandTimeout, UsageError
from xfleet.remote.host import Host
from xfleet.remote.local import LocalTransport
from xfleet.remote.relay import RelayResult, TokenBucket, relay
from xfleet.remote.ssh import SSHTransport
from xfleet.remote.transport import ProcessGone, Transport
from xfleet.sim import SimTransport

MiB = 1 << 20
KINDS = [
    pytest.param("local", id="local"),
    pytest.param("ssh", id="ssh", marks=pytest.mark.ssh),
    pytest.param("mixed", id="local-to-ssh", marks=pytest.mark.ssh),
    pytest.param("same", id="one-ssh-node", marks=pytest.mark.ssh),  # two channels, one link
]
NODE_KINDS = KINDS[:2]  # one node: local or ssh


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ~/.ssh/config or ~/.ssh/known_hosts of the machine leaks into a test."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 MiB of random bytes: more than every buffer between the two commands together."""
    path = tmp_path_factory.mktemp("relay") / "data.bin"
    with path.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(MiB))
    return path


def sha256(path: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read() if limit is None else f.read(limit))
    return h.hexdigest()


MakeNode = Callable[[str, str], Transport]  # (kind, name) -> transport


@pytest.fixture
def make_node(request: pytest.FixtureRequest) -> Iterator[MakeNode]:
    """make_node(kind, name) -> a transport ("ssh": to the test sshd), closed after the test."""
    opened: list[Transport] = []

    def make(kind: str, name: str) -> Transport:
        t: Transport
        if kind == "ssh":
            server: SSHD = request.getfixturevalue("sshd")
            t = SSHTransport(server.host(name, command_timeout=30.0))
        else:
            t = LocalTransport(name, command_timeout=30.0)
        opened.append(t)
        return t

    yield make
    for t in opened:
        t.close()


@pytest.fixture
def pair(request: pytest.FixtureRequest, make_node: MakeNode) -> tuple[Transport, Transport]:
    """(source, destination) for the parametrized kind."""
    kind: str = request.param
    if kind == "same":
        node = make_node("ssh", "n1")
        return node, node
    src = make_node("local" if kind == "mixed" else kind, "src")
    dst = make_node("ssh" if kind == "mixed" else kind, "dst")
    return src, dst


def marker() -> str:
    return f"xfleet-relay-{uuid.uuid4().hex}"


def pid_gone(pid: int) -> bool:
    """No such process, or only its zombie (not reaped yet by sshd)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


# ---------------------------------------------------------------------------------------------
# the relay


@pytest.mark.parametrize("pair", KINDS, indirect=True)
def test_relay_delivers_the_stream_exactly(pair: tuple[Transport, Transport], data: Path) -> None:
    src, dst = pair
    before = (src.commands, dst.commands)
    seen: list[int] = []
    result = relay(src, ["cat", str(data)], dst, ["sha256sum"], progress=seen.append,
                   timeout=30)
    assert result.ok, result
    assert (result.src_status, result.dst_status, result.stopped) == (0, 0, False)
    assert result.dst_stdout.split()[:1] == [sha256(data)], result
    assert result.bytes == data.stat().st_size == sum(seen)
    assert result.seconds > 0 and result.rate > 0
    if src is dst:  # the destination starts first
        assert src.commands == before[0] + 2
        assert src.history[-2:] == [["sha256sum"], ["cat", str(data)]]
    else:
        assert (src.commands, dst.commands) == (before[0] + 1, before[1] + 1)
        assert src.history[-1] == ["cat", str(data)] and dst.history[-1] == ["sha256sum"]


@pytest.mark.parametrize("pair", KINDS, indirect=True)
def test_destination_failing_early_kills_the_source(
    pair: tuple[Transport, Transport], tmp_path: Path
) -> None:
    # Like a receive that runs out of space: it takes a little, complains, exits 1. The source
    # produces without end, so only the relay can stop it.
    src, dst = pair
    mark, pidfile = marker(), tmp_path / "src.pid"
    result = relay(
        src, ["sh", "-c", f"echo $$ > {pidfile}; cat /dev/zero; : {mark}"],
        dst, ["sh", "-c", "echo \"took $(head -c 1000 | wc -c) bytes; cannot receive: out of"
                          " space\" >&2; exit 1"],
        timeout=20,
    )
    assert not result.ok and not result.stopped
    assert result.dst_status == 1
    # (not result.bytes: it counts whole chunks written, and the destination may exit in the
    # middle of the first one, so it can be 0)
    assert result.dst_stderr.endswith("took 1000 bytes; cannot receive: out of space\n"), \
        result.dst_stderr  # (the end: as in test_failing_source_still_ends_the_destination_input)
    assert result.src_status == -1  # killed
    pid = int(pidfile.read_text())
    wait_for(lambda: pid_gone(pid) and not process_running(mark), "the source to end")


@pytest.mark.parametrize("pair", KINDS, indirect=True)
def test_destination_exiting_early_kills_the_source(pair: tuple[Transport, Transport]) -> None:
    src, dst = pair
    mark = marker()
    result = relay(src, ["sh", "-c", f"cat /dev/zero; : {mark}"],
                   dst, ["sh", "-c", "head -c 1000 >/dev/null"], timeout=20)
    assert (result.ok, result.dst_status, result.src_status) == (False, 0, -1)
    wait_for(lambda: not process_running(mark), "the command to end")


def test_local_destination_exiting_cleanly_before_the_end_is_not_ok(data: Path) -> None:
    # Locally the relay sees the broken pipe at once. (Over SSH, sshd quietly discards what
    # arrives after its command exited, so a short finite stream can be all sent before the
    # exit is known; `zfs receive` never exits 0 before the end of its stream.)
    src, dst = LocalTransport("a"), LocalTransport("b")
    mark = marker()
    result = relay(src, ["sh", "-c", f"cat {data}; : {mark}"],
                   dst, ["sh", "-c", "head -c 1000 >/dev/null"], timeout=20)
    assert (result.ok, result.dst_status, result.src_status) == (False, 0, -1)
    assert result.bytes < data.stat().st_size
    wait_for(lambda: not process_running(mark), "the command to end")


@pytest.mark.parametrize("pair", KINDS, indirect=True)
def test_failing_source_still_ends_the_destination_input(
    pair: tuple[Transport, Transport], data: Path
) -> None:
    src, dst = pair
    result = relay(src, ["sh", "-c", f"head -c 100000 {data}; echo 'send failed' >&2; exit 3"],
                   dst, ["sha256sum"], timeout=20)
    assert not result.ok
    assert (result.src_status, result.dst_status) == (3, 0)
    # what the command wrote is the end of its stderr: over SSH the node's login shell may
    # print first (this machine's root .bashrc runs `pyenv init`, whose rehash races others)
    assert result.src_stderr.endswith("send failed\n"), result.src_stderr
    assert result.bytes == 100000
    # the destination read to its end-of-file: it hashed exactly what was sent
    assert result.dst_stdout.split()[0] == sha256(data, 100000)


@pytest.mark.parametrize("pair", KINDS, indirect=True)
def test_stop_mid_stream_kills_both(pair: tuple[Transport, Transport], tmp_path: Path) -> None:
    src, dst = pair
    src_mark, dst_mark = marker(), marker()
    src_pid, dst_pid = tmp_path / "src.pid", tmp_path / "dst.pid"
    stop = threading.Event()
    moved = [0]

    def progress(n: int) -> None:
        moved[0] += n
        if moved[0] >= 4 * MiB:
            stop.set()

    result = relay(
        src, ["sh", "-c", f"echo $$ > {src_pid}; cat /dev/zero; : {src_mark}"],
        dst, ["sh", "-c", f"echo $$ > {dst_pid}; cat >/dev/null; : {dst_mark}"],
        progress=progress, stop=stop, timeout=20,
    )
    assert result.stopped and not result.ok
    assert (result.src_status, result.dst_status) == (-1, -1)
    assert result.bytes >= 4 * MiB
    pids = [int(src_pid.read_text()), int(dst_pid.read_text())]
    wait_for(lambda: all(pid_gone(p) for p in pids)
             and not process_running(src_mark) and not process_running(dst_mark),
             "both commands to end")


def test_stop_while_the_local_source_is_silent() -> None:
    # Nothing flows, so only a kill can end the blocked read: both are gone afterwards.
    src, dst = LocalTransport("a"), LocalTransport("b")
    src_mark, dst_mark = marker(), marker()
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    result = relay(src, ["sh", "-c", f"sleep 30; : {src_mark}"],
                   dst, ["sh", "-c", f"cat >/dev/null; : {dst_mark}"], stop=stop, timeout=20)
    assert result.stopped and (result.src_status, result.dst_status) == (-1, -1)
    assert result.bytes == 0
    wait_for(lambda: not process_running(src_mark) and not process_running(dst_mark),
             "both commands to end")


@pytest.mark.parametrize("pair", KINDS[:2] + KINDS[3:], indirect=True)
def test_slow_destination_holds_the_source_back(
    pair: tuple[Transport, Transport], tmp_path: Path
) -> None:
    # The destination takes nothing for a while: the source must block once the buffers in
    # between (SSH windows, socket buffers, pipes, the relay's few chunks: some tens of MiB at
    # most) are full, i.e. the stream is never held whole in memory on our side.
    src, dst = pair
    size = 128 * MiB
    done, go = tmp_path / "source-finished", tmp_path / "go"
    holder: list[RelayResult] = []
    t = threading.Thread(target=lambda: holder.append(relay(
        src, ["sh", "-c", f"head -c {size} /dev/zero && touch {done}"],
        dst, ["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.1; done; wc -c"],
        timeout=30)))
    t.start()
    time.sleep(1.5)
    finished_early = done.exists()
    go.touch()
    t.join(60)
    assert not finished_early, "the source wrote everything while the destination took nothing"
    assert holder and holder[0].ok
    assert holder[0].dst_stdout.strip() == str(size) and holder[0].bytes == size


@pytest.mark.parametrize("pair", NODE_KINDS, indirect=True)
def test_rate_limit(pair: tuple[Transport, Transport], data: Path) -> None:
    src, dst = pair
    start = time.monotonic()
    result = relay(src, ["head", "-c", str(8 * MiB), str(data)], dst, ["sha256sum"],
                   limits=[TokenBucket(4 * MiB)], timeout=20)
    elapsed = time.monotonic() - start
    assert result.ok and result.bytes == 8 * MiB
    assert result.dst_stdout.split()[0] == sha256(data, 8 * MiB)
    assert elapsed >= 1.7  # 8 MiB at 4 MiB/s, less one burst of 1/20 s


@pytest.mark.parametrize("kind", NODE_KINDS)
def test_shared_rate_limit_splits_the_rate(make_node: MakeNode, data: Path, kind: str) -> None:
    # 8 MiB each through one 8 MiB/s bucket: alone, each would take ~1 s; together, ~2 s each.
    shared = TokenBucket(8 * MiB)
    results: dict[int, tuple[RelayResult, float]] = {}
    nodes = [(make_node(kind, f"s{i}"), make_node(kind, f"d{i}")) for i in range(2)]

    def one(i: int) -> None:
        start = time.monotonic()
        src, dst = nodes[i]
        r = relay(src, ["head", "-c", str(8 * MiB), str(data)], dst, ["sha256sum"],
                  limits=[shared], timeout=20)
        results[i] = (r, time.monotonic() - start)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [0, 1]
    for r, elapsed in results.values():
        assert r.ok and r.bytes == 8 * MiB
        assert elapsed >= 1.7, f"a relay got {8 / elapsed:.1f} MiB/s of a shared 8 MiB/s"


def test_rate_limits_stack() -> None:
    # every byte passes every bucket: the slowest one sets the pace
    src, dst = LocalTransport("a"), LocalTransport("b")
    start = time.monotonic()
    result = relay(src, ["head", "-c", str(MiB), "/dev/zero"], dst, ["wc", "-c"],
                   limits=[TokenBucket(100 * MiB), TokenBucket(MiB)], timeout=20)
    assert result.ok and result.dst_stdout.strip() == str(MiB)
    assert time.monotonic() - start >= 0.9


def test_progress_exception_kills_both_and_is_raised(tmp_path: Path) -> None:
    src, dst = LocalTransport("a"), LocalTransport("b")
    src_pid, dst_pid = tmp_path / "src.pid", tmp_path / "dst.pid"

    def progress(n: int) -> None:
        raise RuntimeError("the caller broke")

    with pytest.raises(RuntimeError, match="the caller broke"):
        relay(src, ["sh", "-c", f"echo $$ > {src_pid}; exec cat /dev/zero"],
              dst, ["sh", "-c", f"echo $$ > {dst_pid}; exec cat >/dev/null"],
              progress=progress, timeout=20)
    pids = [int(src_pid.read_text()), int(dst_pid.read_text())]
    assert all(pid_gone(p) for p in pids)  # killed and reaped before relay returned


def test_silent_source_times_out_and_nothing_is_left(tmp_path: Path) -> None:
    src, dst = LocalTransport("a"), LocalTransport("b")
    mark = marker()
    with pytest.raises(CommandTimeout, match="no output from sh for 0.5s"):
        relay(src, ["sh", "-c", f"sleep 30; : {mark}"], dst, ["sh", "-c", "cat >/dev/null"],
              timeout=0.5)
    wait_for(lambda: not process_running(mark), "the command to end")


def test_destination_that_cannot_start_starts_no_source() -> None:
    src, dst = LocalTransport("a"), LocalTransport("b")
    with pytest.raises(Exception, match="command not found: no-such-receive"):
        relay(src, ["cat", "/dev/zero"], dst, ["no-such-receive"])
    assert src.commands == 0


def test_a_source_that_cannot_start_leaves_no_destination(tmp_path: Path) -> None:
    src, dst = LocalTransport("a"), LocalTransport("b")
    mark = marker()
    # the destination may be killed before or after its shell got going: either way, no
    # process of it may be left (the marker is in the shell's command line while it runs)
    with pytest.raises(Exception, match="command not found: no-such-send"):
        relay(src, ["no-such-send"], dst, ["sh", "-c", f"cat; : {mark}"])
    wait_for(lambda: not process_running(mark), "the command to end")


def test_a_simulated_node_without_a_data_path_refuses_streams() -> None:
    sim = SimTransport(Host(name="s1", kind="sim", sim={"volumes": 5, "data_path": False}))
    with pytest.raises(UsageError, match="the simulator has no data path") as exc:
        relay(sim, ["zfs", "send", "tank/v@s"], LocalTransport("b"), ["cat"])
    assert "docs/lab.md" in str(exc.value)
    with pytest.raises(UsageError, match="simulator has no data path"):
        sim.start(["zfs", "receive", "tank/v"])
    assert sim.commands == 0  # nothing was issued


@pytest.mark.ssh
def test_relay_survives_key_re_exchanges_while_commands_end(make_node: MakeNode,
                                                            data: Path) -> None:
    # paramiko re-keys every 512 MiB; a channel closing during a re-key used to deadlock its
    # reader thread and kill the connection after 30 s (paramiko #822). Re-key every 256 KiB
    # here, with short commands ending on both connections all the while.
    src, dst = make_node("ssh", "a"), make_node("ssh", "b")
    for t in (src, dst):
        assert isinstance(t, SSHTransport)
        paramiko_transport = t.connect().get_transport()
        assert paramiko_transport is not None
        packetizer: Any = paramiko_transport.packetizer
        packetizer.REKEY_BYTES = 256 << 10
    done = threading.Event()
    ran: list[int] = []
    errors: list[Exception] = []

    def chatter() -> None:
        while not done.is_set():
            try:
                assert src.run(["echo", "x"]).stdout == "x\n"
                assert dst.run(["true"]).exit_status == 0
                ran.append(1)
            except Exception as exc:
                errors.append(exc)
                return

    th = threading.Thread(target=chatter)
    th.start()
    try:
        result = relay(src, ["head", "-c", str(16 * MiB), str(data)], dst, ["sha256sum"],
                       timeout=20)
    finally:
        done.set()
        th.join(30)
    assert errors == []
    assert result.ok and result.dst_stdout.split()[0] == sha256(data, 16 * MiB)
    assert ran


# ---------------------------------------------------------------------------------------------
# TokenBucket


def test_token_bucket_long_run_rate() -> None:
    bucket = TokenBucket(1_000_000)
    assert bucket.burst == 50_000
    start = time.monotonic()
    for _ in range(20):
        bucket.take(50_000)
    assert time.monotonic() - start >= 0.9  # 1 MB at 1 MB/s, less one burst


def test_token_bucket_is_shared_by_threads() -> None:
    bucket = TokenBucket(2_000_000, burst=10_000)
    start = time.monotonic()
    threads = [threading.Thread(target=lambda: [bucket.take(25_000) for _ in range(20)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start >= 0.95  # 2 MB at 2 MB/s in total, less one burst


def test_token_bucket_cancel_and_validation() -> None:
    bucket = TokenBucket(1000, burst=1000)
    assert bucket.take(500) is True  # within the burst: no wait
    cancel = threading.Event()
    cancel.set()
    assert bucket.take(100_000, cancel=cancel) is False
    with pytest.raises(UsageError):
        TokenBucket(0)


# ---------------------------------------------------------------------------------------------
# Transport.start: the processes underneath


@pytest.mark.parametrize("kind", NODE_KINDS)
def test_process_round_trip_through_cat(make_node: MakeNode, kind: str) -> None:
    t = make_node(kind, "n1")
    payload = os.urandom(3 * MiB)  # more than a pipe or an SSH window holds: both ways at once
    p = t.start(["cat"])
    got = bytearray()

    def feed() -> None:
        p.write(payload)
        p.close_stdin()

    feeder = threading.Thread(target=feed)
    feeder.start()
    while chunk := p.read(256 << 10):
        got += chunk
    feeder.join()
    assert bytes(got) == payload
    assert p.wait() == 0 and p.poll() == 0
    p.close()
    assert t.commands == 1 and t.history == [["cat"]]


@pytest.mark.parametrize("kind", NODE_KINDS)
def test_process_status_stderr_and_collected_stdout(make_node: MakeNode, kind: str) -> None:
    t = make_node(kind, "n1")
    with t.start(["sh", "-c", "cat >/dev/null; echo out; echo 'pool is sad' >&2; exit 4"],
                 collect_stdout=True) as p:
        p.write(b"x" * 100_000)
        p.close_stdin()
        assert p.wait() == 4
        assert p.stderr() == "pool is sad\n" and p.stdout() == "out\n"
        with pytest.raises(UsageError):
            p.read()


@pytest.mark.parametrize("kind", NODE_KINDS)
def test_process_with_lots_of_stderr_does_not_block(make_node: MakeNode, kind: str) -> None:
    t = make_node(kind, "n1")
    with t.start(["sh", "-c", "head -c 10000000 /dev/zero >&2; echo done"]) as p:
        assert p.read() == b"done\n"
        assert p.read() == b""
        assert p.wait() == 0
        assert len(p.stderr()) == 64 * 1024  # the first 64 KiB are kept


@pytest.mark.parametrize("kind", NODE_KINDS)
def test_writing_to_a_finished_process_raises(make_node: MakeNode, kind: str) -> None:
    t = make_node(kind, "n1")
    p = t.start(["sh", "-c", "echo 'no space' >&2; exit 2"])
    assert p.wait() == 2
    with pytest.raises(ProcessGone) as exc:
        p.write(b"z" * (4 * MiB))
    assert exc.value.exit_status == 2
    assert "sh exited with status 2 before taking all of its input" in str(exc.value)
    p.close()


@pytest.mark.parametrize("kind", NODE_KINDS)
def test_read_timeout(make_node: MakeNode, kind: str) -> None:
    t = make_node(kind, "n1")
    mark = marker()
    start = time.monotonic()
    with pytest.raises(CommandTimeout, match="no output from sh for 0.5s"), t.start(
        ["sh", "-c", f"sleep 3; : {mark}"], timeout=0.5
    ) as p:
        p.read()
    assert time.monotonic() - start >= 0.5
    if kind == "local":  # over SSH (root login) a silent command outlives its channel
        wait_for(lambda: not process_running(mark), "the command to end")


@pytest.mark.parametrize("kind", NODE_KINDS)
def test_kill_a_writing_process(make_node: MakeNode, kind: str) -> None:
    t = make_node(kind, "n1")
    mark = marker()
    p = t.start(["sh", "-c", f"cat /dev/zero; : {mark}"])
    assert p.read(1000)
    assert process_running(mark)
    p.kill()
    assert p.wait() == -1
    assert p.read() == b""  # a killed process reads as ended
    # at once, not after the group has died: wait() reaps only the shell, and `cat`, killed
    # with it, may still hold the read end of stdin for a moment, where a write would land
    # (this was the flake: "DID NOT RAISE" under load)
    with pytest.raises(ProcessGone, match="was killed"):
        p.write(b"x")
    p.close()
    wait_for(lambda: not process_running(mark), "the command to end")


def test_kill_a_silent_local_process_group() -> None:
    t = LocalTransport("here")
    mark = marker()
    p = t.start(["sh", "-c", f"sleep 30; : {mark}"])
    wait_for(lambda: process_running(mark), "the command to start")
    p.kill()
    assert p.wait() == -1
    p.close()
    wait_for(lambda: not process_running(mark), "the command to end")


@pytest.mark.parametrize("kind", NODE_KINDS)
def test_context_manager_kills_on_exception(make_node: MakeNode, kind: str) -> None:
    t = make_node(kind, "n1")
    mark = marker()
    with pytest.raises(ValueError), t.start(["sh", "-c", f"cat /dev/zero; : {mark}"]) as p:
        p.read(10)
        raise ValueError("caller failed")
    assert p.poll() == -1
    wait_for(lambda: not process_running(mark), "the command to end")


def test_bad_argv_is_refused_before_starting() -> None:
    t = LocalTransport("here")
    with pytest.raises(UsageError):
        t.start("zfs send tank/v@s")
    with pytest.raises(UsageError):
        t.start([])
    assert t.commands == 0
