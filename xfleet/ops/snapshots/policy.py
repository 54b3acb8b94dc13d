"""Snapshot policies in YAML, a policy file like the compression policy (xfleet.ops.policyfile:
file:line errors, the same `match` keys, compiled to SQL over the mirror; docs/snapshots.md):

```yaml
policies:
  - name: db                       # [A-Za-z0-9.-]: part of every snapshot's name
    match: {labels: {zone: a}, name: "tank/t00*/*"}
    schedule: {every: 15m}         # or {hourly: ":05"}, or {daily: "02:30"}
    timezone: Europe/Berlin        # of the schedule and of the retention's buckets; UTC
    keep: {frequently: 4, hourly: 24, daily: 7, weekly: 4, monthly: 6, at_least: 2}
    replicate:                     # optional: standing replicas (docs/replicate.md)
      - {node: n2, pool: tank, rpo: 1h}   # root: backup/n1 puts the copies under it
```

A volume belongs to the first policy whose `match` takes it. A policy's snapshots are named
`xfleet_<policy>_<YYYY-MM-DD_HH:MM:SS>Z` (UTC): the name says which policy owns it, so a
policy never prunes a snapshot it did not take.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from xfleet.core.errors import UsageError
from xfleet.core.names import pool_of, validate_dataset
from xfleet.core.yamlsrc import Val, shown, suggest
from xfleet.ops.policyfile import MATCH_KEYS as MATCH_KEYS
from xfleet.ops.policyfile import PolicyError, PolicyFile, match_sql
from xfleet.ops.snapshots.retention import GRANULARITIES, Keep
from xfleet.ops.snapshots.schedule import Schedule, parse_duration

if TYPE_CHECKING:
    from xfleet.fleet.inventory import Inventory

PREFIX = "xfleet"
T = TypeVar("T")
POLICY_KEYS = ("name", "match", "schedule", "timezone", "keep", "replicate")
REPLICATE_KEYS = ("node", "pool", "rpo", "root")
KEEP_KEYS = (*GRANULARITIES, "at_least")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$")
STAMP = "%Y-%m-%d_%H:%M:%S"


class SnapshotPolicyError(PolicyError):
    """The snapshot policy file is invalid; `where` is file:line."""


@dataclass(frozen=True)
class ReplicaTarget:
    """Where a policy keeps standing replicas of its volumes: a node and pool (the copy of
    `pool/a/b` is `root/a/b`, root defaulting to the pool) within `rpo` seconds."""

    node: str
    pool: str
    rpo: int
    root: str | None = None
    line: int = 0

    def target_volume(self, volume: str) -> str:
        return (self.root or self.pool) + volume[len(pool_of(volume)):]

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "pool": self.pool, "rpo": self.rpo, "root": self.root}


@dataclass
class SnapshotPolicy:
    name: str
    line: int
    schedule: Schedule
    keep: Keep
    match: dict[str, Any] = field(default_factory=dict)
    replicate: list[ReplicaTarget] = field(default_factory=list)

    @property
    def owned(self) -> str:
        """What the snapshot part of this policy's snapshot names starts with."""
        return f"{PREFIX}_{self.name}_"

    def snapshot_name(self, at: float) -> str:
        """The snapshot name (after '@') of a snapshot taken at `at`."""
        return self.owned + dt.datetime.fromtimestamp(at, dt.UTC).strftime(STAMP) + "Z"

    def to_dict(self) -> dict[str, Any]:
        s = self.schedule
        return {"name": self.name, "line": self.line, "match": self.match,
                "timezone": s.tz, "period_seconds": s.period, "keep": {
                    k: getattr(self.keep, k) for k in KEEP_KEYS},
                "replicate": [t.to_dict() for t in self.replicate]}


@dataclass
class Policies:
    path: Path | None
    policies: list[SnapshotPolicy]

    def compile(self, inventory: Inventory | None = None,
                tenant_property: str = "xfleet:tenant") -> tuple[str, list[Any]]:
        """An SQL expression over a `datasets` row: the name of the policy the volume belongs
        to (the first that matches), NULL for none; and its parameters."""
        whens: list[str] = []
        params: list[Any] = []
        for p in self.policies:
            cond, args = match_sql(p.match, inventory, tenant_property)
            whens.append(f"WHEN {cond} THEN ?")
            params.extend([*args, p.name])
        return ("CASE " + " ".join(whens) + " END" if whens else "NULL"), params

    def get(self, name: str) -> SnapshotPolicy:
        for p in self.policies:
            if p.name == name:
                return p
        raise UsageError(f"no snapshot policy {name!r}",
                         hint=f"policies: {', '.join(p.name for p in self.policies)}")


class _Loader(PolicyFile[SnapshotPolicy]):
    """The snapshot policy file: `policies:`, each a SnapshotPolicy (xfleet.ops.policyfile)."""

    error = SnapshotPolicyError
    kind = "snapshot policy"
    missing_hint = "see docs/snapshots.md for the format"
    key = "policies"
    shape = "a snapshot policy file is a mapping with a 'policies:' list"
    shape_hint = "see docs/snapshots.md"
    noun = "policy"

    def entry(self, i: int, item: Val) -> SnapshotPolicy:
        return self._policy(i, item)

    def _policy(self, i: int, item: Val) -> SnapshotPolicy:
        body = self.body(i, item, POLICY_KEYS, "name, schedule and keep")
        if "name" not in body:
            raise self.err(item.line, f"policy {i + 1} has no 'name'",
                           hint="a name of letters, digits, '.' and '-': it is part of every "
                           "snapshot's name")
        nv = body["name"]
        name = nv.value if isinstance(nv.value, str) else ""
        if not _NAME.match(name):
            raise self.err(nv.line, f"policy name {shown(nv.value)} is not valid",
                           hint="letters, digits, '.' and '-' (up to 64), starting with a "
                           "letter or digit: it is part of every snapshot's name")
        tz = "UTC"
        if "timezone" in body:
            tv = body["timezone"]
            if not isinstance(tv.value, str):
                raise self.err(tv.line, f"policy {name!r}: timezone must be a name, got "
                               f"{shown(tv.value)}", hint="e.g. UTC, Europe/Berlin")
            tz = tv.value
        schedule = self._schedule(name, item, body.get("schedule"), tz)
        keep = self._keep(name, item, body.get("keep"))
        targets = self._replicate(name, schedule, body["replicate"]) if "replicate" in body \
            else []
        return SnapshotPolicy(name, item.line, schedule, keep, self.match(name, body.get("match")),
                              targets)

    def _checked(self, name: str, v: Val, check: Callable[[Any], T]) -> T:
        """`check(v.value)`, its UsageError reported at `v`'s line."""
        try:
            return check(v.value)
        except UsageError as exc:
            raise self.err(v.line, f"policy {name!r}: {exc.message}", hint=exc.hint) from None

    def _replicate(self, name: str, schedule: Schedule, rv: Val) -> list[ReplicaTarget]:
        items = rv.value if isinstance(rv.value, list) else [rv]
        if not items:
            raise self.err(rv.line, f"policy {name!r}: replicate is empty",
                           hint="e.g. replicate: [{node: n2, pool: tank, rpo: 1h}]")
        out: list[ReplicaTarget] = []
        for tv in items:
            if not isinstance(tv.value, dict):
                raise self.err(tv.line, f"policy {name!r}: a replicate target is a mapping "
                               f"with node, pool and rpo, got {shown(tv.value)}",
                               hint="e.g. {node: n2, pool: tank, rpo: 1h}")
            body: dict[str, Val] = tv.value
            for k, v in body.items():
                if k not in REPLICATE_KEYS:
                    raise self.err(v.at, f"policy {name!r}: unknown replicate key {k!r}",
                                   hint=suggest(k, REPLICATE_KEYS))
            for k in ("node", "pool", "rpo"):
                if k not in body:
                    raise self.err(tv.line, f"policy {name!r}: replicate target has no {k!r}",
                                   hint="e.g. {node: n2, pool: tank, rpo: 1h}")
                if not isinstance(body[k].value, str) or not body[k].value:
                    raise self.err(body[k].line, f"policy {name!r}: replicate {k} must be a "
                                   f"name, got {shown(body[k].value)}")
            rpo = self._checked(name, body["rpo"], lambda v: parse_duration(v, "rpo"))
            pool = self._checked(name, body["pool"], lambda v: validate_dataset(
                v, allow_snapshot=False))
            root = self._checked(name, body["root"], lambda v: validate_dataset(
                v, allow_snapshot=False)) if "root" in body else None
            if "/" in pool:
                raise self.err(body["pool"].line, f"policy {name!r}: replicate pool "
                               f"{pool!r} is a dataset, not a pool",
                               hint="use root: POOL/PATH to put the copies under a dataset")
            if root is not None and pool_of(root) != pool:
                raise self.err(body["root"].line, f"policy {name!r}: replicate root {root!r} "
                               f"is not in pool {pool!r}")
            if rpo < schedule.period:
                raise self.err(body["rpo"].line, f"policy {name!r}: rpo {body['rpo'].value} "
                               f"is shorter than the schedule's period "
                               f"({schedule.period // 60} min): it can never be met",
                               hint="a replica is as fresh as the newest snapshot it got: "
                               "make the rpo at least the period (twice is safer)")
            node = body["node"].value
            if any(t.node == node for t in out):
                raise self.err(tv.line, f"policy {name!r} replicates to {node!r} twice")
            out.append(ReplicaTarget(node, pool, rpo, root, tv.line))
        return out

    def _schedule(self, name: str, item: Val, sv: Val | None, tz: str) -> Schedule:
        if sv is None:
            raise self.err(item.line, f"policy {name!r} has no 'schedule'",
                           hint='e.g. schedule: {every: 15m}, {hourly: ":05"} or '
                           '{daily: "02:30"}')
        if not isinstance(sv.value, dict) or len(sv.value) != 1:
            raise self.err(sv.line, f"policy {name!r}: schedule must be one of every, hourly "
                           f"or daily, got {shown(sv.value)}",
                           hint='e.g. schedule: {every: 15m}')
        ((kind, v),) = sv.value.items()
        try:
            return Schedule.parse(kind, str(v.value), tz)
        except UsageError as exc:
            raise self.err(v.at, f"policy {name!r}: {exc.message}", hint=exc.hint) from None

    def _keep(self, name: str, item: Val, kv: Val | None) -> Keep:
        if kv is None:
            raise self.err(item.line, f"policy {name!r} has no 'keep'",
                           hint="e.g. keep: {hourly: 24, daily: 7}")
        if not isinstance(kv.value, dict) or not kv.value:
            raise self.err(kv.line, f"policy {name!r}: keep must be a mapping of counts, got "
                           f"{shown(kv.value)}", hint=f"keys: {', '.join(KEEP_KEYS)}")
        counts: dict[str, int] = {}
        for k, v in kv.value.items():
            if k not in KEEP_KEYS:
                raise self.err(v.at, f"policy {name!r}: unknown keep key {k!r}",
                               hint=suggest(k, KEEP_KEYS))
            if not isinstance(v.value, int) or isinstance(v.value, bool) or v.value < 0:
                raise self.err(v.line, f"policy {name!r}: keep {k} must be a count (0 or "
                               f"more), got {shown(v.value)}")
            counts[k] = v.value
        keep = Keep(**counts)
        if not any(keep.counts().values()):
            raise self.err(kv.line, f"policy {name!r} keeps nothing",
                           hint="give at least one of " + ", ".join(GRANULARITIES))
        return keep


def load_policies(path: str | Path) -> Policies:
    """Load and validate a snapshot policy file; raises SnapshotPolicyError naming file:line."""
    return Policies(Path(path), _Loader(Path(path)).load())


def parse_policies(text: str, where: str = "<policies>") -> Policies:
    return Policies(Path(where), _Loader(Path(where)).parse(text))
