"""Planning a move or a drain: the target, send flags and received properties, the features the
target pool needs (preflight), and the journal row that starts it."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xfleet import mirror
from xfleet.core.names import pool_of, validate_dataset
from xfleet.fleet.inventory import Inventory
from xfleet.mirror import claims, jobs
from xfleet.mirror.backend import Connection, Row
from xfleet.mirror.store import inserted_id
from xfleet.ops.moves.journal import (
    ACTIVE,
    DEFAULTS,
    HALTED,
    MOVES,
    SNAP_PREFIX,
    Move,
    MoveError,
    get,
)
from xfleet.ops.moves.live import check
from xfleet.remote.transport import Transport


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


def _one(conn: Connection, sql: str, args: Sequence[Any]) -> Row | None:
    row: Row | None = conn.execute(sql, args).fetchone()
    return row


def plan_move(
    inv: Inventory,
    conn: Connection,
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
    refuse_active(conn, volume, src["node"])
    # `node || ''`: not an index column, so SQLite ranges over the origin index (the unary `+`
    # that said so is SQLite's alone)
    clones = [r[0] for r in conn.execute(
        "SELECT name FROM datasets WHERE (node || '') = ? AND origin >= ? AND origin < ?",
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
    if opts.get("live"):
        check(inv, conn, src["node"], volume, target_node)
        notes.append(f"--live: {target_node} exports the copy to the attached hosts before "
                     "the cutover; their I/O is held by ANA around the final incremental "
                     "(no cutover hook stops it)")
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


def _user_props(inv: Inventory, src: Row) -> dict[str, str]:
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


def refuse_active(conn: Connection, volume: str, node: str) -> None:
    """Refuse a second move of `volume` while one is active or halted, naming who started it
    and who runs it now (an operator on another machine, on a shared mirror)."""
    active = _one(conn, "SELECT * FROM moves WHERE volume = ? AND source_node = ? AND "
                  f"state IN ({', '.join('?' for _ in (*ACTIVE, *HALTED))})",
                  (volume, node, *ACTIVE, *HALTED))
    if active:
        who = f", started by {active['operator']}" if active["operator"] else ""
        held = (f"; run by {jobs.holder_text(active)}"
                if claims.holder(active, stale=MOVES.stale) is not None else "")
        raise MoveError(f"{volume} already has move {active['id']} ({active['state']}{who})"
                        f"{held}", hint=f"xfleet moves show {active['id']}; resume it or abort "
                        "it")


def create(inv: Inventory, conn: Connection, p: Plan,
           options: dict[str, Any] | None = None) -> Move:
    """Journal one planned move (state `planned`); refused if the volume got an active move
    meanwhile (another operator's)."""
    return create_many(inv, conn, [p], options)[0]


def create_many(inv: Inventory, conn: Connection, plans: Sequence[Plan],
                options: dict[str, Any] | None = None) -> list[Move]:
    """Journal planned moves in one write transaction: all or none. Each volume is checked
    again inside it, so of two operators racing (a drain against a drain or a move), exactly
    one gets each volume and the other is refused, naming who started the move."""
    opts = {**DEFAULTS, **(options or {})}
    now = time.time()
    ids: list[int] = []
    mirror.begin(conn, "new moves" if len(plans) > 1 else "a new move")
    try:
        for p in plans:
            refuse_active(conn, p.volume, p.source_node)
            ids.append(_insert(conn, p, opts, now))
        conn.execute("COMMIT")
    except BaseException:
        mirror.rollback(conn)
        raise
    return [get(conn, i) for i in ids]


def adopt(conn: Connection, p: Plan, received: str,
          options: dict[str, Any] | None = None) -> Move:
    """Journal a move whose base copy is already on the target, at the source's snapshot
    @`received` (a standing replica's copy, `xfleet replicate promote`): it starts in
    catchup, so only what changed since @received travels before the cutover."""
    opts = {**DEFAULTS, **(options or {})}
    now = time.time()
    mirror.begin(conn, "a move of a replica's volume")
    try:
        refuse_active(conn, p.volume, p.source_node)
        move_id = _insert(conn, p, opts, now)
        conn.execute("UPDATE moves SET state = 'catchup', received = ? WHERE id = ?",
                     (received, move_id))
        conn.execute("INSERT INTO move_log (move, at, state, message, operator) VALUES "
                     "(?, ?, 'catchup', ?, ?)", (move_id, now, f"base copy adopted: the "
                                                 f"target holds @{received}",
                                                 claims.operator()))
        conn.execute("COMMIT")
    except BaseException:
        mirror.rollback(conn)
        raise
    return get(conn, move_id)


def _insert(conn: Connection, p: Plan, opts: dict[str, Any], now: float) -> int:
    cur = conn.execute(
        "INSERT INTO moves (volume, source_node, target_node, target_volume, state, send_flags, "
        "receive_properties, verify, options, created_at, updated_at, operator, operator_reason) "
        "VALUES (?, ?, ?, ?, 'planned', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (p.volume, p.source_node, p.target_node, p.target_volume, json.dumps(p.send_flags),
         json.dumps(p.receive_properties, sort_keys=True), opts["verify"],
         json.dumps({k: v for k, v in opts.items() if v is not None}), now, now,
         claims.operator(), claims.reason()))
    move_id = inserted_id(cur)
    conn.execute("INSERT INTO move_log (move, at, state, message, operator) VALUES "
                 "(?, ?, 'planned', ?, ?)",
                 (move_id, now, f"planned: {p.volume} on {p.source_node} -> "
                  f"{p.target_node}:{p.target_volume}; " + "; ".join(p.notes), claims.operator()))
    return move_id


def plan_drain(
    inv: Inventory,
    conn: Connection,
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
