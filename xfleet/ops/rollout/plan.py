"""Planning a rolling upgrade: versions, batches and packages, the preflight checks of nodes
and clients, and the plan that starts a rollout."""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xfleet import mirror
from xfleet.core import zfs
from xfleet.core.errors import UsageError, XfleetError
from xfleet.core.identity import pinned_identity
from xfleet.fleet.connections import Connections, initiator_connections
from xfleet.fleet.inventory import Inventory
from xfleet.mirror import claims, jobs
from xfleet.mirror.backend import Location
from xfleet.mirror.store import inserted_id
from xfleet.ops import initiator
from xfleet.ops.moves import ACTIVE
from xfleet.ops.rollout.journal import OPEN, ROLLOUTS, RolloutError
from xfleet.ops.target import Export, TargetDriver, driver_for
from xfleet.remote.host import Host

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

    conn.executemany("INSERT INTO temp.rollout_exports VALUES (?, ?, ?) ON CONFLICT (device) "
                     "DO UPDATE SET uuid = excluded.uuid, nguid = excluded.nguid", rows())
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


def node_checks(inv: Inventory, mirror_path: Location, conns: Connections, node: str,
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
        out += safety_checks(mirror_path, drv, host, opts.skip)
    except XfleetError as exc:
        out.append(Check("exports", node, False, f"cannot list the exports: {exc.message}"))
    return out


def safety_checks(mirror_path: Location, drv: TargetDriver, host: Host, skip: Sequence[str],
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


client_connections = initiator_connections  # the rollout's name for it


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


def preflight(inv: Inventory, mirror_path: Location, conns: Connections, nodes: Sequence[str],
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


def plan(inv: Inventory, mirror_path: Location, conns: Connections, version: str,
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


def create(mirror_path: Location, version: str, nodes: Sequence[str], packages: dict[str, Package],
           opts: Options, *, selection: Sequence[str] | None = None) -> int:
    """Journal a new rollout (state `staging`) with its batches; returns its id."""
    batches = plan_batches(nodes, opts.serial, opts.canary)
    now = time.time()
    conn = mirror.connect(mirror_path)
    try:
        mirror.begin(conn, "a new rollout")
        open_ = conn.execute(f"SELECT * FROM rollouts WHERE state IN "
                             f"({', '.join('?' for _ in OPEN)})", OPEN).fetchone()
        if open_ is not None:
            mirror.rollback(conn)
            rid = open_["id"]
            who = f", started by {open_['operator']}" if open_["operator"] else ""
            held = (f"; run by {jobs.holder_text(open_)}"
                    if claims.holder(open_, stale=ROLLOUTS.stale) is not None else "")
            raise RolloutError(f"rollout {rid} is not finished ({open_['state']}{who}){held}",
                               hint=f"resume it (xfleet rollouts resume {rid}) or stop it "
                               f"(xfleet rollouts stop {rid}) first")
        cur = conn.execute(
            "INSERT INTO rollouts (version, selection, options, packages, state, created_at, "
            "updated_at, operator, operator_reason) VALUES (?, ?, ?, ?, 'staging', ?, ?, ?, ?) "
            "RETURNING id",
            (version, json.dumps(list(selection)) if selection else None,
             json.dumps(asdict(opts)),
             json.dumps({v: asdict(p) for v, p in packages.items()}), now, now,
             claims.operator(), claims.reason()))
        rid = inserted_id(cur)
        pos = 0
        for b, batch in enumerate(batches):
            for node in batch:
                conn.execute("INSERT INTO rollout_nodes (rollout, node, batch, position, state) "
                             "VALUES (?, ?, ?, ?, 'pending')", (rid, node, b, pos))
                pos += 1
        conn.execute("INSERT INTO rollout_log (rollout, at, node, state, message, operator) "
                     "VALUES (?, ?, NULL, 'staging', ?, ?)",
                     (rid, now, f"rollout to {version}: {len(nodes)} node(s) in "
                      f"{len(batches)} batch(es): "
                      + " | ".join(", ".join(b) for b in batches), claims.operator()))
        conn.execute("COMMIT")
        return rid
    finally:
        conn.close()


def start(mirror_path: Location, p: Plan) -> int:
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
