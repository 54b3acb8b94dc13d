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
and `zfs receive` for volume moves, see xfleet/remote/relay.py); over SSH each process has its own
channel on the node's one connection, with a large window; a simulated node's are
xfleet/sim/process.py.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from xfleet.core.errors import (
    RemoteCommandError,
    TransportError,
    UsageError,
)

if TYPE_CHECKING:

    pass

T = TypeVar("T")
_STDERR_KEEP = 64 * 1024  # stderr kept for error messages; the rest is dropped
CHUNK = 65536


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


class LineSplitter:
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


class StderrTail:
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




# After the exit, how long the collected output may take to reach its end. sshd sends the exit
# status as soon as the command exits and the output still in its pipe after it, so the last
# lines can arrive after the status (with a 2 s wait, one CI run on a loaded machine got a
# relayed `sha256sum`'s status 0 but not its line). Only a command whose background child keeps
# the output open waits this long.
DRAIN = 30.0


class Collector:
    """Reads a stream to its end in a daemon thread, keeping its first 64 KiB."""

    def __init__(self, recv: Callable[[], bytes], name: str,
                 end: Callable[[], None] | None = None):
        self._recv = recv
        self._end = end  # called by the thread when the stream ended (closes a pipe)
        self._buf = StderrTail()
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
        self._stdout: Collector | None = None
        self._stderr: Collector | None = None

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
                    collector.join(DRAIN)
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
