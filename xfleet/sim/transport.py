"""SimTransport: a simulated storage node behind the Transport interface.

It answers the argument lists xfleet sends as OpenZFS 2.3 answers them on a real node: it finds
the handler of a command in the registry (xfleet/sim/registry.py; the handlers live in
xfleet/sim/commands/), streams the handler's lines (throttled when the node's settings ask),
and runs mutations atomically under its lock (`mutate`). It owns the node's state: the base
fleet (xfleet/sim/base.py), the overlay of changes and its store (xfleet/sim/overlay.py), and
the journal of history records and events (xfleet/sim/journal.py). `reboot()` empties the
event queue, restarts eids at 1 and imports the pools again (new load_guid).

It has a data path: `start` runs `zfs send` and `zfs receive` as processes with binary stdin
and stdout (xfleet/sim/process.py), so a relay streams a simulated stream (xfleet/sim/stream.py)
from one simulated node into another; `write()` stands for a client writing to a volume.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xfleet.core.errors import TransportError, UsageError
from xfleet.remote.programs import identify
from xfleet.remote.transport import Process, Transport
from xfleet.sim import commands  # noqa: F401 - importing the package registers every handler
from xfleet.sim.base import BaseFleet
from xfleet.sim.content import write as write_content
from xfleet.sim.journal import Journal
from xfleet.sim.options import USAGE
from xfleet.sim.overlay import Overlay, Store
from xfleet.sim.process import SimProcess
from xfleet.sim.registry import PROGRAM, Context, Fail, handler
from xfleet.sim.settings import POOL_VERSION_TEXT, UTS, SimSettings, mix
from xfleet.sim.transaction import Transaction

if TYPE_CHECKING:
    from xfleet.remote.host import Host


class SimTransport(Transport):
    """A simulated storage node: answers zfs/zpool argv like OpenZFS 2.3 on a real node."""

    kind = "sim"

    def __init__(self, host: Host, *, state_dir: Path | None = None):
        super().__init__(host.name, command_timeout=host.command_timeout)
        self.host = host
        self.settings = SimSettings.from_mapping(host.name, host.sim)
        self.data_path = self.settings.data_path  # `start`: zfs send/receive streams
        pools = tuple(host.pools) or ("tank",)
        self.base = BaseFleet(host.name, pools, self.settings)
        self.state_dir = state_dir
        self.lock = threading.RLock()
        self.store: Store | None = None
        self.overlay = Overlay()
        self.epoch = 0  # bumped by close(): `zpool events -f` streams end like a lost link
        self.daemons: dict[str, Any] = {}  # simulated daemons' state when there is no store
        if state_dir is not None:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", host.name)
            if safe != host.name:
                safe += f"-{mix(host.name) & 0xFFFFFFFF:08x}"
            self.store = Store(Path(state_dir) / f"sim-{safe}.sqlite", host.name)
            self.journal = Journal(self.store.conn, self.store.lock)
            self._open_store()
        else:
            self.journal = Journal.in_memory()
        self._boot(first=True)

    def _open_store(self) -> None:
        assert self.store is not None
        with self.store.lock:
            self._check_fingerprint(self.store)
        self.store.load(self.overlay)

    def _check_fingerprint(self, store: Store) -> None:
        conn = store.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
            if row is None or row[0] != self.base.fingerprint:
                store.reset()
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES "
                             "('fingerprint', ?)", (self.base.fingerprint,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self.lock:
            self.epoch += 1
            if self.store is not None:
                # like the overlay, the node stays usable in memory (same boot, eids going on)
                memory = Journal.in_memory()
                with self.store.lock:
                    state = self.journal.conn.execute("SELECT key, value FROM zstate").fetchall()
                memory.conn.executemany("INSERT INTO zstate (key, value) VALUES (?, ?)", state)
                self.store.close()
                self.store = None
                self.journal = memory

    @property
    def state_path(self) -> Path | None:
        return self.store.path if self.store else None

    # -- plumbing ------------------------------------------------------------------------------
    def current_overlay(self) -> Overlay:
        with self.lock:
            if self.store is not None and self.store.generation() != self.overlay.generation:
                ov = Overlay()
                self.store.load(ov)
                self.overlay = ov
            return self.overlay

    def _stream(self, argv: list[str], timeout: float, stdin: bytes | None,
                status: list[int], err: list[str]) -> Iterator[str]:
        ctx = Context(argv=argv, timeout=timeout, stdin=stdin)
        epoch = self.epoch
        try:
            out = self.dispatch(argv, ctx)
            rate = self.settings.rows_per_second
            if rate > 0:
                out = _throttle(out, rate, lambda: self.epoch != epoch)
            for line in out:
                if self.epoch != epoch:  # closed meanwhile: like a dropped SSH connection
                    raise TransportError("the connection was closed while the command ran",
                                         where=self.node)
                if line.isascii() and "\n" not in line:
                    yield line
                else:  # as a transport reads bytes: lines end at every newline (a value's too)
                    yield from _as_received(line).split("\n")
        except Fail as f:
            ctx.fail(f.stderr, f.code)
        status[0] = ctx.code
        err[0] = "".join(ctx.err)

    def dispatch(self, argv: list[str], ctx: Context) -> Iterator[str]:
        """The output of `argv` from its registered handler; raise Fail as the node would."""
        if argv[0] == "env":  # `env NAME=VALUE... COMMAND`: the locale of zfs_get_user_properties
            i = 1
            while i < len(argv) and "=" in argv[i]:
                i += 1
            if i == len(argv):
                raise Fail("env: missing command\n", 125)
            argv = argv[i:]
        prog = argv[0].rsplit("/", 1)[-1]
        args = argv[1:]
        if prog == "zfs" and not args:
            raise Fail("usage: zfs command args ...\nwhere 'command' is one of the "
                       "following:\n\n" + "\n".join(USAGE[c] for c in (
                           "create", "destroy", "snapshot", "rename", "clone", "promote",
                           "list", "set", "get", "inherit")) + "\n", 2)
        if prog == "zpool" and not args:
            raise Fail("usage: zpool command args ...\n", 2)
        if prog in ("zfs", "zpool"):
            sub, rest = args[0], args[1:]
            found = handler(prog, sub)
            if found is None:
                raise Fail(f"unrecognized command '{sub}'\nusage: {prog} command args ...\n", 2)
            return found(self, rest, ctx)
        known = identify(argv)
        if known is not None and (found := handler(PROGRAM, known[0].name)) is not None:
            return found(self, known[1], ctx)
        if prog == "python3":
            raise Fail("sim: python3: only xfleet's own programs are simulated\n", 127)
        found = handler(prog)
        if found is not None:
            return found(self, args, ctx)
        raise Fail(f"sim: {prog}: command not found (simulated nodes answer zfs and zpool "
                   f"commands, and xfleet-sim-target)\n", 127)

    def _open_process(self, argv: list[str], timeout: float, collect_stdout: bool
                      ) -> Process:
        """A command with binary stdin/stdout (`zfs send`, `zfs receive`): xfleet/sim/process.py."""
        return SimProcess(self, argv, timeout, collect_stdout)

    def mutate(self, fn: Callable[[Transaction], list[str]], ctx: Context | None = None,
               ) -> Iterator[str]:
        """Run a mutation atomically: on a copy of the latest overlay, persisted on success
        with the history records and events it logged (and, when `ctx` ends without error,
        the command line, as zfs logs it)."""
        store = self.store
        journal = self.journal
        with self.lock, journal.lock:
            journal.conn.execute("BEGIN IMMEDIATE")
            try:
                if store is not None and store.generation() != self.overlay.generation:
                    fresh = Overlay()
                    store.load(fresh)
                    self.overlay = fresh
                txn = Transaction(self, self.overlay.copy())
                out = fn(txn)
                if txn.last_pool is not None and ctx is not None and ctx.code == 0 \
                        and ctx.argv:
                    txn.command(ctx.argv)
                if txn.changed or txn.last_pool is not None or txn.posted:
                    if store is not None:
                        store.save(txn.ov, txn.changed)
                    else:
                        txn.ov.generation = str(int(txn.ov.generation) + 1)
                    self.overlay = txn.ov
                    journal.append(txn)
                journal.conn.execute("COMMIT")
            except BaseException:
                journal.conn.execute("ROLLBACK")
                raise
        return iter(out)

    # -- boot, events, history -----------------------------------------------------------------
    def _boot(self, *, first: bool = False) -> None:
        """Import the pools as a booting node does: the event queue restarts (eids from 1)
        with open, config_sync, pool_import, import, config_sync per pool; history gets the
        open and import records and the import command; every pool gets a new load_guid.
        `first`: only if the node never booted (a new state)."""

        def op(txn: Transaction) -> list[str]:
            j = self.journal
            boot = j.get("boot")
            if first and boot is not None:
                return []
            j.clear_events()
            j.put("eid", 0)
            j.put("boot", (boot or 0) + 1)
            uts = f"{POOL_VERSION_TEXT}; uts {self.node} {UTS}"
            for pool in self.base.pools:
                txg = txn.stamp(pool)
                txn.internal(pool, "open", uts, txg)
                txn.post(pool, "sysevent.fs.zfs.config_sync", [], txg)
                txn.post(pool, "sysevent.fs.zfs.pool_import", [], txg)
                txn.stamp(pool)
                txg = txn.stamp(pool)
                txn.internal(pool, "import", uts, txg)
                txn.post(pool, "sysevent.fs.zfs.config_sync", [], txg)
            txn.command(["zpool", "import", "-c", "/etc/zfs/zpool.cache", "-aN"])
            return []

        if first:
            with self.journal.lock:
                if self.journal.get("boot") is not None:
                    return
        list(self.mutate(op))

    def reboot(self) -> None:
        """Simulate a reboot of this node (for every transport of it, in any process): the
        kernel's event queue is emptied and its eids restart at 1, every pool is imported
        again (new load_guid; the import's events and history records), datasets unchanged.
        Open `zpool events -f` streams of the node end as if the connection dropped."""
        self._boot()

    def write(self, volume: str, nbytes: int) -> None:
        """Simulate a client writing `nbytes` of new data to `volume` (its content identity
        changes, `written` grows; like a real write, no history record and no event)."""
        try:
            list(self.mutate(lambda txn: write_content(txn, volume, nbytes)))
        except Fail as f:
            raise UsageError(f.stderr.strip(), where=self.node) from None

    def load_guid(self, pool: str) -> int:
        """The pool's current load_guid (changes at every import, i.e. every reboot)."""
        with self.journal.lock:
            boot = self.journal.get("boot") or 0
        return mix(self.node, pool, "load", boot) | 1


def _throttle(lines: Iterator[str], rate: float, closed: Callable[[], bool]) -> Iterator[str]:
    """`lines` at `rate` lines a second; waits in short slices so that a connection closed
    meanwhile (`closed()`) ends the stream at once, as a dropped SSH connection does."""
    start = time.monotonic()
    for n, line in enumerate(lines, 1):
        if n % 256 == 0:
            while (ahead := n / rate - (time.monotonic() - start)) > 0 and not closed():
                time.sleep(min(ahead, 0.05))
        yield line


def _as_received(value: str) -> str:
    """A value as it reaches xfleet over SSH: bytes that are not UTF-8 read as U+FFFD. (Its
    lone surrogates are the escapes of such bytes; any other, which no byte string gives, is
    sent as its UTF-8-like encoding rather than failing the node's listing.)"""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "replace")
    return value
