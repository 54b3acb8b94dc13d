"""Running commands on this machine: the `local` node kind (and the lab's host-side helpers)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import selectors
import signal
import subprocess
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from xfleet.core.errors import (
    CommandTimeout,
    TransportError,
)
from xfleet.remote.transport import (
    CHUNK,
    Collector,
    LineSplitter,
    Process,
    ProcessGone,
    StderrTail,
    Transport,
)

if TYPE_CHECKING:

    pass


_PIPE_SIZE = 1 << 20  # local pipes are grown to this (fewer, larger reads and writes)


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
        self._stderr = Collector(lambda: os.read(err.fileno(), CHUNK),
                                  f"xfleet-stderr-{argv[0]}", err.close)
        if collect_stdout:
            out = proc.stdout
            self._stdout = Collector(lambda: os.read(out.fileno(), CHUNK),
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
        lines = LineSplitter()
        errbuf = StderrTail()
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
                    chunk = os.read(key.fd, CHUNK)
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


