"""A connection that breaks under paramiko while a command runs (tests/sshd.py's real sshd).

The lab saw `xfleet move --json` print nothing when its target rebooted mid-copy: the socket
write of `Channel.send` failed (connection reset) before paramiko's reader thread had noticed,
so paramiko raised EOFError, which no layer of xfleet expected. Here that window is made
deterministic: the sshd processes serving the connection are frozen (SIGSTOP), then the
write side of our socket is shut down. Every write now fails in the kernel (EPIPE, which
paramiko turns into EOFError), while the reader thread, which would only notice when the
server closes, still sees an open connection. Afterwards the frozen processes are killed.

Whatever paramiko raises, xfleet must raise a TransportError (an XfleetError: a
`ProcessGone` or a lost connection), and killing or closing afterwards must not raise.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sshd import SSHD

from xfleet.core.errors import TransportError, XfleetError
from xfleet.remote.local import LocalTransport
from xfleet.remote.relay import relay
from xfleet.remote.ssh import SSHTransport

pytestmark = pytest.mark.ssh

MiB = 1 << 20


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ~/.ssh/config or ~/.ssh/known_hosts of the machine leaks into a test."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture
def node(sshd: SSHD) -> Iterator[SSHTransport]:
    t = SSHTransport(sshd.host("n1", command_timeout=15.0))
    try:
        yield t
    finally:
        t.close()


def _socket(t: SSHTransport) -> socket.socket:
    transport = t.connect().get_transport()
    assert transport is not None and isinstance(transport.sock, socket.socket)
    return transport.sock


def _holders(inode: str) -> dict[int, str]:
    """pid -> comm of every process holding socket `inode` (from /proc)."""
    holders = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == f"socket:[{inode}]":
                        holders[int(entry.name)] = (entry / "comm").read_text().strip()
                        break
    return holders


def serving_pids(sshd: SSHD, t: SSHTransport) -> list[int]:
    """The sshd processes holding the server's end of `t`'s connection (from /proc).

    A session's child holds the socket from sshd's fork until it closes the connection's
    descriptors before exec'ing the command: a scan in that window sees it, and by the time
    its comm is read it may be the command (`bash`). So the scan is repeated until only
    sshd processes hold the socket.
    """
    ours = _socket(t).getsockname()[1]
    local, remote = f"0100007F:{sshd.port:04X}", f"0100007F:{ours:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == local and f[2] == remote:
            inode = f[9]
    assert inode is not None, f"no server socket 127.0.0.1:{sshd.port} <- :{ours}"
    deadline = time.monotonic() + 10
    holders = _holders(inode)
    while not holders or not all(c.startswith("sshd") for c in holders.values()):
        assert time.monotonic() < deadline, (
            f"after 10 s, socket inode {inode} is held by {holders}, not only by sshd")
        time.sleep(0.01)
        holders = _holders(inode)
    return list(holders)


class Breaker:
    """Breaks a connection under paramiko (see the module docstring), and cleans up."""

    def __init__(self, sshd: SSHD, t: SSHTransport):
        self.sock = _socket(t)
        self.pids = serving_pids(sshd, t)
        self.broken = threading.Event()

    def __call__(self) -> None:
        for pid in self.pids:
            os.kill(pid, signal.SIGSTOP)
        self.sock.shutdown(socket.SHUT_WR)
        self.broken.set()

    def end(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def breaker(sshd: SSHD) -> Iterator[Callable[[SSHTransport], Breaker]]:
    made: list[Breaker] = []

    def make(t: SSHTransport) -> Breaker:
        b = Breaker(sshd, t)
        made.append(b)
        return b

    yield make
    for b in made:
        b.end()


def _active(t: SSHTransport) -> bool:
    client = t._client
    transport = client.get_transport() if client is not None else None
    return bool(transport is not None and transport.is_active())


def test_a_write_into_a_connection_reset_under_paramiko_is_a_transport_error(
        node: SSHTransport, breaker: Callable[[SSHTransport], Breaker]) -> None:
    p = node.start(["cat"], collect_stdout=True)
    p.write(b"x" * 65536)  # the connection works
    brk = breaker(node)
    brk()
    assert _active(node), "paramiko noticed the break already: the test lost its window"
    try:
        p.write(b"y" * 65536)
    except XfleetError as exc:
        assert isinstance(exc, TransportError), repr(exc)
        assert "connection lost while running cat" in exc.message, exc.message
    except BaseException as exc:  # EOFError before the fix
        pytest.fail(f"write into a broken connection raised {type(exc).__name__}: {exc!r}, "
                    "not a TransportError")
    else:
        pytest.fail("write into a broken connection succeeded")
    # the connection is known to be dead now: the node's next command reconnects
    assert not _active(node)
    p.kill()
    p.close()
    brk.end()
    assert node.run(["echo", "back"]).stdout == "back\n"


def test_kill_and_close_on_a_connection_reset_under_paramiko_do_not_raise(
        node: SSHTransport, breaker: Callable[[SSHTransport], Breaker]) -> None:
    p = node.start(["cat"], collect_stdout=True)
    p.write(b"x" * 4096)
    breaker(node)()
    assert _active(node), "paramiko noticed the break already: the test lost its window"
    p.close_stdin()  # shutdown_write: sends a message, best effort
    p.kill()  # the signal request and the channel close both send: EOFError before the fix
    p.close()
    assert p.poll() == -1 and p.killed


def test_stopping_a_command_stream_on_a_connection_reset_under_paramiko_does_not_raise(
        node: SSHTransport, breaker: Callable[[SSHTransport], Breaker]) -> None:
    lines = node.lines(["sh", "-c", "echo started; exec sleep 30"])
    assert next(lines) == "started"
    breaker(node)()
    assert _active(node), "paramiko noticed the break already: the test lost its window"
    ignored: list[str] = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: ignored.append(f"{u.exc_type.__name__} in {u.object!r}")
    try:
        lines.close()  # the stream's channel is closed as its generator ends
        gc.collect()
    finally:
        sys.unraisablehook = hook
    # before the fix: "Exception ignored in <generator object SSHTransport._stream>": EOFError
    assert ignored == [], ignored


def test_a_relay_into_a_connection_reset_under_paramiko_raises_a_transport_error(
        node: SSHTransport, breaker: Callable[[SSHTransport], Breaker],
        tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(16 * MiB))
    brk = breaker(node)
    chunks = [0]

    def progress(n: int) -> None:  # the writer thread, after each chunk went in
        chunks[0] += 1
        if chunks[0] == 2:
            brk()

    src = LocalTransport("src", command_timeout=15.0)
    with pytest.raises(BaseException) as exc:
        relay(src, ["cat", str(data)], node, ["sh", "-c", "cat > /dev/null"], chunk=MiB,
              progress=progress, timeout=15.0)
    assert brk.broken.is_set(), f"the connection was never broken: {exc.value!r}"
    assert isinstance(exc.value, TransportError), (
        f"relay raised {type(exc.value).__name__}: {exc.value!r}, not a TransportError")
    assert "connection lost" in exc.value.message, exc.value.message
