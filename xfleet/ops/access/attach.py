"""`attach` / `detach` / `attachments` (docs/access.md): which initiator may connect to which
volume's subsystem.

A batch (one request, or thousands from a file) goes in three steps:

1. **plan**, in one short mirror transaction: every request is resolved (the volume in the
   mirror, the initiator in the inventory with its host NQN read); any input error refuses the
   whole batch before anything changes. The one-writer rule is checked against the volume's
   attachments (a volume has one attached host unless every attachment of it is shared), the
   new rows written `attaching` / `detaching`; a refusal is journaled as such.
2. **apply**, per node, in parallel (at most the inventory's `parallel`), three remote
   commands whatever the batch's size: the target's export listing (each volume's subsystem
   NQN, found by its device `/dev/zvol/VOLUME`: never recomputed), the volumes' `xfleet:hosts`
   property (remote/programs/zvol_hosts.py: the durable copy a target restart re-applies) and
   the target's allowed hosts (the driver's `set_hosts`).
3. **finish**, in one short transaction: rows `attached` or deleted; a failed item's row
   goes back to what it was, with the error; every item journaled in `attachment_log`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from xfleet import mirror
from xfleet.core.access import MAX_VALUE, hosts_value
from xfleet.core.errors import UsageError, XfleetError
from xfleet.core.identity import HOSTS_PROPERTY
from xfleet.core.names import validate_dataset
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror import claims, store
from xfleet.mirror.backend import Connection, Location
from xfleet.ops.access.initiators import hostnqns, unknown
from xfleet.ops.target import Export, driver_for
from xfleet.remote.programs import program
from xfleet.remote.transport import Transport

ACTIONS = ("attach", "detach")
SHARED = "shared"  # the optional third word of a --from line
CHUNK = 500  # names per IN (...) query
MAX_PROBLEMS = 20  # input errors listed in one refusal
# sets the xfleet:hosts property of many volumes in one command (remote/programs/zvol_hosts.py)
ZVOL_HOSTS = program("zvol_hosts")


@dataclass(frozen=True)
class Request:
    """One line of a batch: VOLUME HOST [shared]; `where` is FILE:LINE for --from."""

    volume: str
    host: str
    shared: bool = False
    where: str | None = None


def parse_requests(text: str, source: str = "-", *, shared: bool = False) -> list[Request]:
    """`VOLUME HOST [shared]` lines (blank lines and `#` comments skipped; a volume name may
    hold blanks: the host and the flag are its last words). `shared` marks every line."""
    out: list[Request] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.rsplit(None, 2)
        flag = len(words) == 3 and words[2] == SHARED
        volume, host = (words[0], words[1]) if flag else (
            line.rsplit(None, 1) if len(words) >= 2 else (line, ""))
        if not host:
            raise UsageError(f"expected VOLUME HOST [{SHARED}], got {line[:80]!r}",
                             where=f"{source}:{n}", hint="one request a line, e.g. "
                             "tank/db/a1 db-a-01")
        out.append(Request(volume.strip(), host, shared or flag, f"{source}:{n}"))
    return out


@dataclass
class Item:
    """One request's outcome: `ok`, `unchanged`, `refused` or `failed`, and why."""

    action: str
    node: str
    volume: str
    initiator: str
    hostnqn: str
    shared: bool = False
    nqn: str | None = None
    outcome: str = "pending"
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "node": self.node, "volume": self.volume,
                "initiator": self.initiator, "hostnqn": self.hostnqn, "shared": self.shared,
                "nqn": self.nqn, "outcome": self.outcome, "message": self.message}


@dataclass
class Result:
    action: str
    batch: str
    items: list[Item] = field(default_factory=list)
    commands: dict[str, int] = field(default_factory=dict)  # remote commands per node

    @property
    def ok(self) -> bool:
        return all(i.outcome in ("ok", "unchanged") for i in self.items)

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in ("ok", "unchanged", "refused", "failed")}
        for i in self.items:
            out[i.outcome] = out.get(i.outcome, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "action": self.action, "batch": self.batch,
                "counts": self.counts(), "commands": self.commands,
                "items": [i.to_dict() for i in self.items]}


@dataclass
class _Att:
    """An attachment row as the plan sees it."""

    state: str
    shared: bool
    hostnqn: str


# ---------------------------------------------------------------------------------------------
# step 1: resolve and plan


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def _volumes(conn: Connection, names: Sequence[str], node: str | None
             ) -> dict[str, list[tuple[str, str]]]:
    """{name: [(node, type)]} of the mirror's datasets called `names`."""
    out: dict[str, list[tuple[str, str]]] = {}
    uniq = sorted(set(names))
    for part in _chunks(uniq):
        sql = (f"SELECT node, name, type FROM datasets WHERE name IN "
               f"({','.join('?' * len(part))})" + (" AND node = ?" if node else ""))
        for r in conn.execute(sql, (*part, *([node] if node else []))):
            out.setdefault(r["name"], []).append((r["node"], r["type"]))
    return out


def _resolve(inv: Inventory, conn: Connection, action: str, requests: Sequence[Request],
             node: str | None) -> list[Item]:
    """Every request as an Item, or one UsageError listing the problems (nothing changed)."""
    if not requests:
        raise UsageError(f"nothing to {action}", hint="give VOLUME HOST, or --from FILE")
    if node is not None and node not in inv.hosts:
        raise UsageError(f"no node named {node!r} in the inventory", where=str(inv.path))
    problems: list[tuple[str | None, str]] = []
    for r in requests:
        try:
            validate_dataset(r.volume, allow_snapshot=False)
        except XfleetError as exc:
            problems.append((r.where, exc.message))
    if problems:
        _refuse(action, problems, len(requests))
    found = _volumes(conn, [r.volume for r in requests], node)
    nqns = hostnqns(conn)
    items: list[Item] = []
    for r in requests:
        if r.host not in inv.initiators:
            e = unknown(inv, r.host)
            problems.append((r.where, e.message + (f" ({e.hint})" if e.hint and
                                                   e.hint.startswith("did") else "")))
            continue
        if r.host not in nqns:
            problems.append((r.where, f"the host NQN of {r.host} was never read "
                             f"(xfleet initiators --read {r.host})"))
            continue
        rows = found.get(r.volume, [])
        if not rows and action == "detach":
            rows = [(n, "volume") for n in _attached_nodes(conn, r.volume, node)]
        if not rows:
            problems.append((r.where, f"{r.volume} is not in the mirror"
                             + (f" of {node}" if node else "") + " (check the name: xfleet "
                             "ls; or xfleet sync)"))
            continue
        if len(rows) > 1:
            problems.append((r.where, f"{r.volume} exists on several nodes: "
                             f"{', '.join(sorted(n for n, _ in rows))} (pass --node NODE)"))
            continue
        (vnode, vtype), = rows
        if vtype != "volume":
            problems.append((r.where, f"{r.volume} is a {vtype}, not a volume"))
            continue
        items.append(Item(action, vnode, r.volume, r.host, nqns[r.host], r.shared))
    if problems:
        _refuse(action, problems, len(requests))
    return items


def _attached_nodes(conn: Connection, volume: str, node: str | None) -> list[str]:
    """The nodes where `volume` has attachments (a destroyed volume can still be detached)."""
    return [r["node"] for r in conn.execute(
        "SELECT DISTINCT node FROM attachments WHERE volume = ?"
        + (" AND node = ?" if node else ""), (volume, *([node] if node else [])))]


def _refuse(action: str, problems: list[tuple[str | None, str]], total: int) -> None:
    shown = "; ".join(f"{w}: {m}" if w else m for w, m in problems[:MAX_PROBLEMS])
    more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
    raise UsageError(f"{shown}{more}" if total == 1 else
                     f"{len(problems)} of {total} request(s) cannot be done, nothing was "
                     f"changed: {shown}{more}", where=problems[0][0],
                     hint=f"fix them and {action} again; initiators: xfleet initiators; "
                     "volumes: xfleet ls --where type=volume")


def _load(conn: Connection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, _Att]]:
    """The current attachments of the (node, volume) pairs `keys`."""
    out: dict[tuple[str, str], dict[str, _Att]] = {k: {} for k in keys}
    by_node: dict[str, list[str]] = {}
    for n, v in keys:
        by_node.setdefault(n, []).append(v)
    for n, vols in by_node.items():
        for part in _chunks(sorted(vols)):
            for r in conn.execute(
                    "SELECT volume, initiator, hostnqn, shared, state FROM attachments "
                    f"WHERE node = ? AND volume IN ({','.join('?' * len(part))})", (n, *part)):
                out[(n, r["volume"])][r["initiator"]] = _Att(r["state"], bool(r["shared"]),
                                                             r["hostnqn"])
    return out


def _plan(conn: Connection, action: str, items: list[Item], batch: str,
          ) -> tuple[dict[tuple[str, str], list[str]], dict[tuple[str, str, str], _Att | None]]:
    """Check the one-writer rule and write the intent (in the caller's transaction). Returns
    each touched volume's hosts after the batch, and each changed row's previous state."""
    now, who, why = time.time(), claims.operator(), claims.reason()
    current = _load(conn, {(i.node, i.volume) for i in items})
    prev: dict[tuple[str, str, str], _Att | None] = {}
    touched: set[tuple[str, str]] = set()
    for it in items:
        cur = current[(it.node, it.volume)]
        have = cur.get(it.initiator)
        if action == "attach":
            others = {k: a for k, a in cur.items() if k != it.initiator}
            if others and not (it.shared and all(a.shared for a in others.values())):
                names = ", ".join(f"{k}{' (shared)' if a.shared else ''}"
                                  for k, a in sorted(others.items()))
                it.outcome = "refused"
                it.message = (f"{it.volume} on {it.node} is attached to {names}: a second "
                              "writer is refused; detach it first, or attach every host of "
                              "the volume with --shared if it is meant to be shared")
                continue
            if have is not None and have.state == "attached" and have.shared == it.shared \
                    and have.hostnqn == it.hostnqn:
                it.outcome, it.message = "unchanged", "already attached (applied again)"
            prev.setdefault((it.node, it.volume, it.initiator), have)
            cur[it.initiator] = _Att("attaching", it.shared, it.hostnqn)
            if len(hosts_value(a.hostnqn for a in cur.values())) > MAX_VALUE:
                cur.pop(it.initiator)
                it.outcome, it.message = "refused", f"{it.volume}: too many hosts for one " \
                    f"volume (the {HOSTS_PROPERTY} property holds at most {MAX_VALUE} bytes)"
                continue
        else:
            if have is None:
                it.outcome, it.message = "unchanged", "not attached"
                continue
            it.shared = have.shared
            prev.setdefault((it.node, it.volume, it.initiator), have)
            cur[it.initiator] = _Att("detaching", have.shared, have.hostnqn)
        touched.add((it.node, it.volume))
    live = [i for i in items if i.outcome in ("pending", "unchanged")
            and (i.node, i.volume, i.initiator) in prev]
    if action == "attach":
        conn.executemany(
            "INSERT INTO attachments (node, volume, initiator, hostnqn, shared, state, batch, "
            "operator, operator_reason, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, 'attaching', ?, ?, ?, ?, ?) "
            "ON CONFLICT (node, volume, initiator) DO UPDATE SET hostnqn = excluded.hostnqn, "
            "shared = excluded.shared, state = 'attaching', batch = excluded.batch, "
            "operator = excluded.operator, operator_reason = excluded.operator_reason, "
            "updated_at = excluded.updated_at",
            [(i.node, i.volume, i.initiator, i.hostnqn, int(i.shared), batch, who, why, now,
              now) for i in live])
    else:
        conn.executemany(
            "UPDATE attachments SET state = 'detaching', batch = ?, operator = ?, "
            "operator_reason = ?, updated_at = ? WHERE node = ? AND volume = ? AND initiator = ?",
            [(batch, who, why, now, i.node, i.volume, i.initiator) for i in live])
    _log(conn, batch, [i for i in items if i.outcome == "refused"
                       or (action == "detach" and i.outcome == "unchanged")], now)
    desired = {k: sorted({a.hostnqn for a in current[k].values() if a.state != "detaching"})
               for k in touched}
    return desired, prev


def _log(conn: Connection, batch: str, items: Sequence[Item], at: float) -> None:
    who, why = claims.operator(), claims.reason()
    conn.executemany(
        "INSERT INTO attachment_log (at, batch, action, node, volume, initiator, hostnqn, nqn, "
        "shared, outcome, message, operator, operator_reason) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(at, batch, i.action, i.node, i.volume, i.initiator, i.hostnqn, i.nqn, int(i.shared),
          i.outcome, i.message or None, who, why) for i in items])


# ---------------------------------------------------------------------------------------------
# step 2: apply on each node


def hosts_lines(want: dict[str, list[str]]) -> bytes:
    """zvol_hosts.py's stdin: VOLUME<TAB>VALUE lines. The names were validated when the batch
    was resolved; a tab or a line break, which would split a line, is refused here again."""
    bad = [v for v in want if "\t" in v or "\n" in v or "\r" in v]
    if bad:
        raise UsageError(f"not a volume name: {bad[0]!r}")
    return "".join(f"{v}\t{hosts_value(h)}\n" for v, h in sorted(want.items())).encode()


def parse_property_errors(text: str) -> dict[str, str]:
    """zvol_hosts.py's output -> {volume: error} of the volumes it could not set."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0] == "ERR":
            out[parts[1]] = parts[2].strip() if len(parts) > 2 else "failed"
    return out


def exports_of(node: str, driver_exports: Iterator[Export], volumes: set[str] | None = None
               ) -> dict[str, Export]:
    """{volume: its export} from a listing (only `volumes` when given; the first namespace
    when a volume is exported twice)."""
    out: dict[str, Export] = {}
    for e in driver_exports:
        v = e.volume
        if v is not None and (volumes is None or v in volumes) and v not in out:
            out[v] = e
    return out


def set_node_hosts(inv: Inventory, node: str, t: Transport, want: dict[str, list[str]],
                   *, missing_ok: bool = False) -> dict[str, tuple[str | None, str | None]]:
    """Give each volume of `want` on `node` exactly its hosts: the property, then the target.
    Three remote commands. Returns {volume: (subsystem nqn, error or None)}; a volume the
    target does not export is an error, or (None, None) with `missing_ok` (a detach: no host
    can reach it)."""
    host = inv.hosts.get(node)
    if host is None:
        raise UsageError(f"{node} is in the mirror but no longer in the inventory")
    drv = driver_for(node, t, host.target)
    found = exports_of(node, drv.iter_exports(), set(want))
    out: dict[str, tuple[str | None, str | None]] = {
        v: (None, None if missing_ok else f"the target on {node} has no export for {v}")
        for v in want if v not in found}
    todo = {v: h for v, h in want.items() if v in found}
    if not todo:
        return out
    res = t.run(ZVOL_HOSTS.argv(HOSTS_PROPERTY), stdin=hosts_lines(todo), check=False)
    errs = parse_property_errors(res.stdout)
    if res.exit_status != 0:
        msg = " ".join(res.stderr.split())[:300] or f"exit status {res.exit_status}"
        errs = {v: f"setting {HOSTS_PROPERTY} failed: {msg}" for v in todo}
    for v, e in errs.items():
        if v in todo:
            out[v] = (found[v].nqn, f"{HOSTS_PROPERTY} not set: {e}")
    hosts = {found[v].nqn: h for v, h in todo.items() if v not in errs}
    got = drv.set_hosts(hosts)
    for v in todo:
        nqn = found[v].nqn
        if v not in errs:
            out[v] = (nqn, f"target: {got.failed[nqn]}" if nqn in got.failed else None)
    return out


# ---------------------------------------------------------------------------------------------
# the whole batch


def change(inv: Inventory, where: Location, conns: Connections, action: str,
           requests: Sequence[Request], *, node: str | None = None) -> Result:
    """Attach or detach every request (docs/access.md). Input errors raise UsageError before
    anything changes; refusals and per-volume failures are in the Result's items."""
    if action not in ACTIONS:
        raise ValueError(action)
    batch = uuid.uuid4().hex[:12]
    result = Result(action, batch)
    conn = mirror.connect(where)
    try:
        items = _resolve(inv, conn, action, requests, node)
        result.items = items
        with store.transaction(conn, f"the {action} of {len(items)} volume(s)"):
            desired, prev = _plan(conn, action, items, batch)
        by_node: dict[str, dict[str, list[str]]] = {}
        for (n, v), hosts in desired.items():
            by_node.setdefault(n, {})[v] = hosts
        before = {n: conns.commands(n) for n in by_node}
        done = conns.each(sorted(by_node), lambda n, t: set_node_hosts(
            inv, n, t, by_node[n], missing_ok=action == "detach"), parallel=inv.parallel)
        outcome: dict[tuple[str, str], tuple[str | None, str | None]] = {}
        for r in done:
            for v in by_node[r.node]:
                outcome[(r.node, v)] = (r.value or {}).get(v, (None, None)) if r.ok else \
                    (None, r.error.message if r.error else "failed")
            result.commands[r.node] = conns.commands(r.node) - before[r.node]
        with store.transaction(conn, f"the outcome of the {action} of {len(items)} volume(s)"):
            _finish(conn, action, items, prev, outcome, batch)
    finally:
        conn.close()
    return result


def _finish(conn: Connection, action: str, items: list[Item],
            prev: dict[tuple[str, str, str], _Att | None],
            outcome: dict[tuple[str, str], tuple[str | None, str | None]], batch: str) -> None:
    now = time.time()
    settled: list[Item] = []
    for it in items:
        key = (it.node, it.volume, it.initiator)
        if key not in prev or it.outcome == "refused":
            continue
        nqn, err = outcome.get((it.node, it.volume), (None, "not applied"))
        it.nqn = nqn
        if err:
            it.outcome, it.message = "failed", err
        elif it.outcome == "pending":
            it.outcome = "ok"
            if nqn is None:
                it.message = f"no export of {it.volume} on {it.node}: nothing to take off"
        settled.append(it)
    ok = [i for i in settled if i.outcome != "failed"]
    bad = [i for i in settled if i.outcome == "failed"]
    if action == "attach":
        conn.executemany(
            "UPDATE attachments SET state = 'attached', nqn = ?, error = NULL, updated_at = ? "
            "WHERE node = ? AND volume = ? AND initiator = ? AND batch = ?",
            [(i.nqn, now, i.node, i.volume, i.initiator, batch) for i in ok])
    else:
        conn.executemany(
            "DELETE FROM attachments WHERE node = ? AND volume = ? AND initiator = ? "
            "AND batch = ?", [(i.node, i.volume, i.initiator, batch) for i in ok])
    gone = [i for i in bad if prev[(i.node, i.volume, i.initiator)] is None]
    back = [(i, p) for i in bad if (p := prev[(i.node, i.volume, i.initiator)]) is not None]
    conn.executemany(
        "DELETE FROM attachments WHERE node = ? AND volume = ? AND initiator = ? AND batch = ?",
        [(i.node, i.volume, i.initiator, batch) for i in gone])
    conn.executemany(
        "UPDATE attachments SET state = ?, shared = ?, hostnqn = ?, error = ?, updated_at = ? "
        "WHERE node = ? AND volume = ? AND initiator = ? AND batch = ?",
        [("attached", int(p.shared), p.hostnqn, i.message, now, i.node, i.volume,
          i.initiator, batch) for i, p in back])
    _log(conn, batch, settled, now)


# ---------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class Allowed:
    """An initiator a volume lets in: its name and the host NQN it was attached with."""

    initiator: str
    hostnqn: str


def allowed(conn: Connection, node: str, volume: str) -> list[Allowed]:
    """The hosts `volume` on `node` should let in: its attachments except those being
    detached (what an attach batch plans for the target), by initiator name. The live
    cutover exports the copy to them; a promotion without the source sets them first."""
    if not store.has_table(conn, "attachments"):
        return []
    rows = conn.execute("SELECT initiator, hostnqn FROM attachments WHERE node = ? AND "
                        "volume = ? AND state != 'detaching' ORDER BY initiator",
                        (node, volume))
    return [Allowed(str(r[0]), str(r[1])) for r in rows]


def attachments(conn: Connection, *, node: str | None = None, initiator: str | None = None,
                volume: str | None = None, limit: int | None = None
                ) -> Iterator[dict[str, Any]]:
    """The mirror's attachments (every column), by node, volume, initiator."""
    if not store.has_table(conn, "attachments"):
        return
    conds, args = [], []
    for col, val in (("node", node), ("initiator", initiator), ("volume", volume)):
        if val is not None:
            conds.append(f"{col} = ?")
            args.append(val)
    sql = ("SELECT node, volume, initiator, hostnqn, nqn, shared, state, operator, "
           "operator_reason, error, created_at, updated_at FROM attachments"
           + (" WHERE " + " AND ".join(conds) if conds else "")
           + " ORDER BY node, volume, initiator" + (f" LIMIT {int(limit)}" if limit else ""))
    for r in conn.execute(sql, args):
        d = dict(r)
        d["shared"] = bool(d["shared"])
        yield d


def log(conn: Connection, *, volume: str | None = None, limit: int = 50
        ) -> list[dict[str, Any]]:
    """The newest `limit` lines of attachment_log (of one volume), newest first."""
    if not store.has_table(conn, "attachment_log"):
        return []
    rows = conn.execute(
        "SELECT at, batch, action, node, volume, initiator, hostnqn, nqn, shared, outcome, "
        "message, operator, operator_reason FROM attachment_log"
        + (" WHERE volume = ?" if volume else "") + " ORDER BY id DESC LIMIT ?",
        (*([volume] if volume else []), int(limit))).fetchall()
    return [dict(r) for r in rows]


def follow_move(conn: Connection, source_node: str, volume: str, target_node: str,
                target_volume: str, move_id: int, *, batch: str | None = None,
                why: str | None = None) -> list[str]:
    """A moved volume's attachments go with it (moves' last step): its rows name the target
    node and volume, their subsystem NQN is read again by the next attach or audit, and each is
    journaled as `moved`. The allowed hosts themselves travel in the volume's `xfleet:hosts`
    property (received with the copy); the mover then applies them on the target node's
    target (set_node_hosts). Returns the host NQNs of the attachments that moved. A
    promotion without its source says so in `batch` and `why` (its `move_id` is 0)."""
    rows = conn.execute("SELECT initiator, hostnqn, shared FROM attachments WHERE node = ? AND "
                        "volume = ?", (source_node, volume)).fetchall()
    if not rows:
        return []
    at = time.time()
    store.begin(conn, "attachments following a move")
    try:
        conn.execute("UPDATE attachments SET node = ?, volume = ?, nqn = NULL, updated_at = ? "
                     "WHERE node = ? AND volume = ?",
                     (target_node, target_volume, at, source_node, volume))
        conn.executemany(
            "INSERT INTO attachment_log (at, batch, action, node, volume, initiator, hostnqn, "
            "shared, outcome, message, operator) VALUES (?, ?, 'moved', ?, ?, ?, ?, ?, 'ok', ?, "
            "?)", [(at, batch or f"move-{move_id}", target_node, target_volume, r[0], r[1],
                    r[2], f"moved from {source_node}:{volume} ({why or f'move {move_id}'})",
                    claims.operator()) for r in rows])
        conn.execute("COMMIT")
    except BaseException:
        store.rollback(conn)
        raise
    return sorted({str(r[1]) for r in rows})
