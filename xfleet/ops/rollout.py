"""Rolling upgrades of the NVMe-oF target daemon across the fleet (docs/upgrades.md).

A rollout is a durable state machine journaled in the mirror (`rollouts`, `rollout_nodes`,
`rollout_log`), so pause, resume and stop survive a crash of xfleet:

  staging -> running -> done
  staging | running -> paused (resumable) | stopped (final)

- staging: the package is copied to every node and its sha256 verified there, before any
  restart (and on nodes added later, before their turn).
- running: batches in order (the canary alone first, then `serial` sizes such as 1, 2, "25%";
  the last size repeats). Each node: ok-to-stop checks (pools healthy, no scrub/resilver, no
  move in progress, exports match the mirror with pinned identities), restart into the new
  version, wait until ready **at that version** with the same exports as before, soak, verify
  from the initiators in the inventory (paths live again, identities unchanged).
- A failed node is rolled back to its previous version. A batch whose failures exceed its
  budget (`max_failures`; the canary's is 0) pauses the rollout with the reason: nothing
  continues silently, nothing is aborted blindly. `resume` continues; `stop` ends it.
- Nodes added to the inventory during a rollout (when it covers every node with a target)
  are picked up at the next batch boundary.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xfleet import mirror
from xfleet.core import zfs
from xfleet.core.errors import UsageError, XfleetError
from xfleet.core.identity import pinned_identity
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror import claims, jobs
from xfleet.ops import initiator
from xfleet.ops.moves import ACTIVE
from xfleet.ops.target import Export, TargetDriver, driver_for
from xfleet.remote.host import Host

OPEN = ("staging", "running", "paused")  # a rollout's states before done/stopped
# a node's states (docs/mirror.md); the ones in IN_FLIGHT were mid-upgrade when xfleet stopped
IN_FLIGHT = ("restarting", "ready", "soaking", "verifying", "rolling_back")
FINISHED = ("done", "skipped", "failed")
CHECK_HELP = {
    "reachable": "every node answers and reports its target version",
    "version": "the new version is newer than each node's (no silent downgrade)",
    "rollback": "a package of each node's current version is at hand, to roll back to",
    "pools": "every pool ONLINE, no scrub or resilver running",
    "moves": "no volume move in progress on a node",
    "exports": "the target exports exactly the node's volumes in the mirror",
    "identities": "every namespace identity is pinned (uuid/nguid from node + zvol guid)",
    "clients": "initiators in the inventory are reachable and their reconnect budget known",
}
CHECKS = tuple(CHECK_HELP)  # the preflight checks, by the names --skip-check takes
HEARTBEAT = 10.0
POLL = 1.0
Say = Callable[[str], None]


class RolloutError(XfleetError):
    """A rollout cannot start or continue (refused preflight, unknown rollout, bad options)."""


ROLLOUTS = jobs.register(jobs.JobKind(
    "rollouts", "rollout", "xfleet rollouts list", frozenset(OPEN), error=RolloutError,
    busy_hint="wait for it, or pause it (xfleet rollouts pause ID)"))


# ---------------------------------------------------------------------------------------------
# pure pieces: versions, batches, packages

def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key for versions like 1.10 > 1.9, 2.0~rc1 < 2.0 (Debian's `~`), 1:1.0 epochs."""
    epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
    out: list[tuple[int, int | str]] = [(1, int(epoch) if epoch.isdigit() else 0)]
    for part in re.findall(r"\d+|[A-Za-z]+|~", rest):
        if part == "~":
            out.append((-2, 0))
        elif part.isdigit():
            out.append((1, int(part)))
        else:
            out.append((0, part))
    out.append((-1, 0))  # the end: after `~`, before anything else
    return tuple(out)


def compare_versions(a: str, b: str) -> int:
    ka, kb = version_key(a), version_key(b)
    return (ka > kb) - (ka < kb)


def parse_serial(spec: str | Sequence[int | str]) -> list[int | str]:
    """`1,2,25%` (or a YAML list) -> [1, 2, "25%"]: batch sizes after the canary."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[int | str] = []
    for raw in items:
        item = str(raw).strip()
        m = re.fullmatch(r"(\d+)(%?)", item)
        if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(1)) > 100):
            raise UsageError(f"bad batch size {item!r} in serial {spec!r}",
                             hint='sizes are node counts (1, 2) or percentages of the nodes '
                             '("25%", 1 to 100), e.g. --serial 1,2,25%')
        out.append(f"{int(m.group(1))}%" if m.group(2) else int(m.group(1)))
    if not out:
        raise UsageError("serial is empty", hint="e.g. --serial 1,2,25%")
    return out


def plan_batches(nodes: Sequence[str], serial: Sequence[int | str],
                 canary: str | None = None) -> list[list[str]]:
    """The canary alone, then batches of the `serial` sizes (percentages of all the nodes,
    rounded up, at least 1); the last size repeats until every node has a batch."""
    if not nodes:
        return []
    order = list(nodes)
    first = canary or order[0]
    if first not in order:
        raise UsageError(f"canary {first!r} is not one of the nodes to upgrade",
                         hint=f"nodes: {', '.join(order)}")
    order.remove(first)
    batches = [[first]]
    sizes = list(serial)
    k = 0
    while order:
        s = sizes[min(k, len(sizes) - 1)]
        n = max(1, math.ceil(len(nodes) * int(s[:-1]) / 100)) if isinstance(s, str) else s
        batches.append(order[:n])
        order = order[n:]
        k += 1
    return batches


@dataclass(frozen=True)
class Package:
    """A package of one version on the xfleet host, copied to each node's stage dir."""

    version: str
    file: str
    sha256: str

    @property
    def name(self) -> str:
        return Path(self.file).name

    def remote(self, stage_dir: str) -> str:
        return f"{stage_dir.rstrip('/')}/{self.name}"


def deb_version(path: Path) -> str | None:
    """The Version field of a .deb (dpkg-deb on the xfleet host), None if it is not one."""
    try:
        res = subprocess.run(["dpkg-deb", "-f", "--", str(path), "Version"], capture_output=True,
                             text=True, check=False, timeout=60)
    except OSError:
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def package(spec: str, version: str | None = None, *, base: Path | None = None) -> Package:
    """`PATH` (a .deb: its version is read) or `VERSION=PATH`, a relative PATH taken against
    `base` (default: the current directory); `version` when the file cannot tell. The digest
    is computed here."""
    def resolve(text: str) -> Path:
        p = Path(text).expanduser()
        return base / p if base is not None and not p.is_absolute() else p

    given, path_text = (spec.split("=", 1) if "=" in spec and not resolve(spec).exists()
                        else (None, spec))
    path = resolve(path_text)
    if not path.is_file():
        raise UsageError(f"package {path_text} does not exist",
                         hint="pass the path of the package file on this host")
    found = deb_version(path)
    ver = given or found or version
    if ver is None:
        raise UsageError(f"cannot tell the version of {path_text}",
                         hint="it is not a .deb: write it as VERSION=PATH")
    if found and ver != found:
        raise UsageError(f"{path_text} is version {found}, not {ver}",
                         hint="pass the package of the version you name")
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return Package(ver, str(path.resolve()), h.hexdigest())


@dataclass
class Options:
    serial: list[int | str] = field(default_factory=lambda: [1])
    max_failures: int = 0  # per batch after the canary: more than this (not equal) pauses
    soak: float = 10.0  # seconds a node must stay ready before the next one
    ready_timeout: float = 120.0  # seconds for a restarted target to report ready
    deadline: float = 600.0  # progress deadline: seconds for one node, start to done
    skip: tuple[str, ...] = ()  # preflight checks skipped by explicit request
    allow_downgrade: bool = False
    canary: str | None = None

    def validate(self) -> Options:
        bad = [c for c in self.skip if c not in CHECKS]
        if bad:
            raise UsageError(f"unknown check {bad[0]!r} to skip",
                             hint=f"checks: {', '.join(CHECKS)}")
        for name in ("soak", "ready_timeout", "deadline"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must not be negative")
        if self.max_failures < 0:
            raise UsageError("max_failures must not be negative")
        self.serial = parse_serial(self.serial)
        return self

    @classmethod
    def from_json(cls, text: str) -> Options:
        d = json.loads(text)
        d["skip"] = tuple(d.get("skip", ()))
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# checks

@dataclass(frozen=True)
class Check:
    name: str
    node: str | None
    ok: bool
    message: str
    warning: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ExportsDigest:
    """The (count, digest) of a listing, accumulated while the listing streams past and
    independent of its order: the sum of each export's sha256 (nqn, nsid, device, uuid, nguid,
    enabled) modulo 2**256."""

    def __init__(self) -> None:
        self.count = 0
        self.complete = False  # the whole listing went past
        self._total = 0

    def feed(self, exports: Iterable[Export]) -> Iterator[Export]:
        """Yield `exports` unchanged, counting each into the digest."""
        for e in exports:
            line = f"{e.nqn}\t{e.nsid}\t{e.device}\t{e.uuid}\t{e.nguid}\t{int(e.enabled)}\n"
            self._total = (self._total + int.from_bytes(hashlib.sha256(line.encode()).digest(),
                                                        "big")) % (1 << 256)
            self.count += 1
            yield e
        self.complete = True

    @property
    def hexdigest(self) -> str:
        return f"{self._total:064x}"


def exports_digest(exports: Iterable[Export]) -> tuple[int, str]:
    """(count, digest) of a whole listing (see ExportsDigest)."""
    d = ExportsDigest()
    for _ in d.feed(exports):
        pass
    return d.count, d.hexdigest


def _examples(names: list[str], n: int) -> str:
    return f"{', '.join(names)}{', ...' if n > len(names) else ''}"


def exports_vs_mirror(conn: Any, host: Host, exports: Iterable[Export], *,
                      pinned: bool) -> tuple[int, list[str], list[str]]:
    """(exports seen, export problems, identity problems) of `host`'s exports against the
    mirror's volumes: volumes not exported, exports of no volume, identities not pinned.
    The exports go through a temporary table: neither side is held in Python at once."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS rollout_exports (device TEXT PRIMARY KEY, "
                 "uuid TEXT, nguid TEXT)")
    conn.execute("DELETE FROM temp.rollout_exports")
    seen = [0]

    def rows() -> Iterator[tuple[str, str, str]]:
        for e in exports:
            seen[0] += 1
            yield e.device, e.uuid, e.nguid

    conn.executemany("INSERT OR REPLACE INTO temp.rollout_exports VALUES (?, ?, ?)", rows())
    where = "d.node = ? AND d.type = 'volume'"
    args: list[Any] = [host.name]
    if host.pools:
        where += f" AND d.pool IN ({', '.join('?' for _ in host.pools)})"
        args += list(host.pools)
    missing: list[str] = []
    wrong: list[str] = []
    n_missing = n_wrong = 0
    for name, guid, uuid_, nguid in conn.execute(
            f"SELECT d.name, d.guid, e.uuid, e.nguid FROM datasets d LEFT JOIN "
            f"temp.rollout_exports e ON e.device = '/dev/zvol/' || d.name WHERE {where}", args):
        if uuid_ is None and nguid is None:
            n_missing += 1
            if len(missing) < 3:
                missing.append(name)
        elif (not (uuid_ or nguid) if not pinned or guid is None
              else (uuid_, nguid) != pinned_identity(host.name, guid)):
            n_wrong += 1
            if len(wrong) < 3:
                wrong.append(name)
    extra: list[str] = []
    n_extra = 0
    for (device,) in conn.execute(
            f"SELECT e.device FROM temp.rollout_exports e WHERE NOT EXISTS (SELECT 1 FROM "
            f"datasets d WHERE d.name = substr(e.device, 11) AND {where}) ORDER BY e.device",
            args):
        n_extra += 1
        if len(extra) < 3:
            extra.append(device)
    conn.execute("DELETE FROM temp.rollout_exports")
    problems = []
    if n_missing:
        problems.append(f"{n_missing} volume(s) in the mirror not exported "
                        f"({_examples(missing, n_missing)})")
    if n_extra:
        problems.append(f"{n_extra} export(s) of no volume in the mirror "
                        f"({_examples(extra, n_extra)})")
    ident = []
    if n_wrong:
        ident.append(f"{n_wrong} namespace(s) without a pinned identity "
                     f"({_examples(wrong, n_wrong)})")
    return seen[0], problems, ident


def _pools_problems(t: Any, host: Host) -> list[str]:
    text = t.run(zfs.zpool_status(list(host.pools))).stdout
    out = []
    for p in zfs.parse_status(text):
        if p.state != "ONLINE":
            out.append(f"pool {p.name} is {p.state}")
        if p.scan_in_progress:
            out.append(f"pool {p.name}: {p.scan}")
    return out


def _moves_on(conn: Any, node: str) -> list[int]:
    rows = conn.execute(
        f"SELECT id FROM moves WHERE (source_node = ? OR target_node = ?) AND state IN "
        f"({', '.join('?' for _ in ACTIVE)}) ORDER BY id", (node, node, *ACTIVE))
    return [r[0] for r in rows]


def node_checks(inv: Inventory, mirror_path: Path, conns: Connections, node: str,
                version: str, packages: dict[str, Package], opts: Options) -> list[Check]:
    """Every preflight check of one node (nothing is changed)."""
    host = inv.hosts[node]
    out: list[Check] = []
    try:
        drv = driver_for(node, conns.get(node), host.target)
        v = drv.versions()
    except XfleetError as exc:
        return [Check("reachable", node, False, f"cannot read the target's version: "
                      f"{exc.message}")]
    cur = v.running or v.installed
    if cur is None:
        return [Check("reachable", node, False, "no target version installed or running")]
    out.append(Check("reachable", node, True,
                     f"running {v.running or '(not ready)'}, installed {v.installed or '?'}"))
    cmp = compare_versions(version, cur)
    if cmp < 0 and not opts.allow_downgrade:
        out.append(Check("version", node, False, f"{version} would downgrade {node} from {cur}"
                         " (pass --allow-downgrade to mean it)"))
    else:
        out.append(Check("version", node, True, "already at " + version if cmp == 0 else
                         f"{cur} -> {version}"))
    if cmp != 0 and cur not in packages:
        out.append(Check("rollback", node, False, f"no package of {cur}, the version to roll "
                         f"back to (pass --rollback-package {cur}=PATH)"))
    else:
        out.append(Check("rollback", node, True, f"rolls back to {cur}"))
    try:
        out += _safety_checks(mirror_path, drv, host, opts.skip)
    except XfleetError as exc:
        out.append(Check("exports", node, False, f"cannot list the exports: {exc.message}"))
    return out


def _safety_checks(mirror_path: Path, drv: TargetDriver, host: Host, skip: Sequence[str],
                   digest: ExportsDigest | None = None) -> list[Check]:
    """The ok-to-stop checks: run in preflight and again right before each node restarts.
    A skipped check is not run at all. `digest` is fed the exports' listing, when the checks
    list them (so the listing before a restart is read once)."""
    node = host.name
    out: list[Check] = []
    if "pools" not in skip:
        try:
            pools = _pools_problems(drv.t, host)
        except XfleetError as exc:
            pools = [f"cannot read the pools' status: {exc.message}"]
        out.append(Check("pools", node, not pools, "; ".join(pools) or "pools ONLINE, no scan"))
    conn = mirror.connect(mirror_path)
    try:
        if "moves" not in skip:
            moving = _moves_on(conn, node)
            out.append(Check("moves", node, not moving,
                             f"move(s) {', '.join(map(str, moving))} in progress" if moving
                             else "no move in progress"))
        if "exports" in skip and "identities" in skip:
            return out
        exports = drv.iter_exports()
        count, problems, ident = exports_vs_mirror(
            conn, host, digest.feed(exports) if digest else exports,
            pinned=getattr(host.target, "driver", "") == "nvmet")
    finally:
        conn.close()
    out.append(Check("exports", node, not problems, "; ".join(problems) + " (run `xfleet sync "
                     f"{node}` if the mirror is behind)" if problems
                     else f"{count} export(s) match the mirror"))
    out.append(Check("identities", node, not ident, "; ".join(ident) or "identities pinned"))
    return [c for c in out if c.name not in skip]


def client_connections(inv: Inventory) -> Connections:
    """Connections to the inventory's initiators (apart from the nodes')."""
    return Connections(dict(inv.initiators), trust_store=inv.trust_store,
                       state_dir=inv.state_dir)


def client_checks(inv: Inventory, opts: Options) -> list[Check]:
    """Initiators in the inventory: reachable, and their reconnect budget against the longest
    a node may be down (`ready_timeout`) before xfleet rolls it back."""
    if not inv.initiators:
        return [Check("clients", None, True, "no initiators in the inventory: nothing to "
                      "verify from the client side", warning=True)]
    out: list[Check] = []
    with client_connections(inv) as conns:
        for name in sorted(inv.initiators):
            try:
                ctrls = initiator.controllers(conns.get(name))
            except XfleetError as exc:
                out.append(Check("clients", name, False, f"cannot read NVMe controllers: "
                                 f"{exc.message}"))
                continue
            warns = initiator.budget_warnings(ctrls, expected_outage=opts.ready_timeout)
            out.append(Check("clients", name, True, f"{len(ctrls)} controller(s)"))
            out += [Check("clients", name, True, w, warning=True) for w in warns]
    return out


def preflight(inv: Inventory, mirror_path: Path, conns: Connections, nodes: Sequence[str],
              version: str, packages: dict[str, Package], opts: Options) -> list[Check]:
    with ThreadPoolExecutor(max_workers=max(1, min(inv.parallel, len(nodes)))) as pool:
        per_node = list(pool.map(lambda n: node_checks(inv, mirror_path, conns, n, version,
                                                       packages, opts), nodes))
    checks = [c for cs in per_node for c in cs]
    return checks + ([] if "clients" in opts.skip else client_checks(inv, opts))


def refusals(checks: Sequence[Check], skip: Sequence[str]) -> list[Check]:
    return [c for c in checks if not c.ok and c.name not in skip]


@dataclass
class Plan:
    """What `xfleet upgrade target` (and the playbook step) would do: nodes, batches, packages
    and the preflight's verdict. `start` journals it as a rollout."""

    version: str
    nodes: list[str]
    batches: list[list[str]]
    packages: dict[str, Package]
    checks: list[Check]
    opts: Options
    selection: list[str] | None

    @property
    def refused(self) -> list[Check]:
        return refusals(self.checks, self.opts.skip)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "batches": self.batches,
                "checks": [c.to_dict() for c in self.checks],
                "refused": [c.to_dict() for c in self.refused]}


def plan(inv: Inventory, mirror_path: Path, conns: Connections, version: str,
         package_spec: str, rollback_specs: Sequence[str], opts: Options,
         nodes: Sequence[str] | None = None, *, base: Path | None = None) -> Plan:
    """Read the packages (relative paths against `base`), pick the nodes and batches, run the
    preflight. Nothing is changed."""
    opts.validate()
    new = package(package_spec, version, base=base)
    if new.version != version:
        raise UsageError(f"{package_spec} is version {new.version}, not {version}",
                         hint="pass the package of the version you upgrade to")
    packages = {version: new}
    for spec in rollback_specs:
        p = package(spec, base=base)
        packages.setdefault(p.version, p)
    selection = list(nodes) if nodes else None
    targets = target_nodes(inv, selection)
    batches = plan_batches(targets, opts.serial, opts.canary)
    checks = preflight(inv, mirror_path, conns, targets, version, packages, opts)
    return Plan(version, targets, batches, packages, checks, opts, selection)


def start(mirror_path: Path, p: Plan) -> int:
    """Journal a planned rollout (refused if its preflight failed); returns its id."""
    if p.refused:
        first = p.refused[0]
        raise RolloutError(
            f"preflight refused the upgrade: {len(p.refused)} check(s) failed, first: "
            f"{first.node or ''} {first.name}: {first.message}",
            hint="fix what failed, or skip a check you accept with --skip-check NAME")
    return create(mirror_path, p.version, p.nodes, p.packages, p.opts, selection=p.selection)


def target_nodes(inv: Inventory, names: Sequence[str] | None) -> list[str]:
    """The nodes a rollout covers: `names`, or every node with a `target` in the inventory."""
    if names:
        hosts = inv.select(list(names))
        missing = [h.name for h in hosts if h.target is None]
        if missing:
            raise UsageError(f"{', '.join(missing)} has no target in the inventory",
                             hint="add target: {driver: nvmet} to the host (docs/upgrades.md)")
        return [h.name for h in hosts]
    out = [n for n, h in inv.hosts.items() if h.target is not None]
    if not out:
        raise UsageError("no node in the inventory has a target",
                         hint="add target: {driver: nvmet} to the hosts (docs/upgrades.md)")
    return out


# ---------------------------------------------------------------------------------------------
# the journal

def create(mirror_path: Path, version: str, nodes: Sequence[str], packages: dict[str, Package],
           opts: Options, *, selection: Sequence[str] | None = None) -> int:
    """Journal a new rollout (state `staging`) with its batches; returns its id."""
    batches = plan_batches(nodes, opts.serial, opts.canary)
    now = time.time()
    conn = mirror.connect(mirror_path)
    try:
        mirror.begin(conn, "a new rollout")
        open_ = conn.execute(f"SELECT id FROM rollouts WHERE state IN "
                             f"({', '.join('?' for _ in OPEN)})", OPEN).fetchone()
        if open_ is not None:
            mirror.rollback(conn)
            raise RolloutError(f"rollout {open_[0]} is not finished",
                               hint=f"resume it (xfleet rollouts resume {open_[0]}) or stop it "
                               f"(xfleet rollouts stop {open_[0]}) first")
        cur = conn.execute(
            "INSERT INTO rollouts (version, selection, options, packages, state, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, 'staging', ?, ?)",
            (version, json.dumps(list(selection)) if selection else None,
             json.dumps(asdict(opts)),
             json.dumps({v: asdict(p) for v, p in packages.items()}), now, now))
        rid = int(cur.lastrowid or 0)
        pos = 0
        for b, batch in enumerate(batches):
            for node in batch:
                conn.execute("INSERT INTO rollout_nodes (rollout, node, batch, position, state) "
                             "VALUES (?, ?, ?, ?, 'pending')", (rid, node, b, pos))
                pos += 1
        conn.execute("INSERT INTO rollout_log (rollout, at, node, state, message) VALUES "
                     "(?, ?, NULL, 'staging', ?)",
                     (rid, now, f"rollout to {version}: {len(nodes)} node(s) in "
                      f"{len(batches)} batch(es): "
                      + " | ".join(", ".join(b) for b in batches)))
        conn.execute("COMMIT")
        return rid
    finally:
        conn.close()


def get(conn: sqlite3.Connection, rid: int) -> dict[str, Any]:
    return dict(jobs.get(conn, ROLLOUTS, rid))


def nodes_of(conn: Any, rid: int) -> list[dict[str, Any]]:
    """The rollout's nodes in order, each with `seconds` (start to done, or so far)."""
    out = [dict(r) for r in conn.execute(
        "SELECT * FROM rollout_nodes WHERE rollout = ? ORDER BY batch, position", (rid,))]
    for n in out:
        n["seconds"] = (round((n["finished_at"] or time.time()) - n["started_at"], 1)
                        if n["started_at"] else None)
    return out


def log(conn: Any, rid: int, limit: int | None = None) -> list[dict[str, Any]]:
    sql = "SELECT at, node, state, message FROM rollout_log WHERE rollout = ? ORDER BY at, rowid"
    rows = [dict(r) for r in conn.execute(sql, (rid,))]
    return rows[-limit:] if limit else rows


def summary(conn: Any, rid: int) -> dict[str, Any]:
    """A rollout with its progress: nodes done/total, the current node and step, per-node
    seconds (for `rollouts show`, --json and the TUI)."""
    r = get(conn, rid)
    nodes = nodes_of(conn, rid)
    done = sum(1 for n in nodes if n["state"] in ("done", "skipped"))
    failed = [n["node"] for n in nodes if n["state"] == "failed"]
    current = [n for n in nodes if n["state"] not in (*FINISHED, "pending", "staged")]
    return {
        "id": r["id"], "version": r["version"], "state": r["state"], "control": r["control"],
        "reason": r["reason"], "batch": r["batch"],
        "batches": 1 + max((n["batch"] for n in nodes), default=-1),
        "nodes_done": done, "nodes_total": len(nodes), "failed": failed,
        "current": [f"{n['node']}: {n['step'] or n['state']}" for n in current],
        "options": json.loads(r["options"]), "created_at": r["created_at"],
        "finished_at": r["finished_at"], "pid": r["pid"], "nodes": nodes,
    }


def list_rollouts(conn: Any, *, limit: int = 50) -> list[dict[str, Any]]:
    ids = [r[0] for r in conn.execute("SELECT id FROM rollouts ORDER BY id DESC LIMIT ?",
                                      (limit,))]
    return [summary(conn, i) for i in ids]


def request(mirror_path: Path, rid: int, what: str) -> str:
    """`pause` or `stop` a rollout: the process running it acts at the next node boundary (a
    node being upgraded always finishes or rolls back first). A rollout no process runs
    changes at once. Returns the new (or requested) state."""
    conn = mirror.connect(mirror_path)
    try:
        mirror.begin(conn, "a rollout's pause or stop")
        r = get(conn, rid)
        if r["state"] not in OPEN:
            mirror.rollback(conn)
            raise RolloutError(f"rollout {rid} is {r['state']}: nothing to {what}")
        if what == "pause" and r["state"] == "paused":
            mirror.rollback(conn)
            return "paused"
        if claims.holder(r) is not None:
            conn.execute("UPDATE rollouts SET control = ?, updated_at = ? WHERE id = ?",
                         (what, time.time(), rid))
            conn.execute("COMMIT")
            return f"{what} requested"
        state = "paused" if what == "pause" else "stopped"
        _set_state(conn, rid, state, f"{what} requested by the user")
        conn.execute("COMMIT")
        return state
    finally:
        conn.close()


def _set_state(conn: Any, rid: int, state: str, reason: str | None) -> None:
    now = time.time()
    conn.execute("UPDATE rollouts SET state = ?, reason = ?, control = NULL, updated_at = ?, "
                 "finished_at = CASE WHEN ? IN ('done', 'stopped') THEN ? ELSE finished_at END "
                 "WHERE id = ?", (state, reason, now, state, now, rid))
    conn.execute("INSERT INTO rollout_log (rollout, at, node, state, message) VALUES "
                 "(?, ?, NULL, ?, ?)", (rid, now, state, reason or state))


# ---------------------------------------------------------------------------------------------
# the runner

@dataclass
class Result:
    id: int
    state: str
    reason: str | None
    nodes: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "reason": self.reason, "nodes": self.nodes}


class NodeFailed(Exception):
    def __init__(self, message: str, *, restarted: bool):
        super().__init__(message)
        self.restarted = restarted


class Runner:
    """Drives one rollout to its end (done), a pause or a stop; resumable at any point."""

    def __init__(self, inv: Inventory, mirror_path: Path, conns: Connections, rid: int, *,
                 say: Say | None = None, reload_inventory: bool = True):
        self.inv = inv
        self.mirror_path = mirror_path
        self.conns = conns
        self.rid = rid
        self.say: Say = say or (lambda _m: None)
        self.reload_inventory = reload_inventory
        self.clients = client_connections(inv)
        self._lock = threading.Lock()
        self._conn = mirror.connect(mirror_path)
        r = get(self._conn, rid)
        self.version: str = r["version"]
        self.opts = Options.from_json(r["options"])
        self.packages = {v: Package(**p) for v, p in json.loads(r["packages"]).items()}
        self.selection: list[str] | None = json.loads(r["selection"]) if r["selection"] else None

    # -- journal ---------------------------------------------------------------------------
    def _exec(self, sql: str, args: Sequence[Any] = ()) -> None:
        with self._lock:
            self._conn.execute(sql, args)

    def _log(self, node: str | None, state: str, message: str) -> None:
        self._exec("INSERT INTO rollout_log (rollout, at, node, state, message) VALUES "
                   "(?, ?, ?, ?, ?)", (self.rid, time.time(), node, state, message))
        self.say(f"{node}: {message}" if node else message)

    def _node(self, node: str, state: str, step: str | None = None, **cols: Any) -> None:
        sets = ["state = ?", "step = ?", *(f"{k} = ?" for k in cols)]
        self._exec(f"UPDATE rollout_nodes SET {', '.join(sets)} WHERE rollout = ? AND node = ?",
                   (state, step, *cols.values(), self.rid, node))
        self._exec("UPDATE rollouts SET updated_at = ? WHERE id = ?", (time.time(), self.rid))

    def _row(self) -> dict[str, Any]:
        with self._lock:
            return get(self._conn, self.rid)

    def _nodes(self) -> list[dict[str, Any]]:
        with self._lock:
            return nodes_of(self._conn, self.rid)

    def _finish(self, state: str, reason: str | None) -> Result:
        with self._lock:
            _set_state(self._conn, self.rid, state, reason)
        if reason:
            self.say(f"rollout {self.rid} {state}: {reason}")
        return Result(self.rid, state, reason, self._nodes())

    # -- claim -----------------------------------------------------------------------------
    def _claim(self) -> None:
        def prepare(c: sqlite3.Connection, r: sqlite3.Row) -> None:
            if r["state"] not in OPEN:
                raise RolloutError(f"rollout {self.rid} is {r['state']}",
                                   hint=f"xfleet rollouts show {self.rid}")
            if r["state"] == "paused":  # resume retries the nodes that failed
                c.execute("UPDATE rollout_nodes SET state = CASE WHEN from_version IS NULL "
                          "THEN 'pending' ELSE 'staged' END, error = NULL, step = NULL, "
                          "started_at = NULL, finished_at = NULL "
                          "WHERE rollout = ? AND state = 'failed'", (self.rid,))
                c.execute("UPDATE rollouts SET state = 'running' WHERE id = ?", (self.rid,))

        with self._lock:
            jobs.claim(self._conn, ROLLOUTS, self.rid, prepare=prepare,
                       set_columns={"control": None, "reason": None})

    # -- run -------------------------------------------------------------------------------
    def run(self) -> Result:
        try:
            self._claim()
        except BaseException:
            self._conn.close()
            self.clients.close()
            raise
        try:
            with jobs.Heartbeat(self.mirror_path, ROLLOUTS, self.rid, interval=HEARTBEAT):
                return self._run()
        finally:
            with self._lock:
                claims.release(self._conn, "rollouts", self.rid)
            self._conn.close()
            self.clients.close()

    def _run(self) -> Result:
        self._log(None, "running", f"rollout {self.rid} to {self.version} "
                  f"({'resumed' if self._row()['state'] == 'running' else 'started'})")
        pending = [n["node"] for n in self._nodes() if n["state"] == "pending"]
        if pending:  # every node staged and verified before any restart
            failed = self._stage(pending)
            if failed:
                return self._finish("paused", failed)
        if self._row()["state"] == "staging":
            with self._lock:
                self._conn.execute("UPDATE rollouts SET state = 'running' WHERE id = ?",
                                   (self.rid,))
        while True:
            self._pick_up_new_nodes()
            nodes = self._nodes()
            todo = sorted({n["batch"] for n in nodes if n["state"] not in FINISHED})
            if not todo:
                break
            b = todo[0]
            control = self._row()["control"]
            if control:
                return self._finish("paused" if control == "pause" else "stopped",
                                    f"{control} requested by the user")
            self._exec("UPDATE rollouts SET batch = ? WHERE id = ?", (b, self.rid))
            batch = [n for n in nodes if n["batch"] == b and n["state"] not in FINISHED]
            unstaged = [n["node"] for n in batch if n["state"] == "pending"]
            if unstaged:
                failed = self._stage(unstaged)
                if failed:
                    return self._finish("paused", failed)
            self._log(None, "running", f"batch {b + 1}: {', '.join(n['node'] for n in batch)}")
            with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                list(pool.map(self._upgrade, [n["node"] for n in batch]))
            after = [n for n in self._nodes() if n["batch"] == b]
            failures = [n for n in after if n["state"] == "failed"]
            budget = 0 if b == 0 else self.opts.max_failures
            if len(failures) > budget:
                why = "; ".join(f"{n['node']}: {n['error']}" for n in failures)
                what = "the canary" if b == 0 else f"batch {b + 1}"
                return self._finish("paused", f"{what} failed ({len(failures)} failure(s), "
                                    f"budget {budget}): {why}")
            if failures:
                self._log(None, "running", f"batch {b + 1}: {len(failures)} failure(s) within "
                          f"the budget of {budget}: "
                          + ", ".join(f"{n['node']} rolled back" for n in failures))
        nodes = self._nodes()
        back = [n["node"] for n in nodes if n["state"] == "failed"]
        note = f" ({len(back)} node(s) rolled back: {', '.join(back)})" if back else ""
        return self._finish("done", f"{len(nodes) - len(back)} of {len(nodes)} node(s) at "
                            f"{self.version}{note}")

    def _pick_up_new_nodes(self) -> None:
        """A rollout over every node with a target takes in nodes added to the inventory."""
        if self.selection is not None or not self.reload_inventory:
            return
        try:
            fresh = inventory.load(self.inv.path)
        except XfleetError as exc:
            self._log(None, "running", f"inventory not re-read ({exc.message}); carrying on")
            return
        known = {n["node"] for n in self._nodes()}
        new = [n for n, h in fresh.hosts.items() if h.target is not None and n not in known]
        if not new:
            return
        last = max((n["batch"] for n in self._nodes()), default=-1)
        for i, node in enumerate(new):
            self.inv.hosts[node] = fresh.hosts[node]
            self.conns.hosts[node] = fresh.hosts[node]
            self._exec("INSERT INTO rollout_nodes (rollout, node, batch, position, state) "
                       "VALUES (?, ?, ?, ?, 'pending')", (self.rid, node, last + 1, 10_000 + i))
        self._log(None, "running", f"new node(s) in the inventory: {', '.join(new)} "
                  f"(batch {last + 2})")

    # -- staging ---------------------------------------------------------------------------
    def _stage(self, nodes: Sequence[str]) -> str | None:
        """Copy and verify the package on `nodes` (and each one's rollback package when it is
        not there yet); the reason when any fails."""
        def one(node: str) -> str | None:
            try:
                drv = self._driver(node)
                v = drv.versions()
                cur = v.running or v.installed
                self._node(node, "pending", "staging", from_version=cur)
                wanted = [self.version] + ([cur] if cur and cur != self.version
                                           and cur in self.packages else [])
                for ver in wanted:
                    self._stage_one(drv, self.packages[ver])
                self._node(node, "staged", None)
                self._log(node, "staged", f"{self.packages[self.version].name} staged and "
                          f"verified (sha256 {self.packages[self.version].sha256[:12]})")
                return None
            except (XfleetError, OSError) as exc:
                msg = exc.message if isinstance(exc, XfleetError) else str(exc)
                self._node(node, "pending", "staging failed", error=msg)
                self._log(node, "pending", f"staging failed: {msg}")
                return f"{node}: {msg}"

        with ThreadPoolExecutor(max_workers=max(1, min(self.inv.parallel, len(nodes)))) as pool:
            errors = [e for e in pool.map(one, nodes) if e]
        return f"staging failed on {len(errors)} node(s): {'; '.join(errors)}" if errors else None

    @staticmethod
    def _stage_one(drv: TargetDriver, pkg: Package) -> None:
        remote = pkg.remote(drv.stage_dir)
        if drv.staged_digest(remote) != pkg.sha256:
            drv.put(Path(pkg.file).read_bytes(), remote)
        drv.stage(pkg.version, remote, pkg.sha256)

    def _driver(self, node: str) -> TargetDriver:
        host = self.inv.hosts.get(node)
        if host is None:
            raise RolloutError(f"{node} is no longer in the inventory",
                               hint="put it back, or stop the rollout")
        return driver_for(node, self.conns.get(node), host.target)

    # -- one node --------------------------------------------------------------------------
    def _upgrade(self, node: str) -> None:
        row = next(n for n in self._nodes() if n["node"] == node)
        started = row["started_at"] or time.time()
        deadline = started + self.opts.deadline if self.opts.deadline else math.inf
        before: str | None = row["exports_digest"]
        try:
            drv = self._driver(node)
            if row["state"] in IN_FLIGHT:
                self._log(node, row["state"], f"resuming from {row['state']}")
                if row["state"] == "rolling_back":
                    raise NodeFailed(row["error"] or "rolled back before xfleet stopped",
                                     restarted=True)
                if row["state"] == "restarting" and drv.is_ready() != self.version:
                    # xfleet stopped around the restart: do it (again); the node is down anyway
                    drv.restart(self.version,
                                self.packages[self.version].remote(drv.stage_dir))
            else:
                self._node(node, "checking", "ok-to-stop checks", started_at=started,
                           error=None)
                v = drv.versions()
                if v.running == self.version and drv.is_ready() == self.version:
                    self._node(node, "skipped", None, finished_at=time.time())
                    self._log(node, "skipped", f"already running {self.version}")
                    return
                listed = ExportsDigest()
                bad = [c for c in _safety_checks(self.mirror_path, drv, self.inv.hosts[node],
                                                 self.opts.skip, listed) if not c.ok]
                if bad:
                    raise NodeFailed("not ok to stop: " + "; ".join(
                        f"{c.name}: {c.message}" for c in bad), restarted=False)
                if listed.complete:
                    count, before = listed.count, listed.hexdigest
                else:  # the exports and identities checks were skipped
                    count, before = exports_digest(drv.iter_exports())
                self._node(node, "restarting", f"restart into {self.version}",
                           exports=count, exports_digest=before)
                self._log(node, "restarting", f"{row['from_version']} -> {self.version}: "
                          f"restarting with {count} export(s)")
                drv.restart(self.version, self.packages[self.version].remote(drv.stage_dir))
            self._node(node, "restarting", f"waiting for {self.version} to be ready")
            drv.wait_ready(self.version, timeout=self._left(deadline, self.opts.ready_timeout))
            self._node(node, "ready", "checking exports")
            count, after = exports_digest(drv.iter_exports())
            if before is not None and after != before:
                raise NodeFailed(f"ready at {self.version} but its exports changed "
                                 f"({count} export(s) now, {row['exports']} before)",
                                 restarted=True)
            self._node(node, "soaking", f"soak {self.opts.soak:g}s")
            self._soak(drv, deadline)
            self._node(node, "verifying", "verifying from the initiators")
            self._verify_clients(node, drv, deadline)
            t = time.time()
            self._node(node, "done", None, finished_at=t, error=None)
            nodes = self._nodes()
            done = sum(1 for n in nodes if n["state"] in ("done", "skipped"))
            self._log(node, "done", f"at {self.version} in {t - started:.1f}s "
                      f"({done}/{len(nodes)} nodes done)")
        except NodeFailed as exc:
            self._fail(node, str(exc), rolled=exc.restarted)
        except (XfleetError, OSError) as exc:
            msg = exc.message if isinstance(exc, XfleetError) else str(exc)
            self._fail(node, msg, rolled=True)

    def _left(self, deadline: float, cap: float) -> float:
        left = deadline - time.time()
        if left <= 0:
            raise NodeFailed(f"progress deadline of {self.opts.deadline:g}s exceeded",
                             restarted=True)
        return min(cap, left)

    def _soak(self, drv: TargetDriver, deadline: float) -> None:
        end = time.monotonic() + self.opts.soak
        while time.monotonic() < end:
            self._left(deadline, 0)
            time.sleep(min(POLL, max(0.0, end - time.monotonic())))
        seen = drv.is_ready()
        if seen != self.version:
            raise NodeFailed(f"not ready at {self.version} after the soak of "
                             f"{self.opts.soak:g}s (reports {seen or 'not ready'})",
                             restarted=True)

    def _verify_clients(self, node: str, drv: TargetDriver, deadline: float) -> None:
        """Every initiator connected to this node's subsystems has its paths live again with
        the identities it had (uuid/nguid per subsystem equal to the exports'). Only the
        exports of subsystems an initiator is connected to are kept."""
        if not self.inv.initiators or "clients" in self.opts.skip:
            return
        connected = {c.nqn for name in sorted(self.inv.initiators)
                     for c in initiator.controllers(self.clients.get(name))}
        want = {e.nqn: (e.uuid, e.nguid) for e in drv.iter_exports() if e.nqn in connected}
        if not want:
            self._log(node, "verifying", "no initiator in the inventory is connected to it")
            return
        until = min(deadline, time.time() + self.opts.ready_timeout)
        for name in sorted(self.inv.initiators):
            t = self.clients.get(name)
            while True:
                ctrls = [c for c in initiator.controllers(t) if c.nqn in want]
                not_live = [c for c in ctrls if c.state != "live"]
                wrong = [c for c in ctrls for ns in c.namespaces
                         if (ns.uuid, ns.nguid) != want[c.nqn]]
                if wrong:
                    raise NodeFailed(f"{name} sees changed identities on "
                                     f"{', '.join(sorted({c.nqn for c in wrong}))}",
                                     restarted=True)
                if not not_live:
                    if ctrls:
                        self._log(node, "verifying", f"{name}: {len(ctrls)} path(s) live, "
                                  "identities unchanged")
                    break
                if time.time() >= until:
                    raise NodeFailed(f"{name}: {len(not_live)} path(s) not live again "
                                     f"({', '.join(c.state for c in not_live[:3])})",
                                     restarted=True)
                time.sleep(POLL)

    def _fail(self, node: str, message: str, *, rolled: bool) -> None:
        row = next(n for n in self._nodes() if n["node"] == node)
        prev = row["from_version"]
        if not rolled or prev is None or prev == self.version:
            self._node(node, "failed", None, finished_at=time.time(), error=message)
            self._log(node, "failed", message)
            return
        self._node(node, "rolling_back", f"rolling back to {prev}", error=message)
        self._log(node, "rolling_back", f"{message}; rolling back to {prev}")
        try:
            drv = self._driver(node)
            pkg = self.packages[prev]
            drv.rollback(prev, pkg.remote(drv.stage_dir))
            drv.wait_ready(prev, timeout=self.opts.ready_timeout)
            note = f"{message}; rolled back to {prev}"
        except (XfleetError, OSError, KeyError) as exc:
            why = exc.message if isinstance(exc, XfleetError) else str(exc)
            note = f"{message}; ROLLBACK TO {prev} FAILED: {why}"
        self._node(node, "failed", None, finished_at=time.time(), error=note)
        self._log(node, "failed", note)


def resume(inv: Inventory, mirror_path: Path, conns: Connections, rid: int, *,
           say: Say | None = None) -> Result:
    return Runner(inv, mirror_path, conns, rid, say=say).run()
