"""Snapshot policies in YAML, in the style of the compression policy (file:line errors, the same
`match` keys, compiled to SQL over the mirror; docs/snapshots.md):

```yaml
policies:
  - name: db                       # [A-Za-z0-9.-]: part of every snapshot's name
    match: {labels: {zone: a}, name: "tank/t00*/*"}
    schedule: {every: 15m}         # or {hourly: ":05"}, or {daily: "02:30"}
    timezone: Europe/Berlin        # of the schedule and of the retention's buckets; UTC
    keep: {frequently: 4, hourly: 24, daily: 7, weekly: 4, monthly: 6, at_least: 2}
```

A volume belongs to the first policy whose `match` takes it. A policy's snapshots are named
`xfleet_<policy>_<YYYY-MM-DD_HH:MM:SS>Z` (UTC): the name says which policy owns it, so a
policy never prunes a snapshot it did not take.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from xfleet.core.errors import UsageError, XfleetError
from xfleet.core.yamlsrc import Val, convert, shown, suggest
from xfleet.ops.compression import MATCH_KEYS, PolicyError, _PolicyLoader, match_sql
from xfleet.ops.snapshots.retention import GRANULARITIES, Keep
from xfleet.ops.snapshots.schedule import Schedule

if TYPE_CHECKING:
    from xfleet.fleet.inventory import Inventory

PREFIX = "xfleet"
POLICY_KEYS = ("name", "match", "schedule", "timezone", "keep")
KEEP_KEYS = (*GRANULARITIES, "at_least")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$")
STAMP = "%Y-%m-%d_%H:%M:%S"


class SnapshotPolicyError(PolicyError):
    """The snapshot policy file is invalid; `where` is file:line."""


@dataclass
class SnapshotPolicy:
    name: str
    line: int
    schedule: Schedule
    keep: Keep
    match: dict[str, Any] = field(default_factory=dict)

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
                    k: getattr(self.keep, k) for k in KEEP_KEYS}}


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


class _Loader(_PolicyLoader):
    """The compression policy's loader (YAML with lines, the `match` keys), for snapshot
    policies."""

    def err(self, line: int, msg: str, hint: str | None = None) -> PolicyError:
        return SnapshotPolicyError(msg, where=f"{self.file}:{line}", hint=hint)

    def load_policies(self) -> Policies:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            raise SnapshotPolicyError(f"snapshot policy {self.file} does not exist",
                                      where=self.file,
                                      hint="see docs/snapshots.md for the format") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SnapshotPolicyError(f"cannot read {self.file}: {exc}",
                                      where=self.file) from None
        return self.parse_policies(text)

    def parse_policies(self, text: str) -> Policies:
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            root = convert(node, self.file, yaml.constructor.SafeConstructor()) \
                if node is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise self.err(mark.line + 1 if mark else 1,
                           f"YAML syntax error: {exc.problem or 'malformed YAML'}",
                           hint="check indentation and quoting near this line") from None
        except yaml.YAMLError as exc:
            raise self.err(1, f"YAML error: {exc}") from None
        except XfleetError as exc:
            raise SnapshotPolicyError(exc.message, where=exc.where, hint=exc.hint) from None
        if not isinstance(root, dict) or "policies" not in root:
            raise self.err(1, "a snapshot policy file is a mapping with a 'policies:' list",
                           hint="see docs/snapshots.md")
        for k, v in root.items():
            if k != "policies":
                raise self.err(v.at, f"unknown top-level key {k!r}",
                               hint=suggest(k, ["policies"]))
        items = root["policies"]
        if not isinstance(items.value, list) or not items.value:
            raise self.err(items.line, "policies must be a non-empty list, got "
                           f"{shown(items.value)}")
        out: list[SnapshotPolicy] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(items.value):
            p = self._policy(i, item)
            if p.name in seen:
                raise self.err(item.line, f"policy name {p.name!r} is used twice (first at "
                               f"line {seen[p.name]})", hint="policy names must be unique")
            seen[p.name] = item.line
            out.append(p)
        for p in out[:-1]:
            if not p.match:
                later = out[out.index(p) + 1]
                raise self.err(later.line, f"policy {later.name!r} can never match: policy "
                               f"{p.name!r} (line {p.line}) has no 'match' and takes every "
                               "volume", hint="put the catch-all policy last")
        return Policies(self.path, out)

    def _policy(self, i: int, item: Val) -> SnapshotPolicy:
        if not isinstance(item.value, dict):
            raise self.err(item.line, f"policy {i + 1} must be a mapping with name, schedule "
                           f"and keep, got {shown(item.value)}")
        body: dict[str, Val] = item.value
        for k, v in body.items():
            if k not in POLICY_KEYS:
                raise self.err(v.at, f"unknown key {k!r} in policy {i + 1}",
                               hint=suggest(k, POLICY_KEYS))
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
        match: dict[str, Any] = {}
        if "match" in body:
            mv = body["match"]
            if not isinstance(mv.value, dict):
                raise self.err(mv.line, f"policy {name!r}: match must be a mapping, got "
                               f"{shown(mv.value)}", hint=f"keys: {', '.join(MATCH_KEYS)}")
            for k, v in mv.value.items():
                match[k] = self._match(name, k, v)
        return SnapshotPolicy(name, item.line, schedule, keep, match)

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
    return _Loader(Path(path)).load_policies()


def parse_policies(text: str, where: str = "<policies>") -> Policies:
    return _Loader(Path(where)).parse_policies(text)
