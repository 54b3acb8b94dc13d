"""Relaying a byte stream from a command on one node into a command on another.

`relay` is the data path of a volume move: `zfs send` on the source node, `zfs receive` on the
destination, with the xfleet host in the middle (the nodes need no access to each other). The
source's stdout is copied to the destination's stdin in large chunks: a reader thread fills a
bounded queue (a few chunks, so memory stays bounded), a writer thread drains it, and network
latency on both sides overlaps. Flow control holds the source back when the destination is
slower. `TokenBucket`s limit the rate (shared buckets limit several relays together).

The relay never leaves a command running on our side: when the destination dies early, the
source is killed; when `stop` is set or anything goes wrong, both are. (Over SSH, "killed" means
what `xfleet.remote.ssh._SSHProcess.kill` says.)
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xfleet.core.errors import CommandTimeout, UsageError
from xfleet.remote.transport import Process, ProcessGone, Transport

CHUNK = 1 << 20
QUEUE_CHUNKS = 4  # chunks in flight between the reader and the writer
_MIN_LIMITED_READ = 16 << 10  # with a rate limit, reads are cut to the bucket's burst, not less
_TICK = 0.05  # how often the relay checks `stop` and the destination while waiting


class TokenBucket:
    """A rate limit in bytes per second, shared by any number of threads.

    `take(n)` lets `n` bytes through, sleeping as long as the rate requires. The bucket holds at
    most `burst` bytes of credit (default: 1/20 s worth), so after an idle period at most that
    much passes without delay; larger takes run into debt and sleep it off, so the long-run
    rate never exceeds `rate` however the takes are sized or interleaved.
    """

    def __init__(self, rate_bytes_per_s: float, burst: int | None = None):
        if not rate_bytes_per_s > 0:
            raise UsageError(f"a rate limit must be positive, not {rate_bytes_per_s!r}")
        self.rate = float(rate_bytes_per_s)
        self.burst = max(1, int(burst if burst is not None else self.rate / 20))
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int, *, cancel: threading.Event | None = None) -> bool:
        """Let `n` bytes through once the rate allows. Returns False if `cancel` was set while
        waiting (the bytes stay counted)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            delay = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if delay <= 0:
            return True
        if cancel is None:
            time.sleep(delay)
            return True
        return not cancel.wait(delay)


@dataclass
class RelayResult:
    """The outcome of `relay`. A status is -1 for a command that was killed (or ended without
    a status); `stopped` means `stop` was set and both commands were killed.

    `bytes` counts what was handed to the destination. Over SSH the last of it may have been
    dropped by sshd if the destination had exited meanwhile: only the statuses say whether the
    destination took the whole stream (`zfs receive` exits 0 only once it has).
    """

    bytes: int
    seconds: float
    src_status: int
    dst_status: int
    src_stderr: str
    dst_stderr: str
    stopped: bool = False
    dst_stdout: str = ""  # the destination's first 64 KiB of output (`zfs receive -v`)

    @property
    def ok(self) -> bool:
        return self.src_status == 0 and self.dst_status == 0 and not self.stopped

    @property
    def rate(self) -> float:
        """Bytes per second."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0


_EOF = object()


class _Relay:
    """The state shared by the reader, the writer and the supervising caller's thread."""

    def __init__(
        self,
        sp: Process,
        dp: Process,
        chunk: int,
        limits: Sequence[TokenBucket],
        progress: Callable[[int], None] | None,
    ):
        self.sp, self.dp = sp, dp
        self.read_size = chunk
        if limits:
            self.read_size = min(chunk, max(min(b.burst for b in limits), _MIN_LIMITED_READ))
        self.limits = tuple(limits)
        self.progress = progress
        self.queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self.abort = threading.Event()  # stop moving data: the relay is being torn down
        self.wake = threading.Event()  # something happened that the supervisor must see
        self.written = 0
        self.delivered = False  # the whole stream went in and the destination's stdin closed
        self.dst_gone = False  # the destination stopped taking input before the end
        self.error: BaseException | None = None
        self.lock = threading.Lock()

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
        self.abort.set()
        self.wake.set()

    def put(self, item: object) -> bool:
        while not self.abort.is_set():
            try:
                self.queue.put(item, timeout=_TICK)
                return True
            except queue.Full:
                continue
        return False

    def reader(self) -> None:
        try:
            while not self.abort.is_set():
                data = self.sp.read(self.read_size)
                if not data:
                    break
                for bucket in self.limits:
                    if not bucket.take(len(data), cancel=self.abort):
                        return
                if not self.put(data):
                    return
            if not self.abort.is_set():  # a killed source also ends its output: not an end
                self.put(_EOF)
        except BaseException as exc:
            self.fail(exc)

    def writer(self) -> None:
        try:
            while not self.abort.is_set():
                try:
                    item = self.queue.get(timeout=_TICK)
                except queue.Empty:
                    continue
                if item is _EOF:
                    if not self.abort.is_set():
                        self.dp.close_stdin()
                        self.delivered = True
                    return
                assert isinstance(item, bytes)
                self.dp.write(item)
                self.written += len(item)
                if self.progress is not None:
                    self.progress(len(item))
        except ProcessGone:
            if not self.abort.is_set():
                self.dst_gone = True
        except BaseException as exc:
            self.fail(exc)
        finally:
            self.wake.set()


def relay(
    src: Transport,
    src_argv: Sequence[str],
    dst: Transport,
    dst_argv: Sequence[str],
    *,
    chunk: int = CHUNK,
    limits: Sequence[TokenBucket] = (),
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    timeout: float | None = None,
) -> RelayResult:
    """Run `src_argv` on `src` and `dst_argv` on `dst`, with the first's stdout piped into the
    second's stdin through this host, and return once both have ended.

    - The source's end of output closes the destination's stdin; both exit statuses are waited
      for (a failing source still gives the destination its end-of-file: `zfs receive` rejects
      an incomplete stream by itself).
    - A destination that exits (or stops reading) before the end: the source is killed and the
      result is not ok.
    - `stop` set: both are killed, `stopped` is True.
    - Anything raised (a timeout: `timeout` seconds without progress on either side, a lost
      connection, an exception from `progress`): both are killed, then it is re-raised.

    `limits`: every byte passes through each bucket. `progress(n)` is called from the writer
    thread after each `n` bytes went into the destination.
    """
    if chunk <= 0:
        raise UsageError(f"chunk must be positive, not {chunk}")
    started = time.monotonic()
    # The destination first: a receive waiting for input is harmless to kill if the source
    # cannot start.
    dp = dst.start(dst_argv, timeout=timeout, collect_stdout=True)
    try:
        sp = src.start(src_argv, timeout=timeout)
    except BaseException:
        dp.kill()
        dp.close()
        raise
    state = _Relay(sp, dp, chunk, limits, progress)
    threads = [
        threading.Thread(target=state.reader, name="xfleet-relay-read", daemon=True),
        threading.Thread(target=state.writer, name="xfleet-relay-write", daemon=True),
    ]
    stopped = False
    try:
        for t in threads:
            t.start()
        stopped = _supervise(state, stop, dp.timeout)
        for t in threads:
            t.join()
        if state.error is not None:
            raise state.error
        src_status, dst_status = sp.wait(), dp.wait()
        return RelayResult(
            bytes=state.written,
            seconds=time.monotonic() - started,
            src_status=src_status,
            dst_status=dst_status,
            src_stderr=sp.stderr(),
            dst_stderr=dp.stderr(),
            stopped=stopped,
            dst_stdout=dp.stdout(),
        )
    except BaseException:
        state.abort.set()
        dp.kill()
        sp.kill()
        for t in threads:
            if t.is_alive():
                t.join(5.0)
        raise
    finally:
        dp.close()
        sp.close()


def _supervise(state: _Relay, stop: threading.Event | None, timeout: float) -> bool:
    """Watch the relay until both commands have ended (or were killed); True if stopped."""
    sp, dp = state.sp, state.dp
    delivered_at: float | None = None
    while True:
        if stop is not None and stop.is_set():
            state.abort.set()
            dp.kill()  # the destination first, so it never mistakes the end for a clean one
            sp.kill()
            return True
        if state.error is not None:
            state.abort.set()
            dp.kill()
            sp.kill()
            return False
        if state.delivered:
            if delivered_at is None:
                delivered_at = time.monotonic()
            if sp.poll() is not None and dp.poll() is not None:
                return False
            if time.monotonic() - delivered_at > timeout:
                late = dp if dp.poll() is None else sp
                state.fail(CommandTimeout(
                    f"{late.name} did not exit within {timeout:g}s of the end of the stream",
                    where=late.node,
                ))
                continue
        elif state.dst_gone or dp.poll() is not None:
            # The destination ended before the end of the stream: nothing more can go in.
            state.abort.set()
            sp.kill()
            return False
        state.wake.wait(_TICK)
        state.wake.clear()
