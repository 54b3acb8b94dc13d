"""The fleet's connections: one transport per node, bounded parallelism, the node kinds."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from xfleet.core.errors import (
    TransportError,
    UsageError,
    XfleetError,
)
from xfleet.remote.host import Host
from xfleet.remote.local import LocalTransport
from xfleet.remote.ssh import SSHTransport
from xfleet.remote.transport import Transport
from xfleet.sim import SimTransport

if TYPE_CHECKING:
    from xfleet.fleet.inventory import Inventory

T = TypeVar("T")



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
            futures = [pool.submit(one, n) for n in names]
            pending = set(futures)
            while pending:
                # never an unbounded wait: a SIGINT the kernel gave to a worker thread does not
                # interrupt the main thread's lock wait, so its handler (KeyboardInterrupt) runs
                # only when the main thread wakes up: within a quarter second, not at the end
                # of a minutes-long listing
                done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                for f in done:  # what `one` lets through (a KeyboardInterrupt in the worker)
                    if (exc := f.exception()) is not None:  # stops the caller now, as map did
                        raise exc
            results = [f.result() for f in futures]
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


class NodeKind(Protocol):
    """How a node of one kind (the inventory's `kind` key) is reached: a Transport for it."""

    def __call__(self, host: Host, *, trust_store: Path | None,
                 state_dir: Path | None) -> Transport: ...


def _ssh(host: Host, *, trust_store: Path | None, state_dir: Path | None) -> Transport:
    return SSHTransport(host, trust_store=trust_store)


def _local(host: Host, *, trust_store: Path | None, state_dir: Path | None) -> Transport:
    return LocalTransport(host.name, command_timeout=host.command_timeout)


def _sim(host: Host, *, trust_store: Path | None, state_dir: Path | None) -> Transport:
    return SimTransport(host, state_dir=state_dir)


# The node kinds: the inventory's `kind` key -> how to reach such a node. The transports know
# nothing of each other; this registry is the one place that names them all.
NODE_KINDS: dict[str, NodeKind] = {"ssh": _ssh, "local": _local, "sim": _sim}


def open_transport(
    host: Host, *, trust_store: Path | None = None, state_dir: Path | None = None
) -> Transport:
    kind = NODE_KINDS.get(host.kind)
    if kind is None:
        raise UsageError(f"unknown node kind {host.kind!r}", where=host.name,
                         hint=f"kinds: {', '.join(NODE_KINDS)}")
    return kind(host, trust_store=trust_store, state_dir=state_dir)


def initiator_connections(inv: Inventory) -> Connections:
    """Connections to the inventory's initiators (the database hosts; apart from the nodes')."""
    return Connections(dict(inv.initiators), trust_store=inv.trust_store,
                       state_dir=inv.state_dir)
