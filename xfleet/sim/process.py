"""A command with binary stdin and stdout on a simulated node (`SimTransport.start`): the two
ends of a volume move's data path, `zfs send` and `zfs receive` (xfleet/remote/relay.py).

A simulated process runs its handler once, at the moment a real one would have done its work:
a command that is read from (`zfs send`) when its output is first read, and its stream is then
handed out chunk by chunk; a command that is written to (`zfs receive`) when its input ends,
with what it read (`Incoming`: the stream's header and how many bytes came). Killed while its
input was still coming, it runs on what it got, as a receive killed mid-stream keeps what it
received (`zfs receive -s`), and its status is -1. Nothing waits or sleeps: flow control is the
caller's reading and writing. A transport closed meanwhile ends the process like a dropped
connection.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from xfleet.core.errors import UsageError
from xfleet.remote.transport import Process, ProcessGone, StderrTail
from xfleet.sim.registry import Context, Fail
from xfleet.sim.stream import Incoming, Reader, Stream

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport


class StreamOutput:
    """A handler's output that is a send stream: lines for a text transport (`run`,
    `lines`), bytes for a process (`SimProcess.read`)."""

    def __init__(self, stream: Stream):
        self.stream = stream
        self._lines: Iterator[str] | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._lines is None:
            self._lines = self.stream.text_lines()
        return next(self._lines)


class SimProcess(Process):
    """`argv` on the simulated node `sim`, started by SimTransport.start (see above)."""

    def __init__(self, sim: SimTransport, argv: list[str], timeout: float,
                 collect_stdout: bool):
        super().__init__(sim.node, argv, timeout, collect_stdout)
        self.sim = sim
        self.epoch = sim.epoch
        self.lock = threading.RLock()
        self.incoming = Incoming()
        self.input_closed = False
        self.ran = False
        self.code: int | None = None
        self.err = StderrTail()
        self.out = StderrTail()  # the first 64 KiB of text output (collect_stdout)
        self.reader: Reader | None = None
        self.text: list[bytes] = []  # output that is not a stream, not yet read
        self.drained = False  # all output was read

    # -- running the handler ---------------------------------------------------------------
    def _run(self, *, killed: bool = False) -> None:
        """Run the handler once, on the input so far."""
        with self.lock:
            if self.ran:
                return
            self.ran = True
            ctx = Context(argv=self.argv, timeout=self.timeout, incoming=self.incoming,
                          interrupted=killed)
            try:
                out = self.sim.dispatch(self.argv, ctx)
                if isinstance(out, StreamOutput):
                    self.reader = Reader(out.stream)
                else:
                    text = "".join(line + "\n" for line in out).encode("utf-8",
                                                                      "surrogateescape")
                    if text:
                        self.text.append(text)
                        self.out.add(text)
            except Fail as f:
                ctx.fail(f.stderr, f.code)
            self.err.add("".join(ctx.err).encode("utf-8", "surrogateescape"))
            self.code = -1 if killed else ctx.code

    def _gone(self) -> bool:
        """The transport was closed since the start: a dropped connection."""
        return self.sim.epoch != self.epoch

    # -- Process ---------------------------------------------------------------------------
    def read(self, n: int = 1 << 20) -> bytes:
        self._check_readable()
        with self.lock:
            if self.killed or self._gone():
                self._lost()
                return b""
            self._run()
            if self.reader is not None:
                data = self.reader.read(n)
            elif self.text:
                head = self.text[0]
                data, rest = head[:n], head[n:]
                if rest:
                    self.text[0] = rest
                else:
                    self.text.pop(0)
            else:
                data = b""
            if not data:
                self.drained = True
            return data

    def write(self, data: bytes | memoryview) -> None:
        with self.lock:
            if self._gone():
                self._lost()
            if self.killed or self.ran or self.input_closed:
                raise ProcessGone(f"{self.name} is not reading its input", where=self.node,
                                  exit_status=self.code, stderr=self.stderr())
            self.incoming.feed(data)

    def close_stdin(self) -> None:
        with self.lock:
            if self.input_closed:
                return
            self.input_closed = True
            if not self.killed and not self._gone():
                self._run()

    def poll(self) -> int | None:
        with self.lock:
            if self._gone() and self.code is None:
                self._lost()
            if not self.ran or self.code is None:
                return None
            if self.code == 0 and not self.collect_stdout and not self.drained and \
                    self._has_output():
                return None  # its output is still in the pipe: not exited yet
            return self.code

    def _has_output(self) -> bool:
        return bool(self.text) or (self.reader is not None and self.reader.done <
                                   len(self.reader.head) + sum(self.reader.sizes))

    def _wait(self, timeout: float) -> int:
        with self.lock:
            if not self.ran:
                self._run()  # as if its input ended: a simulated command never hangs
            assert self.code is not None
            return self.code

    def kill(self) -> None:
        with self.lock:
            if self.killed:
                return
            self.killed = True
            if not self.ran and self.incoming.count:
                self._run(killed=True)  # what it read is what it got: a partial receive
            elif not self.ran:
                self._lost()
            elif self.code == 0 and self._has_output() and not self.drained:
                self.code = -1  # a sender stopped before the end of its stream

    def _lost(self) -> None:
        """Killed or cut off: no status, unless it had finished (its output all read)."""
        self.ran = True
        if self.code is None or (self.code == 0 and not self.drained and self._has_output()):
            self.code = -1

    def _release(self) -> None:
        self.reader = None
        self.text = []

    def stderr(self) -> str:
        return self.err.text()

    def stdout(self) -> str:
        if not self.collect_stdout:
            raise UsageError(f"the output of {self.name} is read, not collected")
        return self.out.text()
