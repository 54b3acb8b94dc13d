"""Running commands on storage nodes: SSH (paramiko), local, and the simulated fleet.

Every remote command is an argument list; `quote_command` is the one place where a list becomes
a shell line. Output is streamed line by line (`Transport.lines`), so a 100 MB `zfs list` never
sits whole in memory: SSH flow control holds the remote command back while the caller is busy.
Every call has a timeout: seconds without any output (stdout or stderr). Only connection-level
failures are retried; a command that ran is never re-run blindly.

Stopping early (breaking out of `lines`, or a timeout) closes the command's channel: a remote
command that writes then dies of SIGPIPE, one that reads stdin sees end-of-file. OpenSSH does
not forward signals for root logins, so a silent remote command (`sleep`) runs to its end.

`Transport.start` runs a command with binary stdin and stdout instead (a `Process`: `zfs send`
and `zfs receive` for volume moves, see xfleet/relay.py); over SSH each process has its own
channel on the node's one connection, with a large window. The simulator has no data path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import select
import selectors
import shlex
import signal
import socket
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from xfleet import hostkeys
from xfleet.errors import (
    CommandTimeout,
    ConnectError,
    HostKeyError,
    RemoteCommandError,
    TransportError,
    UsageError,
    XfleetError,
)

if TYPE_CHECKING:
    import paramiko

    from xfleet.inventory import Host

T = TypeVar("T")
_STDERR_KEEP = 64 * 1024  # stderr kept for error messages; the rest is dropped
_CHUNK = 65536
USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
USER_SSH_CONFIG = Path("~/.ssh/config")


def quote_command(argv: Sequence[str]) -> str:
    """The one place where an argument list becomes a shell command line."""
    return shlex.join(check_argv(argv))


def check_argv(argv: Sequence[str]) -> list[str]:
    """`argv` as a list of strings; a plain string or an empty list is a programming error."""
    if isinstance(argv, str) or not argv:
        raise UsageError("a command must be a non-empty list of arguments, not a string")
    out = []
    for arg in argv:
        if not isinstance(arg, str):
            raise UsageError(f"command argument {arg!r} is not a string")
        if "\x00" in arg:
            raise UsageError("command arguments may not contain NUL bytes")
        out.append(arg)
    return out


@dataclass
class CommandResult:
    """A finished command. `exit_status` is -1 when the command ended without one (over SSH:
    killed by a signal)."""

    argv: list[str]
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class _LineSplitter:
    """Bytes in, complete lines out (newline stripped, decoded as UTF-8 with replacement)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[str]:
        if b"\n" not in chunk:  # do not rescan a long partial line for every chunk
            self._buf += chunk
            return []
        self._buf += chunk
        *complete, rest = self._buf.split(b"\n")
        self._buf = bytearray(rest)
        return [line.decode("utf-8", "replace") for line in complete]

    def tail(self) -> list[str]:
        """The last line if the output did not end with a newline."""
        return [self._buf.decode("utf-8", "replace")] if self._buf else []


class _Stderr:
    """The first _STDERR_KEEP bytes of stderr."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def add(self, chunk: bytes) -> None:
        room = _STDERR_KEEP - len(self._buf)
        if room > 0:
            self._buf += chunk[:room]

    def text(self) -> str:
        return self._buf.decode("utf-8", "replace")


class Transport(ABC):
    """A way to run commands on one node. Subclasses implement `_stream`.

    `commands` counts every command issued and `history` keeps their argv (tests assert the
    count stays constant where it must; --dry-run shows the history).
    """

    kind = "abstract"

    def __init__(self, node: str, *, command_timeout: float = 300.0):
        self.node = node
        self.command_timeout = command_timeout
        self.commands = 0
        self.received = 0  # bytes of stdout received (tests assert it follows the changes)
        self._tally = threading.Lock()  # commands may run from several threads at once
        self.history: list[list[str]] = []
        self.cancelled = False  # set by cancel(): every later command is refused

    def cancel(self) -> None:
        """Close the connection for good: Ctrl-C or SIGTERM in the caller. A command already
        running ends as a dropped connection does, and a command started later (by a worker
        that held this transport when the interrupt came) is refused at once instead of
        connecting again and running to its end while the process waits on its way out."""
        self.cancelled = True
        self.close()

    @abstractmethod
    def _stream(
        self,
        argv: list[str],
        timeout: float,
        stdin: bytes | None,
        status: list[int],
        err: list[str],
    ) -> Iterator[str]:
        """Yield stdout lines (with their newline stripped); set status[0] and err[0] at end."""

    def _start(self, argv: Sequence[str]) -> list[str]:
        args = check_argv(argv)
        if self.cancelled:
            raise TransportError(f"interrupted (Ctrl-C or SIGTERM): {args[0]} was not started",
                                 where=self.node)
        with self._tally:
            self.commands += 1
            self.history.append(args)
        return args

    def lines(
        self, argv: Sequence[str], *, timeout: float | None = None, stdin: bytes | None = None
    ) -> Generator[str, None, None]:
        """Stream stdout of `argv` line by line; raise RemoteCommandError if it exits non-zero.

        The arguments are checked (and the command counted) at once; the command runs as the
        iterator is consumed. Closing the iterator early stops the command.
        """
        args = self._start(argv)
        return self._checked(args, timeout or self.command_timeout, stdin)

    def _checked(
        self, args: list[str], timeout: float, stdin: bytes | None
    ) -> Generator[str, None, None]:
        status: list[int] = [-1]
        err: list[str] = [""]
        yield from self._counted(self._stream(args, timeout, stdin, status, err))
        if status[0] != 0:
            raise RemoteCommandError(self.node, args, status[0], err[0])

    def _counted(self, lines: Iterator[str]) -> Iterator[str]:
        n = 0
        try:
            for line in lines:
                n += len(line) + 1
                yield line
        finally:
            with self._tally:
                self.received += n

    def stream(self, argv: Sequence[str], *, timeout: float | None = None) -> Streamed:
        """Stream stdout of `argv` without raising on a non-zero exit: iterate the result for
        the lines, then read its `exit_status` and `stderr` (e.g. `zfs list A B` lists A and
        exits 1 when B does not exist)."""
        args = self._start(argv)
        return Streamed(self, args, timeout or self.command_timeout)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        stdin: bytes | None = None,
        check: bool = True,
    ) -> CommandResult:
        """Run `argv` to completion and collect its output (for small outputs only)."""
        args = self._start(argv)
        status: list[int] = [-1]
        err: list[str] = [""]
        stream = self._counted(
            self._stream(args, timeout or self.command_timeout, stdin, status, err))
        out = "".join(line + "\n" for line in stream)
        result = CommandResult(args, status[0], out, err[0])
        if check and not result.ok:
            raise RemoteCommandError(self.node, args, status[0], err[0])
        return result

    # -- binary processes (the data path of volume moves) --------------------------------------
    data_path = False  # True where `start` can run a command (LocalTransport, SSHTransport)

    def start(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        collect_stdout: bool = False,
    ) -> Process:
        """Start `argv` with binary stdin and stdout (e.g. `zfs send`, `zfs receive`) and return
        at once; see `Process`. The command is counted like any other.

        `timeout` (default: the node's command timeout) bounds every wait of the process: no
        output for that long in `read`, no input taken in `write`, no exit in `wait`.
        With `collect_stdout`, stdout is read in the background (its first 64 KiB are kept for
        `Process.stdout()`) instead of by the caller, for a command that is only written to.
        """
        args = check_argv(argv)
        if not self.data_path:
            raise UsageError(
                "the simulator has no data path: zfs send/receive need a real node "
                "(see docs/lab.md)"
                if self.kind == "sim"
                else f"{self.kind} nodes cannot run binary data streams (zfs send/receive)",
                where=self.node,
            )
        self._start(args)
        return self._open_process(args, timeout or self.command_timeout, collect_stdout)

    def _open_process(self, argv: list[str], timeout: float, collect_stdout: bool) -> Process:
        raise UsageError(f"{self.kind} nodes cannot start processes", where=self.node)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection, if any."""


class Streamed:
    """The output of `Transport.stream`: lines while iterating, then the exit status."""

    def __init__(self, transport: Transport, argv: list[str], timeout: float):
        self.argv = argv
        self.exit_status = -1
        self.stderr = ""
        self._status: list[int] = [-1]
        self._err: list[str] = [""]
        self._lines = transport._counted(
            transport._stream(argv, timeout, None, self._status, self._err))

    def __iter__(self) -> Iterator[str]:
        yield from self._lines
        self.exit_status, self.stderr = self._status[0], self._err[0]


# ---------------------------------------------------------------------------------------------
# binary processes: `Transport.start`


class ProcessGone(TransportError):
    """A started command ended (or stopped reading its input) while we were still writing to
    it: the binary counterpart of a broken pipe. `exit_status` is None if it is not known yet."""

    def __init__(self, message: str, *, where: str | None = None,
                 exit_status: int | None = None, stderr: str = ""):
        super().__init__(message, where=where)
        self.exit_status = exit_status
        self.stderr = stderr


_PROCESS_POLL = 0.5  # blocking SSH calls wake up this often to check the connection and deadline
_PIPE_SIZE = 1 << 20  # local pipes are grown to this (fewer, larger reads and writes)
# The SSH window of a started process's channel: how much the node may send before we
# acknowledge, so throughput <= window / round-trip time (8 MiB: 800 MB/s at 10 ms; OpenSSH's
# 2 MiB would cap a 10 ms link at 200 MB/s). The largest packet we accept is 256 KiB rather
# than OpenSSH's 32 KiB: paramiko's cost is mostly per packet, and reading from a node measured
# ~60% faster with it (sshd sends what its buffer holds, up to that size).
PROCESS_WINDOW = 8 << 20
PROCESS_MAX_PACKET = 256 << 10


class _Collector:
    """Reads a stream to its end in a daemon thread, keeping its first 64 KiB."""

    def __init__(self, recv: Callable[[], bytes], name: str,
                 end: Callable[[], None] | None = None):
        self._recv = recv
        self._end = end  # called by the thread when the stream ended (closes a pipe)
        self._buf = _Stderr()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                try:
                    chunk = self._recv()
                except Exception:  # the stream went away: nothing more to collect
                    return
                if not chunk:
                    return
                self._buf.add(chunk)
        finally:
            if self._end is not None:
                with contextlib.suppress(Exception):
                    self._end()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        return self._buf.text()


class Process(ABC):
    """A command started by `Transport.start`, with binary stdin and stdout.

    `read` and `write` move bytes with flow control (a full pipe or SSH window blocks the
    writer, at either end); every blocking call is bounded by `timeout` seconds without
    progress. One thread may read while another writes; `kill` may be called from any thread
    and makes a blocked `read` return b"" and a blocked `write` raise `ProcessGone`.

    As a context manager: leaving the block with an exception kills the command; leaving it
    normally closes stdin and waits for the command to exit (so read its output to the end
    first, as with `subprocess.Popen`). Either way the pipes or the channel are released.
    """

    def __init__(self, node: str, argv: list[str], timeout: float, collect_stdout: bool):
        self.node = node
        self.argv = argv
        self.timeout = timeout
        self.collect_stdout = collect_stdout
        self.killed = False
        self._status: int | None = None
        self._stdout: _Collector | None = None
        self._stderr: _Collector | None = None

    @property
    def name(self) -> str:
        return self.argv[0]

    @abstractmethod
    def read(self, n: int = 1 << 20) -> bytes:
        """Up to `n` bytes of stdout as soon as any are there; b"" at end of output (or once
        killed). Raises CommandTimeout after `timeout` seconds without output."""

    @abstractmethod
    def write(self, data: bytes | memoryview) -> None:
        """Write all of `data` to stdin, blocking under flow control. Raises ProcessGone if
        the command has exited, closed its input or was killed, CommandTimeout if it took
        nothing for `timeout` seconds."""

    @abstractmethod
    def close_stdin(self) -> None:
        """Send end-of-file to the command's stdin (idempotent)."""

    @abstractmethod
    def poll(self) -> int | None:
        """The exit status if the command has ended (-1: killed or no status), else None."""

    @abstractmethod
    def _wait(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for the exit; raise CommandTimeout if it does not."""

    @abstractmethod
    def kill(self) -> None:
        """Stop the command now (see the subclasses for what that means on each side)."""

    @abstractmethod
    def _release(self) -> None:
        """Free the pipes or the channel."""

    def wait(self, timeout: float | None = None) -> int:
        """The exit status, once the command has exited (waiting up to `timeout` seconds, by
        default the process's own timeout): -1 if it was killed or ended without a status.
        Raises CommandTimeout if it has not exited by then (it is not killed)."""
        if self._status is None:
            self._status = self._wait(self.timeout if timeout is None else timeout)
            for collector in (self._stdout, self._stderr):
                if collector is not None:  # its end comes with the exit; let it catch up
                    collector.join(2.0)
        return self._status

    def stderr(self) -> str:
        """The first 64 KiB of stderr so far (all of it once `wait` returned)."""
        return self._stderr.text() if self._stderr is not None else ""

    def stdout(self) -> str:
        """With `collect_stdout`: the first 64 KiB of stdout so far."""
        return self._stdout.text() if self._stdout is not None else ""

    def close(self) -> None:
        """Kill the command if it is still running, and release the pipes or the channel."""
        if self.poll() is None:
            self.kill()
        self._release()

    def _check_readable(self) -> None:
        if self.collect_stdout:
            raise UsageError(f"the output of {self.name} is collected; it cannot be read")

    def __enter__(self) -> Process:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is not None:
                self.kill()
            elif self.poll() is None:
                self.close_stdin()
                try:
                    self.wait()
                except BaseException:
                    self.kill()
                    raise
        finally:
            self.close()

    def __repr__(self) -> str:
        state = "running" if self._status is None else f"exited {self._status}"
        return f"<{type(self).__name__} {self.node}: {quote_command(self.argv)} ({state})>"


class _LocalProcess(Process):
    """A child process in its own session; `kill` sends SIGKILL to its whole process group."""

    def __init__(self, node: str, argv: list[str], timeout: float, collect_stdout: bool):
        super().__init__(node, argv, timeout, collect_stdout)
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                bufsize=0,
            )
        except FileNotFoundError as exc:
            raise TransportError(f"command not found: {argv[0]}", where=node) from exc
        except OSError as exc:
            raise TransportError(f"cannot run {argv[0]}: {exc}", where=node) from exc
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self._in = proc.stdin.fileno()
        self._out = proc.stdout.fileno()
        for fd in (self._in, self._out):
            _grow_pipe(fd)
        os.set_blocking(self._in, False)  # so a write waits in poll(), with a timeout
        self._stdin_open = True
        self._lock = threading.Lock()
        # A collector closes its pipe itself, once at its end: never under a blocked read.
        err = proc.stderr
        self._stderr = _Collector(lambda: os.read(err.fileno(), _CHUNK),
                                  f"xfleet-stderr-{argv[0]}", err.close)
        if collect_stdout:
            out = proc.stdout
            self._stdout = _Collector(lambda: os.read(out.fileno(), _CHUNK),
                                      f"xfleet-stdout-{argv[0]}", out.close)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def read(self, n: int = 1 << 20) -> bytes:
        self._check_readable()
        if self.killed:
            return b""
        poller = select.poll()
        poller.register(self._out, select.POLLIN)
        if not poller.poll(self.timeout * 1000):
            raise CommandTimeout(
                f"no output from {self.name} for {self.timeout:g}s", where=self.node
            )
        if self.killed:  # what is left in the pipe is not the command's output any more
            return b""
        try:
            return os.read(self._out, n)
        except OSError:  # released while we waited
            return b""

    def write(self, data: bytes | memoryview) -> None:
        if self.killed:  # a killed group's last member may still hold the pipe for a moment
            raise self._gone("it was killed")
        view = memoryview(data).cast("B")
        poller = select.poll()
        poller.register(self._in, select.POLLOUT)
        while view:
            if not self._stdin_open:
                raise self._gone("its input was closed")
            try:
                sent = os.write(self._in, view)
            except BlockingIOError:
                if not poller.poll(self.timeout * 1000):
                    raise CommandTimeout(
                        f"{self.name} took no input for {self.timeout:g}s", where=self.node
                    ) from None
                continue
            except (BrokenPipeError, ValueError, OSError):
                raise self._gone("it stopped reading its input") from None
            view = view[sent:]

    def _gone(self, why: str) -> ProcessGone:
        status = self._proc.poll()
        if status is not None and status < 0:
            status = -1
        how = "was killed" if self.killed else (
            f"exited with status {status}" if status is not None else why)
        return ProcessGone(f"{self.name} {how} before taking all of its input",
                           where=self.node, exit_status=status, stderr=self.stderr())

    def close_stdin(self) -> None:
        with self._lock:
            if self._stdin_open:
                self._stdin_open = False
                assert self._proc.stdin is not None
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()

    def poll(self) -> int | None:
        if self._status is not None:
            return self._status
        status = self._proc.poll()
        return None if status is None else max(status, -1)

    def _wait(self, timeout: float) -> int:
        try:
            status = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise CommandTimeout(
                f"{self.name} did not exit within {timeout:g}s", where=self.node
            ) from None
        return max(status, -1)  # killed by a signal: no exit status

    def kill(self) -> None:
        self.killed = True
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self._proc.kill()

    def _release(self) -> None:
        self.close_stdin()
        if self._proc.returncode is None:
            self._proc.wait()
        for collector in (self._stdout, self._stderr):
            if collector is not None:
                collector.join(2.0)
        if not self.collect_stdout and self._proc.stdout is not None:
            with contextlib.suppress(OSError):
                self._proc.stdout.close()


def _grow_pipe(fd: int) -> None:
    """Make a pipe hold _PIPE_SIZE bytes (best effort: limited by fs/pipe-max-size)."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)


class LocalTransport(Transport):
    """Runs commands on this machine (for xfleet running on a storage node itself).

    Each command runs in its own process group, so a timeout or an early stop ends the whole
    command (a shell and its children), not just its first process.
    """

    kind = "local"
    data_path = True

    def _open_process(self, argv: list[str], timeout: float, collect_stdout: bool) -> Process:
        return _LocalProcess(self.node, argv, timeout, collect_stdout)

    def _stream(
        self,
        argv: list[str],
        timeout: float,
        stdin: bytes | None,
        status: list[int],
        err: list[str],
    ) -> Iterator[str]:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise TransportError(f"command not found: {argv[0]}", where=self.node) from exc
        except OSError as exc:
            raise TransportError(f"cannot run {argv[0]}: {exc}", where=self.node) from exc
        assert proc.stdout is not None and proc.stderr is not None
        if stdin is not None:
            assert proc.stdin is not None
            threading.Thread(target=_feed_pipe, args=(proc.stdin, stdin), daemon=True).start()
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        lines = _LineSplitter()
        errbuf = _Stderr()
        open_streams = 2
        finished = False
        try:
            while open_streams:
                events = sel.select(timeout)
                if not events:
                    raise CommandTimeout(
                        f"no output from {argv[0]} for {timeout:g}s; command stopped",
                        where=self.node,
                    )
                for key, _ in events:
                    chunk = os.read(key.fd, _CHUNK)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        open_streams -= 1
                    elif key.data == "err":
                        errbuf.add(chunk)
                    else:
                        yield from lines.feed(chunk)
            yield from lines.tail()
            try:
                status[0] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise CommandTimeout(
                    f"{argv[0]} closed its output but did not exit within {timeout:g}s; "
                    "command stopped",
                    where=self.node,
                ) from None
            err[0] = errbuf.text()
            finished = True
        finally:
            sel.close()
            if not finished:  # timeout, early stop or error: end the whole command
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()


def _feed_pipe(pipe: Any, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except OSError:  # the command exited without reading all of its input
        pass


def _ssh_errors() -> tuple[type[BaseException], ...]:
    """What a paramiko call on a channel raises when its connection breaks under it.

    `Channel.send`, `close`, `shutdown_write` and even `recv` (which may send a window
    adjustment) go through `Transport._send_user_message`: its socket write raises EOFError
    when the connection was reset but paramiko's reader thread has not noticed yet, and it
    raises SSHException when a key exchange does not complete; a closed channel raises OSError.
    """
    import paramiko

    return (EOFError, OSError, paramiko.SSHException)


def _feed_channel(chan: paramiko.Channel, data: bytes) -> None:
    """Send `data` as the command's stdin, then end-of-file (in its own thread, so a command
    that writes while it reads cannot deadlock against us)."""
    offset = 0
    try:
        while offset < len(data):
            try:
                sent = chan.send(data[offset : offset + _CHUNK])
            except TimeoutError:  # remote window full for a while: keep trying while open
                if chan.closed:
                    return
                continue
            if sent <= 0:
                return
            offset += sent
        chan.shutdown_write()
    except (OSError, EOFError):  # channel closed: the command ended or was stopped
        pass
    except Exception:  # paramiko.SSHException and friends: same, nothing left to feed
        pass


class SSHTransport(Transport):
    """One persistent paramiko connection per node, reused for every command.

    Host keys: unknown keys are rejected (paramiko RejectPolicy). Known keys come from the
    host's pinned `host_key` (which overrides any other), its `known_hosts` file, xfleet's trust
    store (written by `xfleet inventory trust`), and ~/.ssh/known_hosts.

    Settings the inventory leaves unset (address, port, user, identity_file, proxy_jump) are
    filled from ~/.ssh/config, as `xfleet inventory show` displays them.

    `connects` counts SSH connections made (handshake and authentication done);
    `connect_attempts` counts every try, including failed ones.
    """

    kind = "ssh"
    data_path = True

    def __init__(
        self,
        host: Host,
        *,
        trust_store: Path | None = None,
        ssh_config: Path | None = None,
        user_known_hosts: Path | None = None,
    ):
        super().__init__(host.name, command_timeout=host.command_timeout)
        self.host = effective_host(host, ssh_config)
        self.trust_store = trust_store
        self.user_known_hosts = (user_known_hosts or USER_KNOWN_HOSTS).expanduser()
        self.connects = 0
        self.connect_attempts = 0
        self._client: paramiko.SSHClient | None = None
        self._jump: SSHTransport | None = None
        self._lock = threading.Lock()

    # -- connection ------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return self.host.address or self.host.name

    def _host_key_name(self) -> str:
        return _known_hosts_name(self.address, self.host.port)

    def _new_client(self) -> paramiko.SSHClient:
        import paramiko

        client = paramiko.SSHClient()
        decision = self.host_keys()
        for w in decision.warnings:
            _warn_once(w)
        client.set_missing_host_key_policy(_refuse(decision))
        known = client.get_host_keys()
        for key in decision.keys:
            known.add(decision.name, key.get_name(), key)
        return client

    def host_keys(self) -> hostkeys.Decision:
        """The host keys this node may present, from the strongest source that lists it
        (xfleet.hostkeys: pin, inventory known_hosts, trust store, ~/.ssh/known_hosts)."""
        files: list[tuple[str, hostkeys.KnownHostsFile | None]] = []
        if self.host.known_hosts:
            path = Path(self.host.known_hosts).expanduser()
            if not path.is_file():
                raise HostKeyError(
                    f"known_hosts file {path} does not exist",
                    where=self.node,
                    hint="fix 'known_hosts' in the inventory or pin 'host_key' instead",
                )
            files.append((hostkeys.INVENTORY_FILE, _read_known_hosts(path, self.node)))
        for source, p in ((hostkeys.TRUST_STORE, self.trust_store),
                          (hostkeys.USER_FILE, self.user_known_hosts)):
            files.append((source, _read_known_hosts(p, self.node)
                          if p is not None and p.is_file() else None))
        pinned = (parse_public_key(self.host.host_key, where=self.node)
                  if self.host.host_key else None)
        return hostkeys.decide(self._host_key_name(), pinned, files)

    def connect(self) -> paramiko.SSHClient:
        """The open connection, made (with retries) if there is none or it has dropped."""
        with self._lock:
            if self._client is not None:
                t = self._client.get_transport()
                if t is not None and t.is_active():
                    return self._client
                with contextlib.suppress(Exception):
                    self._client.close()
                self._client = None
            self._client = self._connect_with_retry()
            return self._client

    def _connect_with_retry(self) -> paramiko.SSHClient:
        """Connection-level failures (refused, unreachable, no SSH banner) are retried with
        exponential backoff; host-key and authentication failures are not."""
        attempts = max(1, self.host.connect_retries)
        for attempt in range(1, attempts + 1):
            try:
                return self._connect_once()
            except ConnectError as exc:
                if attempt == attempts:
                    tries = f"gave up after {attempts} attempts" if attempts > 1 else "1 attempt"
                    raise ConnectError(
                        f"{exc.message} ({tries})", where=self.node, hint=exc.hint
                    ) from None
                time.sleep(min(0.5 * 2 ** (attempt - 1), 5.0))
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect_once(self) -> paramiko.SSHClient:
        import paramiko

        self.connect_attempts += 1
        identity_file = self.host.identity_file
        if identity_file and not Path(identity_file).expanduser().is_file():
            # the user's to fix, not the node's: said at once, never retried
            raise TransportError(
                f"identity_file {identity_file} does not exist (or is not a file)",
                where=self.node,
                hint="fix 'identity_file' for this host in the inventory (or ~/.ssh/config), "
                "or remove it to use the SSH agent and ~/.ssh/id_*")
        client = self._new_client()
        sock: Any = None
        if self.host.proxy_jump:
            sock = self._jump_channel()
        identity = self.host.identity_file
        try:
            client.connect(
                hostname=self.address,
                port=self.host.port,
                username=self.host.user,
                key_filename=str(Path(identity).expanduser()) if identity else None,
                timeout=self.host.connect_timeout,
                banner_timeout=self.host.connect_timeout,
                auth_timeout=self.host.connect_timeout,
                sock=sock,
                allow_agent=identity is None,
                look_for_keys=identity is None,
                transport_factory=_transport_class(),
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            source = self.host_keys().source
            raise HostKeyError(
                f"host key for {self._host_key_name()} does not match the known key "
                f"(got {exc.key.get_name()} {fingerprint(exc.key)}, expected "
                f"{fingerprint(exc.expected_key)} from {source}); refusing to connect",
                where=self.node,
                hint=_replace_hint(source, self.node),
            ) from None
        except _PolicyRefusal as exc:
            client.close()
            raise HostKeyError(
                exc.message, where=self.node,
                hint=exc.hint or f"check the key out of band, then run 'xfleet inventory "
                f"trust {self.node}' or pin it with 'host_key' in the inventory") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise TransportError(
                f"authentication failed as {self.host.user or 'the current user'}: {exc}",
                where=self.node,
                hint="check 'user' and 'identity_file' for this host",
            ) from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise HostKeyError(
                    f"unknown host key for {self._host_key_name()}; refusing to connect",
                    where=self.node,
                    hint=f"check the key out of band, then run 'xfleet inventory trust "
                    f"{self.node}' or pin it with 'host_key' in the inventory",
                ) from None
            raise ConnectError(f"SSH error from {self._endpoint()}: {exc}", where=self.node,
                               hint="is sshd running on that port?") from None
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            client.close()
            reasons = sorted({_os_reason(e) for e in exc.errors.values()})
            raise ConnectError(
                f"cannot connect to {self._endpoint()}: {'; '.join(reasons)}",
                where=self.node,
                hint="is the node up and sshd listening? check 'address' and 'port'",
            ) from None
        except (OSError, EOFError) as exc:
            client.close()
            raise ConnectError(
                f"cannot connect to {self._endpoint()}: {_os_reason(exc)}",
                where=self.node,
                hint="is the node up and reachable? check 'address' and 'port'",
            ) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
            if isinstance(transport.sock, socket.socket):
                # Without it, Nagle and delayed ACKs add ~40 ms to opening every channel.
                transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connects += 1
        return client

    def _endpoint(self) -> str:
        via = f" via {self.host.proxy_jump}" if self.host.proxy_jump else ""
        return f"{self.address}:{self.host.port}{via}"

    def _jump_channel(self) -> Any:
        """A direct-tcpip channel to this node through its jump host (reused across attempts)."""
        from xfleet.inventory import parse_proxy_jump

        spec = self.host.proxy_jump or ""
        if self._jump is None:
            from xfleet.inventory import Host as HostCls

            user, jhost, jport = parse_proxy_jump(spec, where=self.node)
            jump = HostCls(
                name=f"{spec} (jump host of {self.node})",
                address=jhost,
                port=jport,
                user=user or self.host.user,
                identity_file=self.host.identity_file,
                known_hosts=self.host.known_hosts,  # the jump host's key may be listed there
                connect_timeout=self.host.connect_timeout,
                connect_retries=1,  # this node's own retries cover the jump too
            )
            self._jump = SSHTransport(
                jump,
                trust_store=self.trust_store,
                ssh_config=Path(os.devnull),  # the jump spec is already explicit
                user_known_hosts=self.user_known_hosts,
            )
        client = self._jump.connect()
        t = client.get_transport()
        if t is None or not t.is_active():
            raise ConnectError(f"jump host {spec} closed the connection", where=self.node)
        try:
            return t.open_channel(
                "direct-tcpip",
                (self.address, self.host.port),
                ("127.0.0.1", 0),
                timeout=self.host.connect_timeout,
            )
        except Exception as exc:  # paramiko raises ChannelException / SSHException
            raise ConnectError(
                f"jump host {spec} could not reach {self.address}:{self.host.port}: {exc}",
                where=self.node,
                hint="does the jump host allow TCP forwarding (AllowTcpForwarding)?",
            ) from None

    def _open_channel(
        self, *, window_size: int | None = None, max_packet_size: int | None = None
    ) -> tuple[paramiko.Transport, paramiko.Channel]:
        """A new session channel (paramiko's default window and packet size unless given). If
        the connection turns out to be dead, reconnect once: no command has run yet, so this is
        safe."""
        for attempt in (1, 2):
            client = self.connect()
            transport = client.get_transport()
            try:
                if transport is None:
                    raise EOFError("no transport")
                return transport, transport.open_session(
                    window_size=window_size,
                    max_packet_size=max_packet_size,
                    timeout=self.host.connect_timeout,
                )
            except Exception as exc:
                with self._lock:
                    if self._client is client:
                        with contextlib.suppress(Exception):
                            client.close()
                        self._client = None
                if attempt == 2:
                    raise ConnectError(
                        f"cannot open a channel: {exc or type(exc).__name__}", where=self.node
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- commands --------------------------------------------------------------------------
    def _open_process(self, argv: list[str], timeout: float, collect_stdout: bool) -> Process:
        return _SSHProcess(self, argv, timeout, collect_stdout)

    def _stream(
        self,
        argv: list[str],
        timeout: float,
        stdin: bytes | None,
        status: list[int],
        err: list[str],
    ) -> Iterator[str]:
        transport, chan = self._open_channel()
        lines = _LineSplitter()
        errbuf = _Stderr()
        sel = selectors.DefaultSelector()
        try:
            chan.settimeout(1.0)
            try:
                chan.exec_command(quote_command(argv))
            except Exception as exc:  # SSHException "Channel closed.", EOFError...: not started
                raise ConnectError(
                    f"could not start {argv[0]}: {exc or type(exc).__name__}", where=self.node
                ) from None
            if stdin is not None:
                threading.Thread(target=_feed_channel, args=(chan, stdin), daemon=True).start()
            sel.register(chan.fileno(), selectors.EVENT_READ)
            last = time.monotonic()
            while True:
                got = False
                while chan.recv_stderr_ready():
                    errbuf.add(self._chan_recv(chan.recv_stderr, argv))
                    got = True
                if chan.recv_ready():
                    data = self._chan_recv(chan.recv, argv)
                    if data:
                        last = time.monotonic()
                        yield from lines.feed(data)
                        continue
                if chan.eof_received or chan.closed:
                    if not chan.recv_ready() and not chan.recv_stderr_ready():
                        break  # SSH end-of-file covers stdout and stderr
                    continue
                now = time.monotonic()
                if got:
                    last = now
                    continue
                if now - last > timeout:
                    raise CommandTimeout(
                        f"no output from {argv[0]} for {timeout:g}s; command abandoned",
                        where=self.node,
                    )
                if not transport.is_active():
                    # Not a ConnectError: the command ran, so it must not be retried blindly.
                    raise TransportError(
                        f"connection lost while running {argv[0]}; it may or may not have "
                        "completed",
                        where=self.node,
                    )
                sel.select(min(timeout - (now - last), 1.0))
            yield from lines.tail()
            while not chan.status_event.wait(min(max(timeout - (time.monotonic() - last), 0), 1)):
                if time.monotonic() - last > timeout:
                    raise CommandTimeout(
                        f"{argv[0]} closed its output but did not exit within {timeout:g}s",
                        where=self.node,
                    )
                if not transport.is_active():
                    raise TransportError(f"connection lost while {argv[0]} was exiting",
                                         where=self.node)
            while chan.recv_stderr_ready():
                errbuf.add(self._chan_recv(chan.recv_stderr, argv))
            status[0] = chan.recv_exit_status()
            if status[0] == -1 and not transport.is_active():
                raise TransportError(
                    f"connection lost while running {argv[0]}; it may or may not have completed",
                    where=self.node,
                )
            err[0] = errbuf.text()
        finally:
            sel.close()
            with contextlib.suppress(Exception):  # best effort: the connection may be gone
                chan.close()

    def _chan_recv(self, recv: Callable[[int], bytes], argv: list[str]) -> bytes:
        """recv(_CHUNK) of a command's channel; a broken connection is a TransportError (the
        command ran, so not a ConnectError: it must not be retried blindly)."""
        try:
            return recv(_CHUNK)
        except TimeoutError:  # recv is only called when data is ready: nothing lost
            return b""
        except _ssh_errors() as exc:
            raise TransportError(
                f"connection lost while running {argv[0]} ({exc or type(exc).__name__}); it "
                "may or may not have completed",
                where=self.node,
            ) from None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                with contextlib.suppress(Exception):  # a dead connection may fail to close
                    self._client.close()
                self._client = None
        if self._jump is not None:
            self._jump.close()
            self._jump = None


class _SSHProcess(Process):
    """A command on its own channel of the node's shared SSH connection.

    `kill` asks sshd to SIGKILL the command (an SSH "signal" request: honoured by OpenSSH 7.9+
    for non-root logins only) and closes the channel. Closing the channel does not kill the
    remote process by itself: sshd closes its pipes, so a command that writes (`zfs send`) dies
    of SIGPIPE on its next write and one that reads (`zfs receive`) sees end-of-file in the
    middle of a stream and aborts it (a stream is only committed once its end record arrived);
    a silent command (`sleep`) runs to its end.
    """

    def __init__(self, owner: SSHTransport, argv: list[str], timeout: float,
                 collect_stdout: bool):
        super().__init__(owner.node, argv, timeout, collect_stdout)
        self._owner = owner
        self._killed_running = False
        self._transport, chan = owner._open_channel(
            window_size=PROCESS_WINDOW, max_packet_size=PROCESS_MAX_PACKET
        )
        self._chan = chan
        try:
            chan.settimeout(_PROCESS_POLL)
            chan.exec_command(quote_command(argv))
        except Exception as exc:  # SSHException "Channel closed.", EOFError...: not started
            with contextlib.suppress(Exception):
                chan.close()
            raise ConnectError(
                f"could not start {argv[0]}: {exc or type(exc).__name__}", where=self.node
            ) from None
        self._stderr = _Collector(lambda: self._recv(chan.recv_stderr), f"xfleet-stderr-{argv[0]}")
        if collect_stdout:
            self._stdout = _Collector(lambda: self._recv(chan.recv), f"xfleet-stdout-{argv[0]}")

    def _recv(self, recv: Callable[[int], bytes], n: int = _CHUNK) -> bytes:
        """recv(n) that waits for data or the end of the stream (for the collectors)."""
        while True:
            try:
                return recv(n)
            except TimeoutError:
                if self._chan.closed or not self._transport.is_active():
                    return b""

    def _lost(self) -> TransportError:
        return TransportError(
            f"connection lost while running {self.name}; it may or may not have completed",
            where=self.node,
        )

    def _broken(self, exc: BaseException) -> TransportError:
        """The error for a paramiko call on this channel that raised `exc` (see _ssh_errors).

        EOFError means the socket write itself failed: the connection is gone even if
        paramiko's reader thread has not noticed yet, and the SSH stream is unusable (a packet
        may be half written), so the connection is closed here: every other channel on it
        sees the loss at once and the node's next command reconnects. Otherwise the
        connection decides: lost if it is not active any more, else the command is gone.
        """
        if isinstance(exc, EOFError) and not self.killed:
            with contextlib.suppress(Exception):
                self._transport.close()
            return self._lost()
        if not self._transport.is_active() and not self.killed:
            return self._lost()
        return self._gone()

    def read(self, n: int = 1 << 20) -> bytes:
        self._check_readable()
        chan = self._chan
        deadline = time.monotonic() + self.timeout
        while not self.killed:  # what is still buffered is not the command's output any more
            try:
                data = chan.recv(n)
            except TimeoutError:
                if self.killed:
                    return b""
                if not self._transport.is_active():
                    raise self._lost() from None
                if time.monotonic() > deadline:
                    raise CommandTimeout(
                        f"no output from {self.name} for {self.timeout:g}s", where=self.node
                    ) from None
                continue
            except _ssh_errors() as exc:  # recv may send a window adjustment and fail
                if self.killed:
                    return b""
                self._broken(exc)  # closes a connection whose socket failed
                raise self._lost() from None
            if data:
                self._owner.received += len(data)
                return data
            if not chan.eof_received and not self.killed:
                raise self._lost()  # closed without end-of-file: the connection went away
            return b""
        return b""

    def write(self, data: bytes | memoryview) -> None:
        chan = self._chan
        view = memoryview(data).cast("B")
        deadline = time.monotonic() + self.timeout
        while view:
            if chan.exit_status_ready() or self.killed:
                raise self._gone()
            try:
                sent = chan.send(view)  # type: ignore[arg-type]  # paramiko takes buffers
            except TimeoutError:  # the node's window stayed full
                if not self._transport.is_active():
                    raise self._lost() from None
                if time.monotonic() > deadline:
                    raise CommandTimeout(
                        f"{self.name} took no input for {self.timeout:g}s", where=self.node
                    ) from None
                continue
            except _ssh_errors() as exc:  # "Socket is closed", a reset connection (EOFError)
                raise self._broken(exc) from None
            if sent <= 0:  # end-of-file was sent or the channel closed
                raise self._gone()
            view = view[sent:]
            deadline = time.monotonic() + self.timeout

    def _gone(self) -> ProcessGone:
        status = self._chan.exit_status if self._chan.exit_status_ready() else None
        if self.killed:
            how = "was killed"
        elif status is not None:
            how = f"exited with status {status}"
        else:
            how = "closed its input"
        self._stderr_settle()
        return ProcessGone(f"{self.name} {how} before taking all of its input",
                           where=self.node, exit_status=status, stderr=self.stderr())

    def _stderr_settle(self) -> None:
        if self._stderr is not None and self._chan.closed:
            self._stderr.join(1.0)

    def close_stdin(self) -> None:
        with contextlib.suppress(Exception):  # closed already: nothing to end
            self._chan.shutdown_write()

    def poll(self) -> int | None:
        if self._status is not None:
            return self._status
        if self._killed_running:
            return -1
        if self._chan.exit_status_ready() or self._chan.closed:
            return self._chan.exit_status if self._chan.exit_status_ready() else -1
        return None

    def _wait(self, timeout: float) -> int:
        chan = self._chan
        deadline = time.monotonic() + timeout
        while not chan.status_event.wait(max(min(deadline - time.monotonic(), 1.0), 0.0)):
            if not self._transport.is_active():
                raise self._lost()
            if time.monotonic() >= deadline:
                raise CommandTimeout(f"{self.name} did not exit within {timeout:g}s",
                                     where=self.node)
        if self._killed_running:
            return -1
        status = chan.recv_exit_status()
        if status == -1 and not self.killed and not self._transport.is_active():
            raise self._lost()
        return status

    def kill(self) -> None:
        self.killed = True
        chan = self._chan
        if not chan.exit_status_ready():
            # Killed before it exited: its status is -1, whatever sshd reports later (a shell
            # whose child died of SIGPIPE may still exit 0).
            self._killed_running = True
        if not chan.closed and not chan.exit_status_ready():
            with contextlib.suppress(Exception):  # best effort: refused for root logins
                from paramiko.common import cMSG_CHANNEL_REQUEST
                from paramiko.message import Message

                # RFC 4254 6.9; paramiko has no public call for it
                m = Message()
                m.add_byte(cMSG_CHANNEL_REQUEST)
                m.add_int(chan.remote_chanid)
                m.add_string("signal")
                m.add_boolean(False)
                m.add_string("KILL")
                sender: Any = self._transport
                sender._send_user_message(m)
        with contextlib.suppress(Exception):  # best effort: the connection may be gone
            chan.close()

    def _release(self) -> None:
        with contextlib.suppress(Exception):
            self._chan.close()


_TRANSPORT_CLASS: Any = None
_GCM_FIRST = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _transport_class() -> Any:
    """paramiko.Transport without the re-key deadlock of paramiko issue #822.

    When paramiko starts a key re-exchange (every 512 MiB each way, so in every large volume
    move) it holds back user messages until the exchange completes. If the node closes a
    channel in that window (a command ended), paramiko's own reader thread answers the close
    through that same gate, and so blocks the thread that would complete the exchange: after
    30 s the connection dies. Here, a message the reader thread itself sends during an exchange
    is queued and sent as soon as the new keys are in use.

    It also prefers AES-GCM (an AEAD cipher: one pass per packet instead of a cipher and a MAC),
    which moves ~40% more data per CPU second through paramiko than its default aes128-ctr with
    hmac-sha2-256 (see benchmarks/bench_relay.py); servers without it get paramiko's usual list.
    """
    global _TRANSPORT_CLASS
    if _TRANSPORT_CLASS is not None:
        return _TRANSPORT_CLASS
    import paramiko

    class XfleetTransport(paramiko.Transport):
        _preferred_ciphers = _GCM_FIRST + tuple(
            c for c in vars(paramiko.Transport)["_preferred_ciphers"] if c not in _GCM_FIRST
        )

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.xfleet_deferred: list[Any] = []

        def _send_user_message(self, data: Any) -> None:
            if threading.current_thread() is self:
                # Only this thread sets clear_to_send, so the test cannot go stale.
                with self.clear_to_send_lock:
                    if not self.clear_to_send.is_set():
                        self.xfleet_deferred.append(data)
                        return
            super()._send_user_message(data)  # type: ignore[misc]  # private in the stubs

        def _parse_newkeys(self, m: Any) -> None:
            super()._parse_newkeys(m)  # type: ignore[misc]
            with self.clear_to_send_lock:
                deferred, self.xfleet_deferred = self.xfleet_deferred, []
                for data in deferred:
                    self._send_message(data)  # type: ignore[attr-defined]

    _TRANSPORT_CLASS = XfleetTransport
    return _TRANSPORT_CLASS


def effective_host(host: Host, ssh_config: Path | None = None) -> Host:
    """A copy of `host` with what the inventory leaves unset filled from ~/.ssh/config
    (or `ssh_config`): the settings SSHTransport, fetch_host_key and record_trust all use."""
    from xfleet.inventory import apply_ssh_config

    copy = dataclasses.replace(host, sources=dict(host.sources), labels=dict(host.labels))
    if host.kind != "ssh":
        return copy
    return apply_ssh_config(copy, (ssh_config or USER_SSH_CONFIG).expanduser())


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    return str(exc) or type(exc).__name__


def _known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def _replace_hint(source: str | None, node: str) -> str:
    """What to do about a node whose key changed, by the source that listed the old one."""
    if source == hostkeys.PINNED:
        return "if the node was reinstalled on purpose, update 'host_key' in the inventory"
    if source == hostkeys.INVENTORY_FILE:
        return ("if the node was reinstalled on purpose, update the inventory's known_hosts "
                "file")
    if source == hostkeys.USER_FILE:
        return (f"if the node was reinstalled on purpose, remove its line from "
                f"~/.ssh/known_hosts (ssh-keygen -R) or run 'xfleet inventory trust {node}' "
                "(the trust store outranks ~/.ssh/known_hosts)")
    return (f"if the node was reinstalled on purpose, run 'xfleet inventory trust {node} "
            "--replace'")


def _read_known_hosts(path: Path, where: str) -> hostkeys.KnownHostsFile:
    try:
        return hostkeys.read_known_hosts(path)
    except HostKeyError as exc:
        raise HostKeyError(exc.message, where=where, hint=exc.hint) from None


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(message: str) -> None:
    """A known_hosts line xfleet skipped: said once per process, not once per connection."""
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    logging.getLogger("xfleet.hostkeys").warning("warning: %s", message)


def _refuse(decision: hostkeys.Decision) -> paramiko.MissingHostKeyPolicy:
    """paramiko's missing-host-key policy: refuse, saying why (revoked, or not the key the
    deciding source lists, or unknown), as a _PolicyRefusal the caller turns into a
    HostKeyError."""
    import paramiko

    class Refuse(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                             key: paramiko.PKey) -> None:
            d = decision
            if d.is_revoked(key):
                raise _PolicyRefusal(
                    f"host key for {d.name} ({key.get_name()} {fingerprint(key)}) is marked "
                    "@revoked in a known_hosts file; refusing to connect",
                    "the node presents a revoked key: find out why before trusting anything")
            if d.source is not None:
                raise _PolicyRefusal(
                    f"host key for {d.name} ({key.get_name()} {fingerprint(key)}) is not "
                    f"one {d.source} lists; refusing to connect (a weaker source cannot "
                    "override it)",
                    f"if the node was reinstalled on purpose, update {d.source}")
            raise _PolicyRefusal(f"unknown host key for {d.name}; refusing to connect", None)

    return Refuse()


class _PolicyRefusal(Exception):
    def __init__(self, message: str, hint: str | None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def parse_public_key(text: str, *, where: str | None = None) -> paramiko.PKey:
    """A pinned host key 'ssh-ed25519 AAAA...' (as in a .pub file, known_hosts or ssh-keyscan)."""
    parts = text.split()
    if parts and not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        parts = parts[1:]  # a known_hosts line: "host keytype base64"
    if len(parts) < 2:
        raise HostKeyError(
            f"pinned host_key {text[:40]!r} is not 'KEYTYPE BASE64'",
            where=where,
            hint="copy the key from the node's /etc/ssh/ssh_host_ed25519_key.pub",
        )
    try:
        return hostkeys.parse_key(parts[0], parts[1])
    except ValueError as exc:
        raise HostKeyError(
            f"pinned host_key cannot be read: {exc}",
            where=where,
            hint="copy the key from the node's /etc/ssh/ssh_host_ed25519_key.pub",
        ) from None


def fingerprint(key: paramiko.PKey) -> str:
    """'SHA256:...' as `ssh-keygen -lf` prints it."""
    return str(key.fingerprint)


def fetch_host_key(
    host: Host, *, trust_store: Path | None = None, ssh_config: Path | None = None
) -> paramiko.PKey:
    """Connect far enough to read the node's host key (for `xfleet inventory trust`).

    Nothing is authenticated and nothing is trusted here: the caller shows the fingerprint and
    records the key only once the user confirmed it. A node behind `proxy_jump` is reached
    through its jump host, whose own key must already be known (`trust_store` is consulted).
    """
    import paramiko

    via = SSHTransport(host, trust_store=trust_store, ssh_config=ssh_config)
    h = via.host
    addr = via.address
    sock: Any
    try:
        if h.proxy_jump:
            sock = via._jump_channel()
        else:
            try:
                sock = socket.create_connection((addr, h.port), timeout=h.connect_timeout)
            except OSError as exc:
                raise ConnectError(
                    f"cannot connect to {addr}:{h.port}: {_os_reason(exc)}",
                    where=h.name,
                    hint="is the node up and sshd listening? check 'address' and 'port'",
                ) from None
        t = paramiko.Transport(sock)
        try:
            t.banner_timeout = h.connect_timeout
            t.start_client(timeout=h.connect_timeout)
            return t.get_remote_server_key()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectError(
                f"SSH handshake with {via._endpoint()} failed: {exc or type(exc).__name__}",
                where=h.name,
            ) from None
        finally:
            with contextlib.suppress(Exception):
                t.close()
    finally:
        via.close()


def record_trust(
    store: Path,
    host: Host,
    key: paramiko.PKey,
    *,
    replace: bool = False,
    ssh_config: Path | None = None,
) -> bool:
    """Record `key` for `host` in xfleet's trust store (a known_hosts file).

    Returns True if the key was added, False if it was already trusted. A different key of the
    same type already trusted for the host is an error unless `replace`. The key is recorded
    under the address and port SSHTransport connects to (after ~/.ssh/config).
    """
    host = effective_host(host, ssh_config)
    store.parent.mkdir(parents=True, exist_ok=True)
    name = _known_hosts_name(host.address or host.name, host.port)
    known = _read_known_hosts(store, host.name) if store.is_file() else None
    mine = [e for e in known.entries if e.matches(name)] if known is not None else []
    if any(e.key.get_name() == key.get_name() and e.key.asbytes() == key.asbytes()
           for e in mine):
        if not replace or len(mine) == 1:
            return False
    else:
        same_type = [e for e in mine if e.key.get_name() == key.get_name()]
        if same_type and not replace:
            raise HostKeyError(
                f"a different {key.get_name()} key ({fingerprint(same_type[0].key)}) "
                f"is already trusted for {name}",
                where=host.name,
                hint="pass --replace if the node was reinstalled on purpose",
            )
    # every other line stays as written (comments, other hosts, @revoked markers); with
    # `replace`, every line for this host goes, whatever its key type
    drop = {e.where for e in mine} if replace else set()
    lines = store.read_text(errors="replace").splitlines() if store.is_file() else []
    kept = [ln for i, ln in enumerate(lines, 1) if f"{store}:{i}" not in drop]
    kept.append(f"{name} {key.get_name()} {key.get_base64()}")
    tmp = store.with_name(store.name + ".tmp")
    tmp.write_text("\n".join(kept) + "\n")
    os.replace(tmp, store)
    return True


# ---------------------------------------------------------------------------------------------
# the fleet: one transport per node, bounded parallelism across nodes


@dataclass
class NodeResult(Generic[T]):
    node: str
    value: T | None = None
    error: XfleetError | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Connections:
    """One transport per node, created on first use, reused, closed together."""

    hosts: dict[str, Host]
    trust_store: Path | None = None
    state_dir: Path | None = None
    _open: dict[str, Transport] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _interrupted: bool = False  # each() was interrupted: no new connection for its workers

    def get(self, node: str) -> Transport:
        with self._lock:
            if self._interrupted:
                raise TransportError("interrupted (Ctrl-C or SIGTERM)", where=node)
            if node not in self._open:
                if node not in self.hosts:
                    raise UsageError(f"no node named {node!r} in this fleet")
                self._open[node] = open_transport(
                    self.hosts[node], trust_store=self.trust_store, state_dir=self.state_dir
                )
            return self._open[node]

    def use(self, node: str, transport: Transport) -> None:
        """Use `transport` for `node` (e.g. a wrapped transport that injects faults)."""
        with self._lock:
            self._open[node] = transport

    def reset(self, node: str) -> None:
        """Close `node`'s transport (e.g. after its connection dropped); the next `get` opens a
        new one."""
        with self._lock:
            t = self._open.pop(node, None)
        if t is not None:
            with contextlib.suppress(Exception):
                t.close()

    def commands(self, node: str) -> int:
        """Commands issued to `node` so far (0 if it was never opened)."""
        with self._lock:
            t = self._open.get(node)
            return t.commands if t is not None else 0

    def each(
        self,
        nodes: Iterable[str],
        fn: Callable[[str, Transport], T],
        *,
        parallel: int = 8,
    ) -> list[NodeResult[T]]:
        """Run fn(node, transport) on each node, at most `parallel` at once, never raising.

        Results come back in the order of `nodes`; a node that fails has `.error` set and does
        not stop the others. Every remote call has its own timeout, so this always returns.
        """
        names = list(dict.fromkeys(nodes))

        def one(node: str) -> NodeResult[T]:
            start = time.monotonic()
            try:
                value = fn(node, self.get(node))
                return NodeResult(node, value, seconds=time.monotonic() - start)
            except XfleetError as exc:
                return NodeResult(node, error=exc, seconds=time.monotonic() - start)
            except Exception as exc:  # a bug or an unexpected library error: keep other nodes going
                return NodeResult(
                    node,
                    error=TransportError(f"{type(exc).__name__}: {exc}", where=node),
                    seconds=time.monotonic() - start,
                )

        if not names:
            return []
        pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(names))),
                                  thread_name_prefix="xfleet-node")
        try:
            results = list(pool.map(one, names))
        except BaseException:
            # Ctrl-C or SIGTERM in the caller: close every connection, so that a node still
            # streaming (a full listing takes minutes) stops now instead of the process
            # waiting for it on the way out; nodes not started yet are not started
            pool.shutdown(wait=False, cancel_futures=True)
            with self._lock:  # a worker that has not connected yet must not connect now
                self._interrupted = True
                opened = list(self._open.values())
                self._open.clear()
            for t in opened:  # nor may one that holds its transport start a command now
                with contextlib.suppress(Exception):
                    t.cancel()
            raise
        pool.shutdown(wait=True)
        return results

    def close(self) -> None:
        with self._lock:
            for t in self._open.values():
                t.close()
            self._open.clear()

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_transport(
    host: Host, *, trust_store: Path | None = None, state_dir: Path | None = None
) -> Transport:
    if host.kind == "ssh":
        return SSHTransport(host, trust_store=trust_store)
    if host.kind == "local":
        return LocalTransport(host.name, command_timeout=host.command_timeout)
    if host.kind == "sim":
        from xfleet.sim import SimTransport

        sim: Transport = SimTransport(host, state_dir=state_dir)
        return sim
    raise UsageError(f"unknown node kind {host.kind!r}", where=host.name)
