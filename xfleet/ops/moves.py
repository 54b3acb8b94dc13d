"""Volume moves: resumable, verified zfs send/receive migrations between nodes, with cutover.

A move is a durable state machine journaled in the mirror's `moves` table (docs/moves.md).
Every step is idempotent and checks the nodes' real state before acting, so a crash of xfleet
at any point, a dropped connection or a reboot of either node is resumed by `resume(id)`:

  planned -> base -> catchup -> cutover -> verify -> placed -> done
  (any) -> failed (resumable) | aborted

- base: snapshot `VOL@xfleet-move-ID-0` and send the volume's whole snapshot chain into a
  resumable receive (`receive -s`) on the target, into a volume with `volmode=none` (no device:
  nobody can use it by accident until cutover).
- catchup: incremental rounds (`send -i`) until the delta (`written@` the last snapshot) is
  under `catchup_bytes`, at most `max_rounds`.
- cutover: the source's `pre_cutover` hooks (e.g. stop I/O, unexport), a final snapshot and
  incremental, the target's device back (`volmode` as the source had it).
- verify: the final snapshot's guid equal on both sides, and a content check of the two
  volumes (sampled 1 MiB blocks by default, `full` hashes everything). Nothing is destroyed
  before this passes.
- placed: the target's `post_cutover` hooks (e.g. export), the source renamed to
  `VOL.xfleet-moved-ID`, read-only, its final snapshot held; the mirror re-synced on both
  nodes. The retired source is destroyed only by `retire(id, destroy=True)`.

Send flags, chosen deliberately: `-L` always (large blocks, consistently for the whole chain:
toggling it inside a chain corrupted data before, openzfs 6224); `-c` only when the target keeps
the source's compression (otherwise blocks travel uncompressed and the target's compression
applies: a move is a chance to apply compression policy); encrypted volumes are sent raw (`-w`:
still encrypted, as stored; the key never travels) with their key location. A plain send does
not carry properties, so `compression`, `volblocksize` (by the stream) and the mirrored user
properties are set explicitly with `receive -o`. Before the first byte, `preflight` checks the
target pool's features (large_blocks, zstd_compress, encryption, lz4_compress) against what
the volume needs.

Data goes through the xfleet host by default (`xfleet.remote.relay`: no trust between nodes needed),
in large chunks, limited by token buckets (fleet-wide and per node).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xfleet import mirror
from xfleet.core.errors import RemoteCommandError, XfleetError
from xfleet.core.names import pool_of, validate_dataset
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror import claims, jobs
from xfleet.ops.sync import sync
from xfleet.remote.programs import program
from xfleet.remote.relay import RelayResult, TokenBucket, relay
from xfleet.remote.transport import Transport, quote_command

SNAP_PREFIX = "xfleet-move-"
ACTIVE = ("planned", "base", "catchup", "cutover", "verify", "placed")
STREAMING = ("planned", "base", "catchup", "cutover")  # states that hold a stream slot
HALTED = ("failed", "paused")  # resumable: `resume` goes back to the state it stopped in
FINAL = ("done", "aborted")
HEARTBEAT = 20.0  # seconds between heartbeats of a running move
STALE = claims.STALE  # a heartbeat older than this: nobody runs the move any more
DEFAULTS: dict[str, Any] = {
    "catchup_bytes": 64 * 1024**2,  # stop catching up below this delta
    "max_rounds": 5,
    "headroom": 1.2,  # target free space needed: referenced (or volsize if thick) x headroom
    "verify": "sampled",
    "samples": 64,
    "attempts": 3,  # relay attempts per step (resumed from the receive token)
    "bwlimit": None,  # bytes/s for this move
    "direct": False,  # stream node to node (the source SSHes to the target) instead of relaying
}
# Direct mode: the source node sends to the target itself (xfleet/remote/programs/send_direct.bash).
SEND_DIRECT = program("send_direct")
Progress = Callable[["Move"], None]

# Sampled verification: the SHA-256 of each 1 MiB slice at the given MiB offsets of a device,
# in one process (xfleet/remote/programs/sample_hashes.py; a `dd | sha256sum` pair per slice
# cost two process starts each: ~10 s for 64 samples on a slow node).
SAMPLE_HASHES = program("sample_hashes")
WAIT_DEVICE = program("wait_device")


def sample_hashes_argv(device: str, offsets: Sequence[int]) -> list[str]:
    """`python3 -c sample_hashes.py DEVICE OFFSET...`: prints `SHA256 OFFSET` per 1 MiB slice
    (a slice past the end hashes what was read: nothing, or the short tail)."""
    return SAMPLE_HASHES.argv(device, *(str(o) for o in offsets))


class MoveError(XfleetError):
    """A move that cannot start or go on; the message says why and the hint what to do."""


MOVES = jobs.register(jobs.JobKind(
    "moves", "move", "xfleet moves list", frozenset((*ACTIVE, *HALTED)), stale=STALE,
    error=MoveError, missing="no move with id {id}"))


@dataclass
class Move:
    id: int
    volume: str
    source_node: str
    target_node: str
    target_volume: str
    state: str
    step: str | None = None
    snapshots: list[str] = field(default_factory=list)
    received: str | None = None  # the newest snapshot the target holds
    send_flags: list[str] = field(default_factory=list)
    receive_properties: dict[str, str] = field(default_factory=dict)
    verify: str = "sampled"
    verified: str | None = None
    bytes_total: int | None = None
    bytes_done: int = 0
    rate: float | None = None  # bytes/s of the current transfer, smoothed
    rounds: int = 0
    retired_as: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None

    @property
    def progress(self) -> float | None:
        if not self.bytes_total:
            return None
        return min(1.0, self.bytes_done / self.bytes_total)

    @property
    def eta(self) -> float | None:
        """Seconds left in the current transfer at the current rate (send size estimate)."""
        if not self.bytes_total or not self.rate or self.state not in STREAMING:
            return None
        return max(0.0, self.bytes_total - self.bytes_done) / self.rate

    def snap(self, n: int | str) -> str:
        return f"{SNAP_PREFIX}{self.id}-{n}"

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["progress"] = self.progress
        d["eta"] = self.eta
        return d


# ---------------------------------------------------------------------------------------------
# the journal


_JSON = ("snapshots", "send_flags", "receive_properties", "options")


def _from_row(r: sqlite3.Row) -> Move:
    d = dict(r)
    for k in _JSON:
        d[k] = json.loads(d[k]) if d.get(k) else ([] if k in ("snapshots", "send_flags") else {})
    for k in ("pid", "host", "heartbeat", "control"):
        d.pop(k, None)
    return Move(**d)


def get(conn: sqlite3.Connection, move_id: int) -> Move:
    return _from_row(jobs.get(conn, MOVES, move_id))


def listing(conn: sqlite3.Connection, *, active_only: bool = False) -> list[Move]:
    return [_from_row(r) for r in jobs.rows(conn, MOVES, open_only=active_only)]


def _save(conn: sqlite3.Connection, m: Move, message: str | None = None) -> None:
    m.updated_at = time.time()
    mirror.begin(conn, "a move's progress")
    conn.execute(
        "UPDATE moves SET state = ?, step = ?, snapshots = ?, received = ?, send_flags = ?, "
        "receive_properties = ?, verified = ?, bytes_total = ?, bytes_done = ?, rate = ?, "
        "rounds = ?, retired_as = ?, options = ?, error = ?, updated_at = ?, finished_at = ?, "
        "heartbeat = ? WHERE id = ?",
        (m.state, m.step, json.dumps(m.snapshots), m.received, json.dumps(m.send_flags),
         json.dumps(m.receive_properties, sort_keys=True), m.verified, m.bytes_total,
         m.bytes_done, m.rate, m.rounds, m.retired_as, json.dumps(m.options), m.error,
         m.updated_at, m.finished_at, time.time(), m.id))
    if message:
        conn.execute("INSERT INTO move_log (move, at, state, message) VALUES (?, ?, ?, ?)",
                     (m.id, time.time(), m.state, message))
    conn.execute("COMMIT")


def log(conn: sqlite3.Connection, move_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(
        "SELECT at, state, message FROM move_log WHERE move = ? ORDER BY at, rowid",
        (move_id,))]


def _claim(conn: sqlite3.Connection, m: Move) -> None:
    """Only one process drives a move: refuse if another live process on this host holds it."""
    jobs.claim(conn, MOVES, m.id, set_columns={"control": None})


# ---------------------------------------------------------------------------------------------
# planning


@dataclass
class Plan:
    volume: str
    source_node: str
    target_node: str
    target_volume: str
    send_flags: list[str]
    receive_properties: dict[str, str]
    needed_bytes: int
    target_free: int | None
    snapshots: list[str]  # the volume's existing snapshots, oldest first (carried along)
    notes: list[str]
    commands: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _one(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(sql, args).fetchone()
    return row


def plan_move(
    inv: Inventory,
    conn: sqlite3.Connection,
    volume: str,
    target: str,
    *,
    source_node: str | None = None,
    options: dict[str, Any] | None = None,
) -> Plan:
    """Preflight from the mirror (no remote command): what would be done, or a MoveError
    saying why not."""
    opts = {**DEFAULTS, **(options or {})}
    validate_dataset(volume, allow_snapshot=False)
    target_node, _, target_pool = target.partition("/")
    if target_node not in inv.hosts:
        raise MoveError(f"no node named {target_node!r} in the inventory",
                        hint="xfleet inventory show")
    rows = conn.execute("SELECT * FROM datasets WHERE name = ?" +
                        (" AND node = ?" if source_node else ""),
                        (volume, *([source_node] if source_node else []))).fetchall()
    if not rows:
        raise MoveError(f"{volume} is not in the mirror" +
                        (f" of node {source_node}" if source_node else ""),
                        hint="check the name (xfleet ls), or run xfleet sync first")
    if len(rows) > 1:
        raise MoveError(f"{volume} exists on several nodes: "
                        f"{', '.join(r['node'] for r in rows)}", hint="pass --from NODE")
    src = rows[0]
    if src["type"] != "volume":
        raise MoveError(f"{volume} is a {src['type']}; only volumes are moved")
    if src["node"] == target_node:
        raise MoveError(f"{volume} is already on {target_node}")
    active = _one(conn, "SELECT id, state FROM moves WHERE volume = ? AND source_node = ? AND "
                  f"state IN ({', '.join('?' for _ in (*ACTIVE, *HALTED))})",
                  (volume, src["node"], *ACTIVE, *HALTED))
    if active:
        raise MoveError(f"{volume} already has move {active['id']} ({active['state']})",
                        hint=f"xfleet moves resume {active['id']}, or abort it")
    clones = [r[0] for r in conn.execute(
        "SELECT name FROM datasets WHERE +node = ? AND origin >= ? AND origin < ?",
        (src["node"], volume + "@", volume + "A"))]
    if clones:
        raise MoveError(
            f"{volume} has {len(clones)} clone(s) of its snapshots: {', '.join(clones[:5])}"
            + (" ..." if len(clones) > 5 else ""),
            hint="a move would orphan them: move or promote the clones first (moving a chain "
            "of branches together is not supported yet)")
    pools = [r[0] for r in conn.execute("SELECT name FROM pools WHERE node = ? ORDER BY name",
                                        (target_node,))]
    if not target_pool:
        src_pool = pool_of(volume)
        target_pool = src_pool if src_pool in pools else (pools[0] if pools else src_pool)
    if pools and target_pool not in pools:
        raise MoveError(f"{target_node} has no pool {target_pool!r} (pools: {', '.join(pools)})")
    target_volume = target_pool + volume[len(pool_of(volume)):]
    validate_dataset(target_volume, allow_snapshot=False)
    taken = _one(conn, "SELECT type FROM datasets WHERE node = ? AND name = ?",
                 (target_node, target_volume))
    if taken:
        raise MoveError(f"{target_node} already has a {taken[0]} named {target_volume}",
                        hint="xfleet never overwrites (no receive -F): rename or destroy it "
                        "first, or move to another pool")
    thick = (src["refreservation"] or 0) > 0
    needed = int((src["volsize"] if thick else (src["used"] or 0)) * float(opts["headroom"]))
    free = _one(conn, "SELECT free FROM pools WHERE node = ? AND name = ?",
                (target_node, target_pool))
    target_free = free[0] if free else None
    if target_free is not None and target_free < needed:
        raise MoveError(
            f"{target_node}/{target_pool} has {target_free:,} bytes free; the move needs "
            f"{needed:,} ({'volsize of a thick volume' if thick else 'used'} x "
            f"{opts['headroom']} headroom)", hint="pick another target (xfleet stats)")
    compression = opts.get("compression") or src["compression"]
    flags = ["-L"]
    notes = []
    if compression == src["compression"]:
        flags.append("-c")
        notes.append(f"-c: the target keeps compression={compression}, blocks travel as stored")
    else:
        notes.append(f"no -c: blocks travel uncompressed and are recompressed with "
                     f"{compression} on the target (was {src['compression']})")
    props = {"compression": str(compression), "volmode": "none"}
    for prop, value in _user_props(inv, src).items():
        props[prop] = value
    snaps = [r[0].split("@", 1)[1] for r in conn.execute(
        "SELECT name FROM datasets WHERE node = ? AND name > ? AND name < ? AND type = "
        "'snapshot' ORDER BY createtxg", (src["node"], volume + "@", volume + "A"))
        if not r[0].split("@", 1)[1].startswith(SNAP_PREFIX)]
    if opts.get("direct"):
        notes.append(f"--direct: {src['node']} streams to {target_node} over its own SSH "
                      "(node-to-node trust needed); xfleet's bandwidth limits do not apply")
    if src["origin"]:
        notes.append(f"{volume} is a clone of {src['origin']}: the target gets an independent "
                     "full copy")
    p = Plan(volume, src["node"], target_node, target_volume, flags, props, needed,
             target_free, snaps, notes, [])
    p.commands = plan_commands(inv, p)
    return p


def plan_commands(inv: Inventory, p: Plan) -> list[str]:
    """The commands a plan runs, as printed by `--dry-run`."""
    m = Move(0, p.volume, p.source_node, p.target_node, p.target_volume, "planned",
             send_flags=p.send_flags, receive_properties=p.receive_properties)
    src, dst, vol, flags = p.source_node, p.target_node, p.volume, " ".join(p.send_flags)
    recv = " ".join(receive_argv(m))
    first = p.snapshots[0] if p.snapshots else None
    return [
        f"{src}: zfs snapshot {vol}@{m.snap(0)}",
        *([f"{src}: zfs send {flags} {vol}@{first} | {dst}: {recv}",
           f"{src}: zfs send {flags} -I @{first} {vol}@{m.snap(0)} | {dst}: {recv}"] if first
          else [f"{src}: zfs send {flags} {vol}@{m.snap(0)} | {dst}: {recv}"]),
        f"catch-up rounds: zfs send {flags} -i @PREV {vol}@{m.snap('N')} | ...",
        f"{src}: pre_cutover hooks {list(inv.hosts[src].hooks.get('pre_cutover', ()))}",
        f"{src}: zfs snapshot {vol}@{m.snap('final')}; incremental send; verify",
        f"{dst}: post_cutover hooks {list(inv.hosts[dst].hooks.get('post_cutover', ()))}",
        f"{src}: zfs rename {vol} {vol}.xfleet-moved-ID; readonly=on; hold",
    ]


def apply_preflight(inv: Inventory, p: Plan, pf: Preflight) -> Plan:
    """The plan as the nodes' answers change it (raw send, key location, notes)."""
    if pf.send_flags != p.send_flags:
        p.notes = [n for n in p.notes if not n.startswith(("-c:", "no -c:"))]
    p.send_flags, p.receive_properties = pf.send_flags, pf.receive_properties
    p.notes += pf.notes
    if pf.needed:
        p.notes.append("target pool features: " + ", ".join(
            f"{f} {pf.features.get(f, 'unsupported')}" for f in pf.needed))
    p.commands = plan_commands(inv, p)
    return p


FEATURES = ("large_blocks", "zstd_compress", "encryption", "lz4_compress")


def features_needed(volblocksize: int, compression: str, encrypted: bool) -> list[str]:
    """The pool features a target needs to receive this volume (pure)."""
    need = []
    if volblocksize > 128 * 1024:
        need.append("large_blocks")
    if compression.startswith("zstd"):
        need.append("zstd_compress")
    if compression in ("lz4", "on"):
        need.append("lz4_compress")
    if encrypted:
        need.append("encryption")
    return need


@dataclass
class Preflight:
    """What the nodes say about a planned move (read-only remote checks)."""

    send_flags: list[str]
    receive_properties: dict[str, str]
    features: dict[str, str]  # target pool feature -> state (missing: unsupported)
    needed: list[str]
    notes: list[str]


def preflight(source: Transport, target: Transport, volume: str, target_volume: str,
              send_flags: Sequence[str], receive_properties: dict[str, str]) -> Preflight:
    """Check a move against the nodes themselves: the source's encryption and block size
    against the target pool's features. Encrypted volumes switch to a raw send (`-w`: blocks
    travel as stored, still encrypted; the key never leaves the source), carrying the key's
    location. Raises MoveError when the target cannot take the volume."""
    props = dict(receive_properties)
    flags = list(send_flags)
    notes: list[str] = []
    got = dict(line.split("\t", 1) for line in source.run(
        ["zfs", "get", "-H", "-p", "-o", "property,value",
         "encryption,keylocation,volblocksize,compression", volume]
    ).stdout.splitlines() if "\t" in line)
    encrypted = got.get("encryption", "off") not in ("off", "-", "")
    if encrypted:
        flags = ["-w"]
        keyloc = got.get("keylocation", "none")
        if keyloc == "none":  # the key is its encryption root's
            root = source.run(["zfs", "get", "-H", "-o", "value", "encryptionroot",
                               volume]).stdout.strip()
            keyloc = source.run(["zfs", "get", "-H", "-o", "value", "keylocation",
                                 root]).stdout.strip()
        if keyloc.startswith(("file://", "https://", "http://")):
            props["keylocation"] = keyloc
        props.pop("compression", None)
        notes.append(f"-w: {volume} is encrypted ({got['encryption']}), sent raw: blocks stay "
                     "encrypted and compressed as stored (a raw send cannot recompress); "
                     + (f"the copy uses the same key location ({keyloc})" if "keylocation"
                        in props else "the copy's key must be loaded by hand "
                        "(keylocation=prompt)"))
    compression = got.get("compression", "off") if encrypted else \
        props.get("compression", got.get("compression", "off"))
    need = features_needed(int(got.get("volblocksize", "0") or 0), compression, encrypted)
    pool = pool_of(target_volume)
    states = dict(line.split("\t", 1) for line in target.run(
        ["zpool", "get", "-H", "-o", "property,value",
         ",".join(f"feature@{f}" for f in FEATURES), pool]).stdout.splitlines()
        if "\t" in line)
    features = {k.removeprefix("feature@"): v for k, v in states.items()}
    missing = [f for f in need if features.get(f, "unsupported") not in ("enabled", "active")]
    if missing:
        raise MoveError(
            f"pool {pool} on the target cannot take {volume}: it needs feature"
            f"{'s' if len(missing) > 1 else ''} "
            + ", ".join(f"{f} ({features.get(f, 'unsupported by its ZFS')})" for f in missing),
            hint="enable the feature (zpool set feature@NAME=enabled POOL), pick another "
            "target, or move with --compression set to an algorithm the target has")
    return Preflight(flags, props, features, need, notes)


def _user_props(inv: Inventory, src: sqlite3.Row) -> dict[str, str]:
    out = {}
    if src["tenant"] is not None:
        out[inv.tenant_property] = src["tenant"]
    if src["user_properties"]:
        out.update(json.loads(src["user_properties"]))
    return out


def receive_argv(m: Move) -> list[str]:
    """`zfs receive -s -u -o PROP=VALUE... TARGET` (resumable, never -F)."""
    argv = ["zfs", "receive", "-s", "-u"]
    for prop, value in sorted(m.receive_properties.items()):
        argv += ["-o", f"{prop}={value}"]
    return [*argv, m.target_volume]


def create(inv: Inventory, conn: sqlite3.Connection, p: Plan,
           options: dict[str, Any] | None = None) -> Move:
    opts = {**DEFAULTS, **(options or {})}
    now = time.time()
    mirror.begin(conn, "a new move")
    cur = conn.execute(
        "INSERT INTO moves (volume, source_node, target_node, target_volume, state, send_flags, "
        "receive_properties, verify, options, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, 'planned', ?, ?, ?, ?, ?, ?)",
        (p.volume, p.source_node, p.target_node, p.target_volume, json.dumps(p.send_flags),
         json.dumps(p.receive_properties, sort_keys=True), opts["verify"],
         json.dumps({k: v for k, v in opts.items() if v is not None}), now, now))
    move_id = cur.lastrowid
    assert move_id is not None
    conn.execute("INSERT INTO move_log (move, at, state, message) VALUES (?, ?, 'planned', ?)",
                 (move_id, now, f"planned: {p.volume} on {p.source_node} -> "
                  f"{p.target_node}:{p.target_volume}; " + "; ".join(p.notes)))
    conn.execute("COMMIT")
    return get(conn, move_id)


def plan_drain(
    inv: Inventory,
    conn: sqlite3.Connection,
    node: str,
    targets: Sequence[str] = (),
    *,
    options: dict[str, Any] | None = None,
) -> tuple[list[Plan], list[tuple[str, str]]]:
    """Plans moving every volume off `node`, balancing by free space: the biggest volumes
    first, each to the target pool with the most room left (after the moves already
    planned). Returns (plans, [(volume, why it cannot move)])."""
    if node not in inv.hosts:
        raise MoveError(f"no node named {node!r} in the inventory")
    names = list(targets) or [h for h in inv.hosts if h != node]
    if node in names:
        raise MoveError(f"{node} cannot be its own drain target")
    room: dict[tuple[str, str], int] = {
        (r[0], r[1]): r[2] or 0 for r in conn.execute(
            f"SELECT node, name, free FROM pools WHERE node IN ({', '.join('?' for _ in names)})",
            names)}
    if not room:
        raise MoveError("no target pool known in the mirror", hint="run xfleet sync first")
    plans: list[Plan] = []
    refused: list[tuple[str, str]] = []
    vols = conn.execute(
        "SELECT name FROM datasets WHERE node = ? AND type = 'volume' AND name NOT LIKE "
        "'%.xfleet-moved-%' ORDER BY coalesce(used, 0) DESC, name", (node,)).fetchall()
    for (vol,) in vols:
        order = sorted(room, key=lambda k: -room[k])
        why = "no target has room"
        for tnode, tpool in order:
            try:
                p = plan_move(inv, conn, vol, f"{tnode}/{tpool}", source_node=node,
                              options=options)
            except MoveError as exc:
                why = exc.message
                continue
            if p.needed_bytes > room[(tnode, tpool)]:
                continue
            room[(tnode, tpool)] -= p.needed_bytes
            plans.append(p)
            break
        else:
            refused.append((vol, why))
    return plans, refused


# ---------------------------------------------------------------------------------------------
# running


class StreamSlots:
    """Caps concurrent move streams per node (the node's `max_streams`). Counts this process's
    moves and the moves other xfleet processes are running (live heartbeat in the mirror)."""

    def __init__(self, inv: Inventory):
        self.inv = inv
        self._held: dict[str, int] = {}
        self._cond = threading.Condition()

    def acquire(self, conn: sqlite3.Connection, m: Move, halt: threading.Event) -> bool:
        """Wait until both of the move's nodes have a free stream; False if halted first."""
        nodes = (m.source_node, m.target_node)
        waiting: list[str] | None = None
        while not halt.is_set():
            with self._cond:
                elsewhere = _streams_elsewhere(conn, m.id)
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
                _save(conn, m, m.step)
            with self._cond:
                self._cond.wait(1.0)
        return False

    def release(self, m: Move) -> None:
        with self._cond:
            for n in (m.source_node, m.target_node):
                self._held[n] = max(0, self._held.get(n, 0) - 1)
            self._cond.notify_all()


def _streams_elsewhere(conn: sqlite3.Connection, move_id: int) -> dict[str, int]:
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


def pause(mirror_path: Path, move_id: int, *, wait: float = 60.0) -> Move:
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
        _save(conn, m, "paused (no process was running it)")
        return m
    finally:
        conn.close()


@dataclass
class Runner:
    """Drives moves to their end (or to a failure or pause that `resume` continues). One
    Runner may run many moves at once from several threads (a drain): the stream slots and
    the fleet-wide and per-node bandwidth limits are shared by all of them."""

    inv: Inventory
    mirror_path: Path
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
            _claim(conn, m)
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
                    _save(conn, m, "paused by request")
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
    def _failed(conn: sqlite3.Connection, m: Move, error: str) -> None:
        """Journal `m` as failed with `error`; `resume` continues in the state that failed."""
        m.error = error
        m.step = f"failed in {m.state}"
        if m.state not in HALTED:
            m.options["failed_state"] = m.state
        m.state, m.rate = "failed", None
        _save(conn, m, f"failed: {m.error}")

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
    def _pause_requested(conn: sqlite3.Connection, move_id: int) -> bool:
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
        snap = m.snap(n)
        res = self._t(m.source_node).run(["zfs", "snapshot", f"{m.volume}@{snap}"], check=False)
        # taken by an earlier attempt of this move (one round trip in the usual case)
        if not res.ok and not self._has(m.source_node, f"{m.volume}@{snap}"):
            raise RemoteCommandError(m.source_node, res.argv, res.exit_status, res.stderr)
        if snap not in m.snapshots:
            m.snapshots.append(snap)
        return snap

    def _send(self, conn: sqlite3.Connection, m: Move, snap: str, base: str | None,
              intermediates: bool = False) -> None:
        """Bring `snap` to the target: resume a partial receive from its token, or send
        (full when `base` is None, else incremental from @base). Retries from the token."""
        attempts = int(m.options.get("attempts", DEFAULTS["attempts"]))
        for attempt in range(1, attempts + 1):
            has, token = self._target_state(m, snap)
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
            self._estimate(m, send)
            _save(conn, m, what)
            start = m.bytes_done
            res = self._relay(m, send, receive_argv(m) if not token or token == "-" else
                              ["zfs", "receive", "-s", "-u", m.target_volume], start, conn)
            if res.ok and self._has(m.target_node, f"{m.target_volume}@{snap}"):
                m.received = snap
                _save(conn, m, f"received {snap}: {res.bytes:,} bytes in {res.seconds:.1f}s")
                return
            if res.stopped:
                raise MoveError("stopped", hint=f"xfleet moves resume {m.id}")
            reason = (res.dst_stderr or res.src_stderr or "the stream ended early").strip()
            _save(conn, m, f"attempt {attempt}: {reason[:500]}")
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
                _save(conn, m, "discarded a stale receive token (receive -A)")
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
               conn: sqlite3.Connection) -> RelayResult:
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
                _save(conn, m)

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
    def _base(self, conn: sqlite3.Connection, m: Move) -> None:
        if m.state == "planned":
            if self._has(m.target_node, m.target_volume):  # not ours: nothing was sent yet
                raise MoveError(f"{m.target_node} already has {m.target_volume}",
                                hint="xfleet never overwrites: rename or destroy it first")
            pf = preflight(self._t(m.source_node), self._t(m.target_node), m.volume,
                           m.target_volume, m.send_flags, m.receive_properties)
            m.send_flags, m.receive_properties = pf.send_flags, pf.receive_properties
            _save(conn, m, "preflight: target pool has "
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
            _save(conn, m, "base copy")
        existing = [n for n in self._source_snapshots(m) if not n.startswith(SNAP_PREFIX)]
        snap = self._snapshot(m, 0)
        if existing:
            first = existing[0]
            self._send(conn, m, first, None)
            self._send(conn, m, snap, first, intermediates=True)
        else:
            self._send(conn, m, snap, None)
        m.state = "catchup"
        _save(conn, m, "base copy received")

    def _source_snapshots(self, m: Move) -> list[str]:
        out = self._t(m.source_node).run(
            ["zfs", "list", "-H", "-p", "-o", "name,createtxg", "-t", "snapshot", "-d", "1",
             m.volume]).stdout
        rows = [line.split("\t") for line in out.splitlines() if "@" in line]
        return [n.split("@", 1)[1] for n, _ in sorted(rows, key=lambda r: int(r[1]))]

    def _catchup(self, conn: sqlite3.Connection, m: Move) -> None:
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
        _save(conn, m, f"caught up after {m.rounds} round(s)")

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

    def _cutover(self, conn: sqlite3.Connection, m: Move) -> None:
        if "final" not in [s.rsplit("-", 1)[-1] for s in m.snapshots]:
            self._hooks(m, m.source_node, "pre_cutover")
            _save(conn, m, "pre_cutover hooks done")
        final = self._snapshot(m, "final")
        m.bytes_total = None
        self._send(conn, m, final, m.received)
        if "-w" in m.send_flags and "keylocation" in m.receive_properties and \
                self._get(m.target_node, m.target_volume, "keystatus") == "unavailable":
            self._t(m.target_node).run(["zfs", "load-key", m.target_volume])
        volmode = self._get(m.source_node, m.volume, "volmode") or "default"
        self._t(m.target_node).run(["zfs", "set", f"volmode={volmode}", m.target_volume])
        m.state = "verify"
        _save(conn, m, f"final snapshot {final} received; target device enabled")

    def _verify(self, conn: sqlite3.Connection, m: Move) -> None:
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
            _save(conn, m, f"verified: {m.verified}")
            return
        volsize = int(src_p.get((m.volume, "volsize")) or 0)
        mode = m.verify
        # both sides at once: each reads its own disks, so the check takes the time of one
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="xfleet-verify") as ex:
            src_f = ex.submit(self._hashes, m.source_node, m.volume, volsize, mode, m.id)
            dst_f = ex.submit(self._hashes, m.target_node, m.target_volume, volsize, mode,
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
        _save(conn, m, f"verified: {m.verified}")

    def _hashes(self, node: str, volume: str, volsize: int, mode: str, seed: int) -> list[str]:
        dev = "/dev/zvol/" + volume.replace(" ", "+")
        self._t(node).run(WAIT_DEVICE.argv(dev))
        if mode == "full":
            out = self._t(node).run(["sha256sum", dev], timeout=3600).stdout
            return [out.split()[0]]
        mib = max(1, volsize // 2**20)
        rnd = random.Random(seed)
        offsets = sorted({0, mib - 1, *(rnd.randrange(mib) for _ in range(DEFAULTS["samples"]))})
        out = self._t(node).run(sample_hashes_argv(dev, offsets)).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def _place(self, conn: sqlite3.Connection, m: Move) -> None:
        self._hooks(m, m.target_node, "post_cutover")
        retired = f"{m.volume}.xfleet-moved-{m.id}"
        src = self._t(m.source_node)
        listed = src.run(["zfs", "list", "-H", "-o", "name", m.volume, retired],
                         check=False).stdout.split("\n")  # exits 1 when one is missing
        if m.volume in listed:
            src.run(["zfs", "rename", m.volume, retired])
        if m.volume in listed or retired in listed:
            src.run(["zfs", "set", "readonly=on", retired])
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
        _save(conn, m, f"done: {m.target_node}:{m.target_volume}; source kept as {retired} "
                       "(read-only, held) until `xfleet moves retire`")

        sync(self.inv, self.mirror_path, [m.source_node, m.target_node],
             connections=self.conns)

    def _resume_halted(self, conn: sqlite3.Connection, m: Move) -> None:
        back = m.options.pop("failed_state", None) or "base"
        m.state = back if back in ACTIVE else "base"
        m.step = None
        _save(conn, m, f"resuming in {m.state}")


# ---------------------------------------------------------------------------------------------
# abort and retire


def abort(inv: Inventory, mirror_path: Path, conns: Connections, move_id: int) -> Move:
    """Stop a move before its cutover and remove what it created (the partial or complete copy
    on the target, its snapshots on the source). The source volume is untouched. After the
    cutover a move cannot be aborted (its copy is the volume now): it is finished instead."""
    conn = mirror.connect(mirror_path)
    try:
        m = get(conn, move_id)
        if m.state in FINAL:
            return m
        stage = m.options.get("failed_state", m.state) if m.state in HALTED else m.state
        if stage in ("verify", "placed"):
            raise MoveError(f"move {m.id} is past its cutover ({stage})",
                            hint=f"xfleet moves resume {m.id} finishes it")
        _claim(conn, m)
        t = conns.get(m.target_node)
        token = t.run(["zfs", "get", "-H", "-o", "value", "receive_resume_token",
                       m.target_volume], check=False)
        if token.ok and token.stdout.strip() not in ("", "-"):
            t.run(["zfs", "receive", "-A", m.target_volume], check=False)
        exists = t.run(["zfs", "list", "-H", "-o", "name", m.target_volume], check=False).ok
        if exists:
            # only a copy this move made: its snapshots are all ours
            snaps = t.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-d", "1",
                           m.target_volume]).stdout.split("\n")
            ours = {f"{m.target_volume}@{s}" for s in m.snapshots}
            carried = _carried(conns, m)
            foreign = [s for s in snaps if s and s not in ours and
                       s.split("@", 1)[1] not in carried]
            if foreign:
                raise MoveError(f"{m.target_node}:{m.target_volume} has snapshots this move "
                                f"did not make ({', '.join(foreign[:3])}); not destroying it")
            t.run(["zfs", "destroy", "-r", m.target_volume])
        s = conns.get(m.source_node)
        for snap in m.snapshots:
            s.run(["zfs", "destroy", f"{m.volume}@{snap}"], check=False)
        m.state = "aborted"
        m.finished_at = time.time()
        _save(conn, m, "aborted: target copy and move snapshots removed; source untouched")
        return m
    finally:
        conn.close()


def _carried(conns: Connections, m: Move) -> set[str]:
    out = conns.get(m.source_node).run(
        ["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-d", "1", m.volume],
        check=False).stdout
    return {line.split("@", 1)[1] for line in out.splitlines() if "@" in line}


def retire(inv: Inventory, mirror_path: Path, conns: Connections, move_id: int) -> Move:
    """Destroy a finished move's retired source (the caller has the user's confirmation)."""
    conn = mirror.connect(mirror_path)
    try:
        m = get(conn, move_id)
        if m.state != "done" or not m.retired_as:
            raise MoveError(f"move {m.id} is {m.state}: only a finished move's source can be "
                            "retired")
        t = conns.get(m.source_node)
        if t.run(["zfs", "list", "-H", "-o", "name", m.retired_as], check=False).ok:
            t.run(["zfs", "release", f"xfleet-move-{m.id}",
                   f"{m.retired_as}@{m.snap('final')}"], check=False)
            t.run(["zfs", "destroy", "-r", m.retired_as])
        m.step = "source destroyed"
        _save(conn, m, f"retired: {m.retired_as} destroyed")

        sync(inv, mirror_path, [m.source_node], connections=conns)
        return m
    finally:
        conn.close()
