"""Running moves: the Runner drives each move through its steps (base, catch-up, cutover,
verify, place), within per-node stream slots, pausable and resumable."""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from xfleet import mirror
from xfleet.core.access import CLOSED
from xfleet.core.errors import RemoteCommandError, XfleetError
from xfleet.core.identity import HOSTS_PROPERTY, UUID_PROPERTY
from xfleet.core.names import pool_of
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror import claims
from xfleet.mirror.backend import Connection, Location
from xfleet.ops import identity
from xfleet.ops.access import attach
from xfleet.ops.moves.journal import (
    ACTIVE,
    DEFAULTS,
    FINAL,
    HALTED,
    HEARTBEAT,
    MOVES,
    SEND_DIRECT,
    SNAP_PREFIX,
    STALE,
    STREAMING,
    WAIT_DEVICE,
    Move,
    MoveError,
    Progress,
    claim,
    get,
    sample_hashes_argv,
    save,
)
from xfleet.ops.moves.live import Cutover
from xfleet.ops.moves.plan import preflight, receive_argv
from xfleet.ops.sync import sync
from xfleet.remote.relay import RelayResult, TokenBucket, relay
from xfleet.remote.transport import Transport, quote_command


class StreamSlots:
    """Caps concurrent move streams per node (the node's `max_streams`). Counts this process's
    moves and the moves other xfleet processes are running (live heartbeat in the mirror)."""

    def __init__(self, inv: Inventory):
        self.inv = inv
        self._held: dict[str, int] = {}
        self._cond = threading.Condition()

    def acquire(self, conn: Connection, m: Move, halt: threading.Event) -> bool:
        """Wait until both of the move's nodes have a free stream; False if halted first."""
        nodes = (m.source_node, m.target_node)
        waiting: list[str] | None = None
        while not halt.is_set():
            with self._cond:
                elsewhere = streams_elsewhere(conn, m.id)
                full = [n for n in nodes if self._held.get(n, 0) + elsewhere.get(n, 0)
                        >= self.inv.hosts[n].max_streams]
                if not full:
                    for n in nodes:
                        self._held[n] = self._held.get(n, 0) + 1
                    return True
            if full != waiting:
                waiting = full
                m.step = "waiting for a stream slot on " + ", ".join(
                    f"{n} (max_streams {self.inv.hosts[n].max_streams})" for n in full)
                save(conn, m, m.step)
            with self._cond:
                self._cond.wait(1.0)
        return False

    def release(self, m: Move) -> None:
        with self._cond:
            for n in (m.source_node, m.target_node):
                self._held[n] = max(0, self._held.get(n, 0) - 1)
            self._cond.notify_all()


def streams_elsewhere(conn: Connection, move_id: int) -> dict[str, int]:
    """Streams per node of the moves run by other live processes."""
    out: dict[str, int] = {}
    rows = conn.execute(
        f"SELECT source_node, target_node FROM moves WHERE id != ? AND state IN "
        f"({', '.join('?' for _ in STREAMING)}) AND pid IS NOT NULL AND heartbeat > ? "
        "AND NOT (pid = ? AND host = ?)",
        (move_id, *STREAMING, time.time() - STALE, os.getpid(), socket.gethostname()))
    for src, dst in rows:
        out[src] = out.get(src, 0) + 1
        out[dst] = out.get(dst, 0) + 1
    return out


def pause(mirror_path: Location, move_id: int, *, wait: float = 60.0) -> Move:
    """Pause a move before its cutover. A move being run is asked to stop (its process sees
    the request within a second, stops its stream and records `paused`); a move nobody runs is
    marked paused at once. `resume` continues it where it stopped."""
    conn = mirror.connect(mirror_path)
    try:
        m = get(conn, move_id)
        if m.state in FINAL or m.state in HALTED:
            return m
        if m.state not in ("planned", "base", "catchup"):
            raise MoveError(f"move {m.id} is in {m.state}: past the point where it can pause "
                            "(its cutover has begun)", hint="it finishes on its own; "
                            f"xfleet moves show {m.id}")
        mirror.begin(conn, "a move's pause request")
        r = conn.execute("SELECT pid, heartbeat FROM moves WHERE id = ?", (m.id,)).fetchone()
        running = bool(r["pid"]) and (r["heartbeat"] or 0) > time.time() - STALE
        if running:
            conn.execute("UPDATE moves SET control = 'pause' WHERE id = ?", (m.id,))
            conn.execute("COMMIT")
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                m = get(conn, move_id)
                if m.state not in ACTIVE:
                    return m
                time.sleep(0.25)
            raise MoveError(f"move {m.id} was asked to pause but is still {m.state}",
                            hint="its process may be busy in a remote command; check "
                            f"xfleet moves show {m.id} again")
        conn.execute("COMMIT")
        m.options["failed_state"] = m.state
        m.state = "paused"
        m.step = "paused"
        save(conn, m, "paused (no process was running it)")
        return m
    finally:
        conn.close()


@dataclass
class Runner:
    """Drives moves to their end (or to a failure or pause that `resume` continues). One
    Runner may run many moves at once from several threads (a drain): the stream slots and
    the fleet-wide and per-node bandwidth limits are shared by all of them."""

    inv: Inventory
    mirror_path: Location
    conns: Connections
    progress: Progress | None = None
    limits: Sequence[TokenBucket] = ()
    stop: threading.Event = field(default_factory=threading.Event)
    slots: StreamSlots = field(init=False)
    node_limits: dict[str, TokenBucket] = field(init=False)
    fleet_limit: TokenBucket | None = field(init=False)
    _halts: dict[int, threading.Event] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.slots = StreamSlots(self.inv)
        self.node_limits = {n: TokenBucket(h.bwlimit) for n, h in self.inv.hosts.items()
                            if h.bwlimit}
        self.fleet_limit = TokenBucket(self.inv.move_bwlimit) if self.inv.move_bwlimit \
            else None

    def give_uuids(self, move_ids: Sequence[int]) -> None:
        """Before many moves start (a drain): their volumes without a UUID get it in one
        remote command per source node (identity.ensure_many), so each move's own first step
        finds it in the mirror instead of asking its node once per volume. A node that cannot
        be asked is left to the moves (each asks again, and fails clearly if it cannot)."""
        conn = mirror.connect(self.mirror_path)
        try:
            by_node: dict[str, list[str]] = {}
            for move_id in move_ids:
                m = get(conn, move_id)
                if m.state == "planned":
                    by_node.setdefault(m.source_node, []).append(m.volume)
        finally:
            conn.close()
        for node, volumes in sorted(by_node.items()):
            try:
                identity.ensure_many(self.inv, self.mirror_path, self.conns, node, volumes)
            except XfleetError as exc:
                logging.getLogger(__name__).warning("volume UUIDs on %s: %s", node,
                                                    exc.message)

    def run(self, move_id: int) -> Move:
        conn = mirror.connect(self.mirror_path)
        halt = self._halts[move_id] = threading.Event()
        done = threading.Event()
        watcher = threading.Thread(target=self._monitor, args=(move_id, halt, done),
                                   name=f"move-{move_id}-monitor", daemon=True)
        slot = False
        try:
            m = get(conn, move_id)
            if m.state in FINAL:
                return m
            claim(conn, m)
            watcher.start()
            m.error = None
            resume_at = m.options.get("failed_state", "base") if m.state in HALTED else m.state
            if resume_at in STREAMING:
                slot = self.slots.acquire(conn, m, halt)
            steps = {"planned": self._base, "base": self._base, "catchup": self._catchup,
                     "cutover": self._cutover, "verify": self._verify, "placed": self._place,
                     "failed": self._resume_halted, "paused": self._resume_halted}
            try:
                while m.state not in FINAL and not halt.is_set():
                    steps[m.state](conn, m)
                if halt.is_set() and m.state not in FINAL and not self.stop.is_set():
                    raise MoveError("stopped")
            except XfleetError as exc:
                if self._pause_requested(conn, m.id) and m.state not in HALTED:
                    m.options["failed_state"] = m.state
                    m.state, m.step, m.rate = "paused", "paused", None
                    save(conn, m, "paused by request")
                else:
                    self._failed(conn, m, exc.message + (f" (hint: {exc.hint})"
                                                         if exc.hint else ""))
            except Exception as exc:  # a bug or an unexpected library error (e.g. paramiko's)
                # Journaled like any failure, so the move stays resumable and the mirror says
                # what happened; the traceback goes to the log (stderr unless configured).
                logging.getLogger(__name__).exception("move %s failed unexpectedly", m.id)
                self._failed(conn, m, f"internal error: {type(exc).__name__}: {exc}"
                             f" (hint: xfleet moves resume {m.id})")
            return get(conn, move_id)
        finally:
            done.set()
            if watcher.is_alive():
                watcher.join(timeout=5)
            if slot:
                self.slots.release(m)
            self._halts.pop(move_id, None)
            conn.execute("UPDATE moves SET pid = NULL, control = NULL WHERE id = ? AND pid = ?",
                         (move_id, os.getpid()))
            conn.close()

    @staticmethod
    def _failed(conn: Connection, m: Move, error: str) -> None:
        """Journal `m` as failed with `error`; `resume` continues in the state that failed."""
        m.error = error
        m.step = f"failed in {m.state}"
        if m.state not in HALTED:
            m.options["failed_state"] = m.state
        m.state, m.rate = "failed", None
        save(conn, m, f"failed: {m.error}")

    def _monitor(self, move_id: int, halt: threading.Event, done: threading.Event) -> None:
        """While a move runs: stop it on Ctrl-C or a pause request, and keep its heartbeat."""
        conn = mirror.connect(self.mirror_path)
        beat = time.monotonic()
        try:
            while not done.wait(0.5):
                if self.stop.is_set() or self._pause_requested(conn, move_id):
                    halt.set()
                if time.monotonic() - beat > HEARTBEAT:
                    beat = time.monotonic()
                    claims.beat(conn, MOVES.table, move_id)
        finally:
            conn.close()

    @staticmethod
    def _pause_requested(conn: Connection, move_id: int) -> bool:
        r = conn.execute("SELECT control FROM moves WHERE id = ?", (move_id,)).fetchone()
        return bool(r and r[0] == "pause")

    def _halt(self, m: Move) -> threading.Event:
        return self._halts.get(m.id) or self.stop

    # -- helpers ---------------------------------------------------------------------------
    def _t(self, node: str) -> Transport:
        return self.conns.get(node)

    def _tick(self, m: Move) -> None:
        if self.progress is not None:
            self.progress(m)

    def _has(self, node: str, name: str) -> bool:
        return self._t(node).run(["zfs", "list", "-H", "-o", "name", name], check=False).ok

    def _props(self, node: str, names: list[str], props: list[str]) -> dict[tuple[str, str],
                                                                            str]:
        """{(dataset, property): value} of `props` on `names`, in one command (what exists:
        a missing dataset is left out)."""
        res = self._t(node).run(["zfs", "get", "-H", "-p", "-o", "name,property,value",
                                 ",".join(props), *names], check=False)
        out: dict[tuple[str, str], str] = {}
        for line in res.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                out[(parts[0], parts[1])] = parts[2]
        return out

    def _get(self, node: str, name: str, prop: str) -> str | None:
        res = self._t(node).run(["zfs", "get", "-H", "-p", "-o", "value", prop, name],
                                check=False)
        return res.stdout.strip() if res.ok else None

    def _target_state(self, m: Move, snap: str) -> tuple[bool, str | None]:
        """(the target has @snap, its receive resume token or None) in one command: the
        copy and its snapshots, listed by name (a partly received copy is listed too)."""
        res = self._t(m.target_node).run(
            ["zfs", "list", "-H", "-p", "-o", "name,receive_resume_token", "-t", "all",
             "-d", "1", m.target_volume], check=False)
        if not res.ok:  # no copy yet
            return False, None
        has, token = False, None
        for line in res.stdout.splitlines():
            name, _, value = line.partition("\t")
            if name == m.target_volume:
                token = value.strip() or None
            elif name == f"{m.target_volume}@{snap}":
                has = True
        return has, token

    def _snapshot(self, m: Move, n: int | str) -> str:
        return self._take(m, n)[0]

    def _take(self, m: Move, n: int | str) -> tuple[str, bool]:
        """(the move's snapshot `n`, True when taken now: no earlier attempt took it)."""
        snap = m.snap(n)
        res = self._t(m.source_node).run(["zfs", "snapshot", f"{m.volume}@{snap}"], check=False)
        # taken by an earlier attempt of this move (one round trip in the usual case)
        if not res.ok and not self._has(m.source_node, f"{m.volume}@{snap}"):
            raise RemoteCommandError(m.source_node, res.argv, res.exit_status, res.stderr)
        if snap not in m.snapshots:
            m.snapshots.append(snap)
        return snap, res.ok

    def _send(self, conn: Connection, m: Move, snap: str, base: str | None,
              intermediates: bool = False, *, new: bool = False) -> None:
        """Bring `snap` to the target: resume a partial receive from its token, or send
        (full when `base` is None, else incremental from @base). Retries from the token.
        `new`: `snap` was just taken (the target cannot have it: its first attempt neither
        asks the target nor estimates the size, two round trips less while a live cutover
        holds the hosts' I/O)."""
        attempts = int(m.options.get("attempts", DEFAULTS["attempts"]))
        for attempt in range(1, attempts + 1):
            has, token = (False, None) if new and attempt == 1 else \
                self._target_state(m, snap)
            if has:
                m.received = snap
                return
            if token and token != "-":
                send = ["zfs", "send", "-t", token]
                what = f"resuming {snap} from the receive token"
            else:
                send = ["zfs", "send", *m.send_flags]
                if base is not None:
                    send += ["-I" if intermediates else "-i", f"@{base}"]
                send.append(f"{m.volume}@{snap}")
                what = f"sending {snap}" + (f" (from @{base})" if base else " (full)")
            if m.options.get("direct"):
                what += f" directly {m.source_node} -> {m.target_node}"
            m.step = what
            if not (new and attempt == 1):
                self._estimate(m, send)
            save(conn, m, what)
            start = m.bytes_done
            res = self._relay(m, send, receive_argv(m) if not token or token == "-" else
                              ["zfs", "receive", "-s", "-u", m.target_volume], start, conn)
            if res.ok and self._has(m.target_node, f"{m.target_volume}@{snap}"):
                m.received = snap
                save(conn, m, f"received {snap}: {res.bytes:,} bytes in {res.seconds:.1f}s")
                return
            if res.stopped:
                raise MoveError("stopped", hint=f"xfleet moves resume {m.id}")
            reason = (res.dst_stderr or res.src_stderr or "the stream ended early").strip()
            save(conn, m, f"attempt {attempt}: {reason[:500]}")
            if "has been modified" in reason or "must destroy them" in reason:
                raise MoveError(
                    f"the copy {m.target_node}:{m.target_volume} was changed on the target "
                    f"since @{m.received or base} ({' '.join(reason.split())[:300]})",
                    hint="xfleet never rolls a target back (no receive -F): find out who "
                    "wrote it, then roll it back yourself (zfs rollback) and `xfleet moves "
                    f"resume {m.id}`, or `xfleet moves abort {m.id}` to discard the copy")
            if "out of space" in reason or "quota exceeded" in reason:
                raise MoveError(f"{m.target_node} ran out of space receiving {snap}",
                                hint=f"xfleet moves abort {m.id} discards the partial copy")
            if token and token != "-" and ("token" in reason or "resume" in reason):
                # a stale or broken token: discard the partial receive, restart the step
                self._t(m.target_node).run(["zfs", "receive", "-A", m.target_volume],
                                           check=False)
                save(conn, m, "discarded a stale receive token (receive -A)")
        raise MoveError(f"could not send {snap} after {attempts} attempts",
                        hint=f"xfleet moves resume {m.id} (it resumes from the receive token)")

    def _estimate(self, m: Move, send: list[str]) -> None:
        if m.bytes_total is not None and m.bytes_done < m.bytes_total:
            return
        dry = [send[0], send[1], "-n", "-P", *send[2:]]
        res = self._t(m.source_node).run(dry, check=False)
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "size" and parts[1].isdigit():
                m.bytes_total = m.bytes_done + int(parts[1])

    def _relay(self, m: Move, send: list[str], recv: list[str], start: int,
               conn: Connection) -> RelayResult:
        limits = [*self.limits, *([self.fleet_limit] if self.fleet_limit else []),
                  *(self.node_limits[n] for n in (m.source_node, m.target_node)
                    if n in self.node_limits)]
        bw = m.options.get("bwlimit")
        if bw:
            limits.append(TokenBucket(float(bw)))
        last = [time.monotonic()]
        sent = [0]
        window = [time.monotonic(), 0]  # start of the rate window, bytes in it

        def tick(n: int) -> None:  # n: bytes of this chunk (relay reports increments)
            sent[0] += n
            m.bytes_done = start + sent[0]
            if m.bytes_total is not None:
                m.bytes_total = max(m.bytes_total, m.bytes_done)
            now = time.monotonic()
            window[1] += n
            if now - window[0] >= 1.0:  # smoothed rate over windows of a second or more
                r = window[1] / (now - window[0])
                m.rate = r if m.rate is None else 0.7 * m.rate + 0.3 * r
                window[0], window[1] = now, 0
            self._tick(m)
            if now - last[0] > 2:
                last[0] = now
                save(conn, m)

        if m.options.get("direct"):
            return self._direct(m, send, recv, tick)
        return relay(self._t(m.source_node), send, self._t(m.target_node), recv,
                     limits=limits, progress=tick, stop=self._halt(m))

    def _direct(self, m: Move, send: list[str], recv: list[str],
                tick: Callable[[int], None]) -> RelayResult:
        """Node to node: the source streams to the target over its own SSH (trust between
        the nodes is the operator's: a key on the source, the target's host key in the
        source's known_hosts). Progress comes from `zfs send -v`; xfleet's bandwidth limits
        do not apply (nothing passes through this host)."""
        host = self.inv.hosts[m.target_node]
        dest = (f"{host.user}@" if host.user else "") + (host.private_address or
                                                          host.address or m.target_node)
        argv = SEND_DIRECT.argv(dest, quote_command(recv), *send[2:])
        t0 = time.monotonic()
        done = 0
        halt = self._halt(m)
        out = self._t(m.source_node).stream(argv, timeout=3600)
        stopped = False
        for line in out:
            parts = line.split("\t")
            if len(parts) == 3 and parts[1].isdigit() and ":" in parts[0]:
                n = int(parts[1])
                if n > done:
                    tick(n - done)
                    done = n
            if halt.is_set():
                stopped = True
                break
        status = out.exit_status if not stopped else -1
        err = out.stderr.strip()
        if status != 0 and not stopped and ("Host key verification failed" in err
                                            or "Permission denied" in err
                                            or "Could not resolve" in err
                                            or "Connection refused" in err
                                            or "timed out" in err):
            raise MoveError(f"{m.source_node} cannot stream to {dest} directly: "
                            f"{' '.join(err.split())[:300]}",
                            hint="set up SSH trust from the source node to the target "
                            "(key and pinned host key), or move without --direct (relayed "
                            "through this host)")
        return RelayResult(done, time.monotonic() - t0, status, status, "", err,
                           stopped=stopped)

    # -- states ----------------------------------------------------------------------------
    def _base(self, conn: Connection, m: Move) -> None:
        if m.state == "planned":
            if self._has(m.target_node, m.target_volume):  # not ours: nothing was sent yet
                raise MoveError(f"{m.target_node} already has {m.target_volume}",
                                hint="xfleet never overwrites: rename or destroy it first")
            pf = preflight(self._t(m.source_node), self._t(m.target_node), m.volume,
                           m.target_volume, m.send_flags, m.receive_properties)
            m.send_flags, m.receive_properties = pf.send_flags, pf.receive_properties
            # the copy is received with the volume's UUID: the same NVMe identity on the target
            # (a volume without one gets it now: first sight)
            vol_uuid = identity.ensure(self.inv, self.mirror_path, self.conns, m.source_node,
                                       m.volume)
            if vol_uuid is not None:
                m.receive_properties = {**m.receive_properties, UUID_PROPERTY: vol_uuid}
            save(conn, m, "preflight: target pool has "
                  + (", ".join(pf.needed) if pf.needed else "what the volume needs")
                  + "".join(f"; {n}" for n in pf.notes))
            parent = m.target_volume.rsplit("/", 1)[0]
            if "/" in m.target_volume:
                # `-p`: an existing parent is success; parallel moves (a drain) may create the
                # same parent at the same moment, and one then fails with "already exists",
                # which is what we want
                res = self._t(m.target_node).run(["zfs", "create", "-p", parent], check=False)
                if not res.ok and not self._has(m.target_node, parent):
                    raise MoveError(f"cannot create {parent} on {m.target_node}: "
                                    f"{res.stderr.strip()}")
            m.state = "base"
            save(conn, m, "base copy")
        existing = [n for n in self._source_snapshots(m) if not n.startswith(SNAP_PREFIX)]
        snap = self._snapshot(m, 0)
        if existing:
            first = existing[0]
            self._send(conn, m, first, None)
            self._send(conn, m, snap, first, intermediates=True)
        else:
            self._send(conn, m, snap, None)
        m.state = "catchup"
        save(conn, m, "base copy received")

    def _source_snapshots(self, m: Move) -> list[str]:
        out = self._t(m.source_node).run(
            ["zfs", "list", "-H", "-p", "-o", "name,createtxg", "-t", "snapshot", "-d", "1",
             m.volume]).stdout
        rows = [line.split("\t") for line in out.splitlines() if "@" in line]
        return [n.split("@", 1)[1] for n, _ in sorted(rows, key=lambda r: int(r[1]))]

    def _catchup(self, conn: Connection, m: Move) -> None:
        limit = int(m.options.get("catchup_bytes", DEFAULTS["catchup_bytes"]))
        rounds = int(m.options.get("max_rounds", DEFAULTS["max_rounds"]))
        while m.rounds < rounds and not self._halt(m).is_set():
            prev = m.received or m.snapshots[-1]
            delta = self._get(m.source_node, m.volume, f"written@{prev}")
            if delta is not None and delta.isdigit() and int(delta) <= limit:
                break
            m.rounds += 1
            snap = self._snapshot(m, m.rounds)
            m.bytes_total = None
            self._send(conn, m, snap, prev)
        m.state = "cutover"
        save(conn, m, f"caught up after {m.rounds} round(s)")

    def _hooks(self, m: Move, node: str, name: str) -> None:
        values = {"volume": m.volume, "target_volume": m.target_volume,
                  "source_node": m.source_node, "target_node": m.target_node,
                  "pool": pool_of(m.target_volume if node == m.target_node else m.volume)}
        for argv in self.inv.hosts[node].hooks.get(name, ()):
            args = [a.format(**values) for a in argv]
            try:
                self._t(node).run(args)
            except RemoteCommandError as exc:
                raise MoveError(f"{name} hook failed on {node}: {exc.message}",
                                hint="fix the hook or its cause, then xfleet moves resume "
                                f"{m.id}") from None

    def _cutover(self, conn: Connection, m: Move) -> None:
        if m.options.get("live"):
            self._live_cutover(conn, m)
            return
        if "final" not in [s.rsplit("-", 1)[-1] for s in m.snapshots]:
            self._hooks(m, m.source_node, "pre_cutover")
            save(conn, m, "pre_cutover hooks done")
        final = self._snapshot(m, "final")
        m.bytes_total = None
        self._send(conn, m, final, m.received)
        if "-w" in m.send_flags and "keylocation" in m.receive_properties and \
                self._get(m.target_node, m.target_volume, "keystatus") == "unavailable":
            self._t(m.target_node).run(["zfs", "load-key", m.target_volume])
        volmode = self._get(m.source_node, m.volume, "volmode") or "default"
        self._t(m.target_node).run(["zfs", "set", f"volmode={volmode}", m.target_volume])
        m.state = "verify"
        save(conn, m, f"final snapshot {final} received; target device enabled")

    def _live_cutover(self, conn: Connection, m: Move) -> None:
        """The hosts' I/O carried across on their multipath (xfleet/ops/moves/live.py); no
        pre_cutover hook runs: nothing has to stop."""
        cut = Cutover(self.inv, self.conns, m, lambda msg: save(conn, m, msg))
        st = cut.state
        if not st.get("prepared"):
            cut.prepare(conn, self._get(m.source_node, m.volume, "volmode") or "default")
            save(conn, m, f"live: {len(st['hosts'])} host(s) have the second path")
        if not st.get("switched"):
            def final() -> None:
                snap, new = self._take(m, "final")
                m.bytes_total = None
                self._send(conn, m, snap, m.received, new=new)

            held = cut.switch(final)
            save(conn, m, f"live: final snapshot received on {m.target_node}; the hosts' I/O "
                          f"was held {held:.2f}s and resumed there")
        if not st.get("finished"):
            cut.finish()
        m.state = "verify"
        save(conn, m, f"final snapshot {m.snap('final')} received; the copy is the volume's "
                      "live path")

    def _verify(self, conn: Connection, m: Move) -> None:
        final = m.snap("final")
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="xfleet-verify") as ex:
            src_props = ex.submit(self._props, m.source_node,
                                  [f"{m.volume}@{final}", m.volume], ["guid", "volsize"])
            dst_props = ex.submit(self._props, m.target_node,
                                  [f"{m.target_volume}@{final}", m.target_volume],
                                  ["guid", "keystatus"])
            src_p, dst_p = src_props.result(), dst_props.result()
        a = src_p.get((f"{m.volume}@{final}", "guid"))
        b = dst_p.get((f"{m.target_volume}@{final}", "guid"))
        if not a or a != b:
            raise MoveError(f"snapshot guids differ: source {a}, target {b}",
                            hint="nothing was destroyed; investigate before resuming")
        if dst_p.get((m.target_volume, "keystatus")) == "unavailable":
            m.verified = f"guid {a}; content not hashed: the encrypted copy's key is not " \
                "loaded on the target (zfs load-key)"
            m.state = "placed"
            save(conn, m, f"verified: {m.verified}")
            return
        volsize = int(src_p.get((m.volume, "volsize")) or 0)
        mode = m.verify
        # a live move's copy is written by the hosts already: both sides' @final are compared
        at = f"@{final}" if m.options.get("live") else ""
        # both sides at once: each reads its own disks, so the check takes the time of one
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="xfleet-verify") as ex:
            src_f = ex.submit(self._hashes, m.source_node, m.volume + at, volsize, mode, m.id)
            dst_f = ex.submit(self._hashes, m.target_node, m.target_volume + at, volsize, mode,
                              m.id)
            src, dst = src_f.result(), dst_f.result()
        if src != dst:
            bad = sum(1 for x, y in zip(src, dst, strict=False) if x != y)
            raise MoveError(
                f"content differs: {bad} of {len(src)} {mode} checks do not match",
                hint="was the source written after the final snapshot? configure a "
                "pre_cutover hook that stops I/O; nothing was destroyed")
        m.verified = f"guid {a}; {len(src)} {mode} hash(es) equal"
        m.state = "placed"
        save(conn, m, f"verified: {m.verified}")

    def _hashes(self, node: str, volume: str, volsize: int, mode: str, seed: int) -> list[str]:
        """Hashes of `volume`'s device, or of a snapshot's (`VOL@SNAP`: made visible with
        `snapdev` for the check, as it was after)."""
        dev = "/dev/zvol/" + volume.replace(" ", "+")
        vol, at, _ = volume.partition("@")
        restore: list[str] | None = None
        if at:
            got = self._t(node).run(["zfs", "get", "-H", "-o", "value,source", "snapdev",
                                     vol]).stdout.split("\t")
            if got[0].strip() != "visible":
                restore = ["zfs", "set", f"snapdev={got[0].strip()}", vol] \
                    if len(got) > 1 and got[1].strip() == "local" else \
                    ["zfs", "inherit", "snapdev", vol]
                self._t(node).run(["zfs", "set", "snapdev=visible", vol])
        try:
            if not self._t(node).run(WAIT_DEVICE.argv(dev), check=False).ok:
                seen = self._t(node).run(["ls", "-l", "--", dev.rsplit("/", 1)[0]],
                                         check=False)
                raise MoveError(f"{node}: {dev} did not appear (udev); "
                                f"{dev.rsplit('/', 1)[0]} has: "
                                + " ".join(seen.stdout.split()[-40:]),
                                hint=f"check the volume's volmode and snapdev on {node}, then "
                                "xfleet moves resume ID")
            if mode == "full":
                out = self._t(node).run(["sha256sum", dev], timeout=3600).stdout
                return [out.split()[0]]
            mib = max(1, volsize // 2**20)
            rnd = random.Random(seed)
            offsets = sorted({0, mib - 1,
                              *(rnd.randrange(mib) for _ in range(DEFAULTS["samples"]))})
            out = self._t(node).run(sample_hashes_argv(dev, offsets)).stdout
            return [line.split()[0] for line in out.splitlines() if line.strip()]
        finally:
            if restore is not None:
                self._t(node).run(restore, check=False)

    def _place(self, conn: Connection, m: Move) -> None:
        self._hooks(m, m.target_node, "post_cutover")
        retired = f"{m.volume}.xfleet-moved-{m.id}"
        src = self._t(m.source_node)
        listed = src.run(["zfs", "list", "-H", "-o", "name", m.volume, retired],
                         check=False).stdout.split("\n")  # exits 1 when one is missing
        if m.volume in listed:
            src.run(["zfs", "rename", m.volume, retired])
        if m.volume in listed or retired in listed:
            # closed: the target daemon re-exports it under the volume's identity at its next
            # start; no host may reach the retired copy there
            src.run(["zfs", "set", "readonly=on", f"{HOSTS_PROPERTY}={CLOSED}", retired])
            snap = f"{retired}@{m.snap('final')}"
            res = src.run(["zfs", "hold", f"xfleet-move-{m.id}", snap], check=False)
            if not res.ok and "tag already exists" not in res.stderr:  # held by an earlier try
                raise RemoteCommandError(m.source_node, res.argv, res.exit_status, res.stderr)
        m.retired_as = retired
        # the copy's intermediate snapshots served the transfer only; the final one stays (an
        # incremental base for a later move)
        for s in m.snapshots:
            if not s.endswith("-final") and self._has(m.target_node, f"{m.target_volume}@{s}"):
                self._t(m.target_node).run(["zfs", "destroy", f"{m.target_volume}@{s}"])
        m.state = "done"
        m.finished_at = time.time()
        m.step = None
        save(conn, m, f"done: {m.target_node}:{m.target_volume}; source kept as {retired} "
                       "(read-only, held) until `xfleet moves retire`")
        hosts = attach.follow_move(conn, m.source_node, m.volume, m.target_node,
                                   m.target_volume, m.id)
        if hosts:
            save(conn, m, f"attachments of {', '.join(hosts)} follow the volume to "
                          f"{m.target_node}")
            self._allow(conn, m, hosts)

        sync(self.inv, self.mirror_path, [m.source_node, m.target_node],
             connections=self.conns)

    def _allow(self, conn: Connection, m: Move, hosts: list[str]) -> None:
        """The attached hosts allowed on the target node's export of the copy (the move is
        done either way: a failure is journaled, and `xfleet target audit` shows it)."""
        if self.inv.hosts[m.target_node].target is None:
            save(conn, m, f"{m.target_node} has no target in the inventory: its exports' "
                          "allowed hosts are left to it")
            return
        try:
            got = attach.set_node_hosts(self.inv, m.target_node, self._t(m.target_node),
                                        {m.target_volume: hosts})
            err = got.get(m.target_volume, (None, None))[1]
        except XfleetError as exc:
            err = exc.message
        save(conn, m, f"allowed hosts on {m.target_node}: " + (f"not set: {err} (xfleet attach "
             "again, or xfleet target audit)" if err else ", ".join(hosts)))

    def _resume_halted(self, conn: Connection, m: Move) -> None:
        back = m.options.pop("failed_state", None) or "base"
        m.state = back if back in ACTIVE else "base"
        m.step = None
        save(conn, m, f"resuming in {m.state}")
