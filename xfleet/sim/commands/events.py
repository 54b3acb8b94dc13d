"""`zpool events` and `zpool history`: the node's change feed (xfleet/sim/journal.py) as
OpenZFS 2.3 prints it. `zpool events -f` follows the queue as any transport of the node posts
to it; the history starts with the pool's creation records (the base fleet's own past is not
enumerated, as if older records had rotated out)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from xfleet.core.errors import CommandTimeout, TransportError
from xfleet.sim.journal import Entry, dsid
from xfleet.sim.names import name_problem
from xfleet.sim.options import getopt, usage
from xfleet.sim.properties import prop_number
from xfleet.sim.registry import Context, command
from xfleet.sim.settings import FEATURES, POOL_VERSION_TEXT, UTS
from xfleet.sim.space import ASHIFT
from xfleet.sim.view import open_pools

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport


@command("zpool", "events")
def zpool_events(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, rest = getopt("zpool events", args, "vHfc", "")
    flags = {o for o, _ in opts}
    if len(rest) > 1:
        raise usage("zpool events", "too many arguments")
    pool = rest[0] if rest else None
    if pool is not None and name_problem(pool, snapshot=False) is not None:
        raise usage("zpool events", f"invalid pool name '{pool}'")
    if "c" in flags and (pool is not None or flags & {"v", "H", "f"}):
        raise usage("zpool events", "invalid options combined with -c")
    if "c" in flags:
        with sim.lock, sim.journal.lock:
            sim.journal.conn.execute("BEGIN IMMEDIATE")
            try:
                n = sim.journal.clear_events()
                sim.journal.conn.execute("COMMIT")
            except BaseException:
                sim.journal.conn.execute("ROLLBACK")
                raise
        return iter([f"cleared {n} events"])
    scripted, verbose = "H" in flags, "v" in flags
    if "f" in flags:
        return _follow_events(sim, pool, scripted, verbose, ctx.timeout)
    with sim.journal.lock:
        queued = sim.journal.events()
    out = [] if scripted else [f"{'TIME':<30} CLASS"]
    for eid, ev in queued:
        if pool is None or ev.get("pool") == pool:
            out += _event_lines(eid, ev, scripted, verbose)
    return iter(out)


def _follow_events(sim: SimTransport, pool: str | None, scripted: bool, verbose: bool,
                   timeout: float) -> Iterator[str]:
    """`zpool events -f`: the queued events, then new ones as any transport of this node
    posts them (polled every 50 ms), until the consumer closes the stream. Like the
    kernel's cursor, a reader whose last event was dropped from the queue (overflow or
    `zpool events -c`) is told "dropped 1 events" and goes on from the oldest event left.
    A reboot of the node or close() of this transport ends the stream like a lost
    connection; `timeout` seconds without an event end it like an SSH command timeout."""
    epoch = sim.epoch
    journal = sim.journal
    with journal.lock:
        boot = journal.get("boot")
    cursor: int | None = None
    pending_drop = False  # like the kernel cursor's ze_dropped, told with the next event
    if not scripted:
        yield f"{'TIME':<30} CLASS"
    last_output = time.monotonic()
    first = True
    while True:
        if not first:
            time.sleep(0.05)
        first = False
        with sim.lock:
            if sim.epoch != epoch:
                raise TransportError("connection lost while running zpool; it may or may "
                                     "not have completed", where=sim.node)
            with journal.lock:
                if journal.get("boot") != boot:
                    raise TransportError("connection lost while running zpool; it may or "
                                         "may not have completed", where=sim.node)
                dropped = cursor is not None and not journal.has_event(cursor)
                new = journal.events(0 if dropped or cursor is None else cursor)
        if dropped:
            cursor = None
            pending_drop = True
        lines: list[str] = []
        for eid, ev in new:
            if pending_drop:
                lines.append("dropped 1 events")
                pending_drop = False
            cursor = eid
            if pool is None or ev.get("pool") == pool:
                lines += _event_lines(eid, ev, scripted, verbose)
        if lines:
            last_output = time.monotonic()
            yield from lines
        elif time.monotonic() - last_output > timeout:
            raise CommandTimeout(f"no output from zpool for {timeout:g}s; command "
                                 "abandoned", where=sim.node)


@command("zpool", "history")
def zpool_history(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    opts, pools = getopt("zpool history", args, "li", "")
    flags = {o for o, _ in opts}
    internal, longfmt = "i" in flags, "l" in flags
    for pool in open_pools(sim.base, pools, ctx):
        yield f"History for '{pool}':"
        for h in _creation_history(sim, pool):
            yield from _history_lines(h, internal, longfmt)
        after = 0
        while True:
            with sim.journal.lock:
                page = sim.journal.history(pool, after, 5000)
            if not page:
                break
            for seq, h in page:
                after = seq
                yield from _history_lines(h, internal, longfmt)
        yield ""


def _creation_history(sim: SimTransport, pool: str) -> list[Entry]:
    """The records `zpool create` logged (kept at the head of the history for ever)."""
    b = sim.base
    t, host = b.pool_created[pool], sim.node

    def internal(txg: int, op: str, text: str, ds: bool = False) -> Entry:
        rec: Entry = {"kind": "int", "time": t, "txg": txg, "op": op, "str": text,
                      "host": host}
        if ds:
            rec.update(ds=pool, dsid=dsid(b.root_guid[pool]))
        return rec

    out = [internal(4, "create", f"{POOL_VERSION_TEXT}; uts {host} {UTS}"),
           internal(4, "set", f"ashift={ASHIFT}")]
    out += [internal(4, "set", f"feature@{f}=enabled") for f in FEATURES]
    local = b.root_record(pool)["local"]
    out += [internal(5, "set", f"{p}={prop_number(p, v)}", ds=True)
            for p, v in local.items()]
    i = b.pools.index(pool)
    disks = ["mirror", f"nvme{2 * i}n1", f"nvme{2 * i + 1}n1"] \
        if sim.settings.vdev == "mirror" else [f"nvme{i}n1"]
    cmd = ["zpool", "create", "-o", f"ashift={ASHIFT}",
           *(w for p, v in local.items() for w in ("-O", f"{p}={v}")), pool, *disks]
    out.append({"kind": "cmd", "time": t, "cmd": " ".join(cmd), "host": host})
    return out


def _event_lines(eid: int, ev: Entry, scripted: bool, verbose: bool) -> list[str]:
    """One event as `zpool events [-H] [-v]` prints it (zpool_do_events_short/_nvprint)."""
    sec, nsec = ev["time"]
    when = time.strftime("%b %e %Y %H:%M:%S", time.localtime(sec)) + f".{nsec:09d}"
    sep = "\t" if scripted else " "
    out = [f"{when}{sep}{ev['class']}"]
    if verbose:
        for key, value in ev["fields"]:
            shown = f"0x{value:x}" if isinstance(value, int) else f'"{value}"'
            out.append(f"        {key} = {shown}")
        out.append(f"        time = 0x{sec:x} 0x{nsec:x} ")
        out.append(f"        eid = 0x{eid:x}")
        out.append("")
    return out


def _history_lines(h: Entry, internal: bool, longfmt: bool) -> list[str]:
    """One record as `zpool history [-i] [-l]` prints it (print_history_records)."""
    kind = h["kind"]
    if kind != "cmd" and not internal:
        return []
    when = time.strftime("%Y-%m-%d.%H:%M:%S", time.localtime(h["time"]))
    if kind == "cmd":
        line = f"{when} {h['cmd']}"
        return [line + f" [user 0 (root) on {h['host']}:linux]" if longfmt else line]
    if kind == "ioctl":
        out = [f"{when} ({h['ms']}ms) ioctl {h['ioctl']}", "    input:", *h["input"]]
        if "output" in h:
            out += ["    output:", *h["output"]]
        out.append(f" [user 0 (root) on {h['host']}:linux]" if longfmt else "")
        return out
    line = f"{when} [txg:{h['txg']}] {h['op']}"
    if h.get("ds") is not None:
        line += f" {h['ds']} ({h['dsid']})"
    line += f" {h['str']}"
    return [line + f" [on {h['host']}]" if longfmt else line]

