"""The inventory: which storage nodes exist and how to reach them.

Ansible-like YAML so SREs feel at home::

    all:
      vars: {...}            # fleet-level settings and defaults for every host
      children:
        zone-a:              # a group (zone, rack, tier...), nested as deep as you like
          vars: {...}
          hosts:
            n1: {address: 10.0.0.1, pools: [tank]}

Database hosts that connect to the fleet over NVMe/TCP (the initiators) are listed apart, under
`all: initiators:`; they are reached like hosts (same connection keys, all.vars inherited) but
are never storage nodes: they land in `Inventory.initiators`, not in `Inventory.hosts`.

Host settings are inherited all.vars < outer group vars < inner group vars < host; `labels`
mappings are merged along the way instead of replaced. Every value remembers where it came from
(file:line), so `xfleet inventory show` can tell, and every error names the file, the line and
the key. The format is described in docs/inventory.md.
"""

from __future__ import annotations

import difflib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xfleet.core.errors import HostKeyError, InventoryError, MirrorError, NameError_, UsageError
from xfleet.core.identity import HOSTS_PROPERTY, UUID_PROPERTY
from xfleet.core.names import validate_pool
from xfleet.core.units import parse_size
from xfleet.core.yamlsrc import Val, convert, plain, shown, suggest, typename
from xfleet.core.zfs import ParseError, validate_user_property
from xfleet.fleet.target_spec import (
    COMMAND_OPS,
    COMMAND_REQUIRED,
    COMMAND_VARS,
    DRIVERS,
    NVMET_SETTINGS,
    TargetSpec,
)
from xfleet.mirror.backend import Location, is_url, location
from xfleet.remote.host import Host
from xfleet.remote.ssh_config import FROM_NAME, parse_proxy_jump

# The node kinds: xfleet/fleet/connections.py's NODE_KINDS says how each is reached (a test keeps
# the two equal). Not imported from there: loading an inventory must not load every transport
# and the simulator (`xfleet ls -i ...` would start ~70 ms slower).
KINDS = ("ssh", "local", "sim")

# key -> what is expected (used in error messages and in docs/inventory.md)
HOST_KEYS: dict[str, str] = {
    "kind": "one of ssh, local, sim",
    "address": "a host name or IP address",
    "port": "a TCP port number (1-65535)",
    "user": "a user name",
    "identity_file": "a path to a private key",
    "proxy_jump": "[user@]host[:port] of a jump host",
    "host_key": "a pinned public host key, 'ssh-ed25519 AAAA...'",
    "known_hosts": "a path to a known_hosts file",
    "pools": "a non-empty list of pool names",
    "labels": "a mapping of label names to plain values",
    "max_streams": "an integer from 1 to 1000 (concurrent send/receive streams on this node)",
    "bwlimit": "a rate in bytes per second, e.g. 200M (all move streams of this node together)",
    "max_prune": "an integer from 1 to 10000000 (snapshots a snapshot run or serve tick "
    "destroys on this node at most)",
    "hooks": "a mapping of hook names (pre_cutover, post_cutover) to a command (a list of "
    "strings) or a list of commands, e.g. {pre_cutover: [[nvmet-unexport, '{volume}']]}",
    "connect_timeout": "a positive number of seconds (at most a year)",
    "command_timeout": "a positive number of seconds (at most a year) without output before "
    "a command is abandoned",
    "connect_retries": "an integer from 1 to 1000 (attempts for connection-level failures)",
    "private_address": "the node's address on the storage network (node-to-node streams)",
    "sim": "a mapping of simulator settings (seed, volumes, ...)",
    "target": "a mapping for the node's NVMe-oF target daemon: driver (nvmet or command) and "
    "its settings, e.g. {driver: nvmet, port: 4420} (docs/upgrades.md)",
    "dhchap_secret_file": "a path to a file holding the initiator's DH-CHAP secret, one line "
    "(relative to the inventory file; mode 600)",
    "dhchap_secret_command": "a command (a non-empty list of strings, run without a shell) "
    "that prints the initiator's DH-CHAP secret, e.g. [pass, show, nvme/db-a-01]",
}
FLEET_KEYS: dict[str, str] = {
    "mirror": "a path to the SQLite mirror (relative to the inventory file) or a "
              "postgresql:// URL (no password: ~/.pgpass)",
    "price_per_gb_month": "a price in your currency per GB-month (a non-negative number)",
    "currency": "the currency of price_per_gb_month: an ISO 4217 code of three capital letters, "
                "e.g. USD, EUR",
    "parallel": "an integer from 1 to 1024 (nodes worked on at once)",
    "space_refresh_budget": "a non-negative integer (rows per node whose space figures an "
    "incremental sync refreshes at most, stalest first)",
    "space_refresh_interval": "a non-negative number of seconds (at most a year) between "
    "space refreshes of a node (0: every sync)",
    "user_properties": "a list of ZFS user properties to mirror, e.g. [xfleet:tenant]",
    "tenant_property": "the user property that names a volume's tenant",
    "environment": "a mapping with name and colour, e.g. {name: prod, colour: red}",
    "state_dir": "a directory for xfleet's local state (relative to the inventory file)",
    "compression_policy": "a path to a compression policy YAML file (relative to the inventory "
    "file), see docs/compression.md",
    "move_bwlimit": "a rate in bytes per second, e.g. 1G (all moves run by one xfleet process "
    "together)",
}
GROUP_KEYS = ("vars", "children", "hosts")
# Keys that only make sense on a storage node; refused on an initiator (and not inherited by one).
STORAGE_ONLY_KEYS = ("pools", "max_streams", "bwlimit", "max_prune", "hooks", "sim", "target")
# Keys that only make sense on an initiator, each its own: refused on a storage node and in the
# vars of any group (an initiator's secret is never shared through inheritance).
INITIATOR_ONLY_KEYS = ("dhchap_secret_file", "dhchap_secret_command")
# Commands run around a move's cutover, with {volume}, {target_volume}, {source_node},
# {target_node} and {pool} replaced in each argument (docs/moves.md).
HOOK_NAMES = ("pre_cutover", "post_cutover")
DEFAULT_TENANT_PROPERTY = "xfleet:tenant"
ALWAYS_MIRRORED = (UUID_PROPERTY, HOSTS_PROPERTY)
DEFAULT_CURRENCY = "USD"
_CURRENCY = re.compile(r"\A[A-Z]{3}\Z")
# `sim: {now: today}`: the simulated fleet's "now" is the start of the current UTC day (so its
# snapshots and scrubs are recent whatever the date; the base fleet changes once a day)
SIM_TODAY = "today"
DAY = 86400
MAX_SECONDS = 366 * 86400.0  # timeouts and intervals: at most a year (select() has a limit)
MAX_PARALLEL = 1024
_HOST_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,252}\Z")


@dataclass
class Inventory:
    path: Path
    hosts: dict[str, Host]
    groups: dict[str, list[str]]
    mirror: Location
    state_dir: Path
    price_per_gb_month: float = 0.08
    currency: str = DEFAULT_CURRENCY  # of price_per_gb_month (the reports' money)
    parallel: int = 8
    space_refresh_budget: int = 2000
    space_refresh_interval: float = 300.0
    move_bwlimit: int | None = None  # bytes/s, all moves of one xfleet process together
    user_properties: tuple[str, ...] = (DEFAULT_TENANT_PROPERTY, UUID_PROPERTY, HOSTS_PROPERTY)
    tenant_property: str = DEFAULT_TENANT_PROPERTY
    environment: dict[str, str] = field(default_factory=dict)
    compression_policy: Path | None = None  # docs/compression.md
    # NVMe/TCP initiators (database hosts), `all: initiators:`; never storage nodes
    initiators: dict[str, Host] = field(default_factory=dict)

    @property
    def trust_store(self) -> Path:
        return self.state_dir / "known_hosts"

    def select(self, names: list[str] | tuple[str, ...] = ()) -> list[Host]:
        """Hosts by name or group name (all hosts when empty), each once, in inventory order
        within a group; unknown names are errors (with a did-you-mean)."""
        if not names:
            return list(self.hosts.values())
        out: dict[str, Host] = {}
        for n in names:
            if n in self.hosts:
                out[n] = self.hosts[n]
            elif n in self.groups:
                for h in self.groups[n]:
                    out[h] = self.hosts[h]
            else:
                close = difflib.get_close_matches(n, [*self.hosts, *self.groups], n=3)
                raise InventoryError(
                    f"no host or group named {n!r}",
                    where=str(self.path),
                    hint=f"did you mean {', '.join(close)}?" if close else
                    f"known groups: {', '.join(list(self.groups)[:10]) or '(none)'}; "
                    f"known hosts: {', '.join(list(self.hosts)[:10])}",
                )
        return list(out.values())


class _Loader:
    def __init__(self, path: Path):
        self.path = path
        self.file = str(path)
        self.hosts: dict[str, Host] = {}
        self.host_lines: dict[str, int] = {}
        self.groups: dict[str, list[str]] = {}
        self.group_lines: dict[str, int] = {}
        self.initiators: dict[str, Host] = {}
        self.initiator_lines: dict[str, int] = {}
        self.fleet: dict[str, Val] = {}

    def err(self, line: int, msg: str, hint: str | None = None) -> InventoryError:
        return InventoryError(msg, where=f"{self.file}:{line}", hint=hint)

    def load(self) -> Inventory:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            raise InventoryError(
                f"inventory file {self.file} does not exist",
                where=self.file,
                hint="pass --inventory PATH or set XFLEET_INVENTORY; "
                "see inventory/example.yaml for the format",
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InventoryError(f"cannot read inventory {self.file}: {exc}",
                                 where=self.file) from None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            problem = exc.problem or "malformed YAML"
            if exc.context:
                ctx = exc.context_mark
                started = f" started at line {ctx.line + 1}" if ctx and ctx.line + 1 != line else ""
                problem = f"{problem} ({exc.context}{started})"
            raise self.err(line, f"YAML syntax error: {problem}",
                           hint="check indentation and quoting near this line") from None
        except yaml.YAMLError as exc:
            raise self.err(1, f"YAML error: {exc}") from None
        if node is None:
            raise self.err(1, "the inventory is empty",
                           hint="it starts with 'all:'; see inventory/example.yaml")
        try:
            root = convert(node, self.file, yaml.constructor.SafeConstructor())
        except yaml.constructor.ConstructorError as exc:
            mark = exc.problem_mark
            raise self.err(mark.line + 1 if mark else 1, f"YAML error: {exc.problem}") from None
        if root is None:
            raise self.err(1, "the inventory is empty",
                           hint="it starts with 'all:'; see inventory/example.yaml")
        if not isinstance(root, dict):
            raise self.err(node.start_mark.line + 1,
                           f"the inventory must be a mapping with 'all:', not {typename(root)}",
                           hint="see inventory/example.yaml")
        if "all" not in root:
            first = min(root.values(), key=lambda v: v.at, default=None)
            close = suggest(next(iter(root)), ["all"]) if root else None
            raise self.err(first.at if first else 1,
                           "the inventory must have a top-level 'all:' key",
                           hint=close if close and close.startswith("did") else
                           "everything goes under 'all:' (vars, children, hosts); "
                           "see inventory/example.yaml")
        for k, v in root.items():
            if k != "all":
                raise self.err(v.at, f"unknown top-level key {k!r}",
                               hint="everything goes under 'all:' (vars, children, hosts)")
        self._group("all", root["all"], [], {})
        return self._finish(root["all"])

    def _mapping(self, v: Val, what: str) -> dict[str, Val]:
        if v.value is None:
            return {}
        if not isinstance(v.value, dict):
            raise self.err(v.line, f"{what} must be a mapping, got {shown(v.value)}")
        return v.value

    def _group(
        self, name: str, v: Val, parents: list[str], inherited: dict[str, tuple[Any, str]]
    ) -> list[str]:
        body = self._mapping(v, f"group {name!r}")
        for k, kv in body.items():
            if k == "initiators":
                if name != "all":
                    raise self.err(kv.at, f"'initiators' cannot be set in group {name!r}",
                                   hint="initiators are listed once, under 'all: initiators:'")
                continue
            if k not in GROUP_KEYS:
                hint = suggest(k, GROUP_KEYS)
                if k in HOST_KEYS or k in FLEET_KEYS:
                    hint = f"settings go under '{name}: vars:'"
                raise self.err(kv.at, f"unknown key {k!r} in group {name!r}",
                               hint=f"a group has 'vars', 'children' and 'hosts'; {hint}")
        scope = dict(inherited)
        if "vars" in body:
            for k, val in self._mapping(body["vars"], f"vars of group {name!r}").items():
                if k in FLEET_KEYS:
                    if name != "all":
                        raise self.err(val.at, f"{k!r} is a fleet-level setting and cannot be "
                                       f"set in group {name!r}",
                                       hint="set it under 'all: vars:'")
                    self.fleet[k] = val
                    continue
                if k not in HOST_KEYS:
                    raise self.err(val.at, f"unknown setting {k!r} in vars of group {name!r}",
                                   hint=suggest(k, [*HOST_KEYS, *FLEET_KEYS]))
                if k in INITIATOR_ONLY_KEYS:
                    raise self.err(val.at, f"{k!r} is an initiator's own setting and cannot be "
                                   f"set in vars of group {name!r}",
                                   hint="each initiator has its own DH-CHAP secret: set it on "
                                   "the initiator, under 'all: initiators: NAME:'")
                src = f"{self.file}:{val.line} (group {name})"
                if k == "labels" and "labels" in scope:
                    merged = dict(scope["labels"][0])
                    merged.update(self._labels(val))
                    scope[k] = (merged, f"{src} + {scope['labels'][1]}")
                else:
                    scope[k] = (self._check(k, val), src)
        members: list[str] = []
        lineage = [*parents, name] if name != "all" else []
        if "hosts" in body:
            for hname, hv in self._mapping(body["hosts"], f"hosts of group {name!r}").items():
                self._host(hname, hv, lineage, scope)
                members.append(hname)
        if "children" in body:
            for cname, cv in self._mapping(body["children"], f"children of {name!r}").items():
                if cname == "all":
                    raise self.err(cv.at, "'all' is the top group; it cannot be a child")
                if cname in self.groups:
                    raise self.err(cv.at, f"group {cname!r} is defined twice "
                                   f"(first at line {self.group_lines[cname]})",
                                   hint="a group appears once; nest it where it belongs")
                self.groups[cname] = []
                self.group_lines[cname] = cv.at
                members.extend(self._group(cname, cv, lineage, scope))
        if name != "all":
            self.groups[name] = list(dict.fromkeys(members))
        if "initiators" in body:
            conn = {k: x for k, x in scope.items() if k not in STORAGE_ONLY_KEYS}
            for iname, iv in self._mapping(body["initiators"], "initiators").items():
                self._initiator(iname, iv, conn)
        return members

    def _initiator(self, name: str, v: Val, scope: dict[str, tuple[Any, str]]) -> None:
        """An NVMe/TCP initiator: a Host with connection settings only."""
        if name in self.initiators:
            raise self.err(v.at, f"initiator {name!r} is defined twice "
                           f"(first at line {self.initiator_lines[name]})")
        body = self._mapping(v, f"initiator {name!r}")
        for k, val in body.items():
            if k in STORAGE_ONLY_KEYS:
                raise self.err(val.at, f"{k!r} is a storage-node setting and cannot be set on "
                               f"initiator {name!r}",
                               hint="initiators are database hosts that connect to the fleet; "
                               "they only take connection settings (address, port, user, "
                               "host_key, ...) and labels")
        both = [body[k] for k in INITIATOR_ONLY_KEYS if k in body]
        if len(both) > 1:
            raise self.err(max(x.at for x in both), f"initiator {name!r} has both "
                           "dhchap_secret_file and dhchap_secret_command",
                           hint="give one source for its DH-CHAP secret: a file or a command")
        self._host(name, v, [], scope, into=self.initiators, lines=self.initiator_lines,
                   what="initiator")
        host = self.initiators[name]
        if host.kind == "sim":
            where = body["kind"].line if "kind" in body else v.at
            raise self.err(where, f"initiator {name!r} has kind sim; the simulator has no "
                           "NVMe/TCP host", hint="give the initiator kind: ssh (or local)")

    def _host(
        self, name: str, v: Val, groups: list[str], scope: dict[str, tuple[Any, str]],
        *, into: dict[str, Host] | None = None, lines: dict[str, int] | None = None,
        what: str = "host",
    ) -> None:
        into = self.hosts if into is None else into
        lines = self.host_lines if lines is None else lines
        if not _HOST_NAME.match(name):
            raise self.err(v.at, f"{what} name {name[:60]!r} is not valid: a name is 1 to 253 "
                           "letters, digits, '.', '-', '_' or ':', starting with a letter or "
                           "digit", hint="name the host as you call it (stor-a1); its address "
                           "goes in 'address'")
        if name in into:
            raise self.err(v.at, f"host {name!r} is defined twice "
                           f"(first at line {lines[name]})",
                           hint="list a host once; use labels to tag it across zones or racks")
        body = self._mapping(v, f"{what} {name!r}")
        settings = dict(scope)
        for k, val in body.items():
            if k in FLEET_KEYS:
                raise self.err(val.at, f"{k!r} is a fleet-level setting and cannot be set on "
                               f"{what} {name!r}", hint="set it under 'all: vars:'")
            if k not in HOST_KEYS:
                raise self.err(val.at, f"unknown setting {k!r} for {what} {name!r}",
                               hint=suggest(k, list(HOST_KEYS)))
            if k in INITIATOR_ONLY_KEYS and what != "initiator":
                raise self.err(val.at, f"{k!r} is an initiator setting and cannot be set on "
                               f"storage node {name!r}",
                               hint="a DH-CHAP secret belongs to a database host: set it on that "
                               "host, under 'all: initiators:'")
            src = f"{self.file}:{val.line} ({what})"
            if k == "labels" and "labels" in settings:
                merged = dict(settings["labels"][0])
                merged.update(self._labels(val))
                settings[k] = (merged, f"{src} + {settings['labels'][1]}")
            else:
                settings[k] = (self._check(k, val), src)
        host = Host(name=name, groups=tuple(groups))
        for k, (value, src) in settings.items():
            setattr(host, k, dict(value) if isinstance(value, dict) else value)
            host.sources[k] = src
        if host.kind == "ssh" and not host.address:
            host.address = name
            host.sources["address"] = FROM_NAME
        if host.kind == "sim" and not host.pools:
            host.pools = ("tank",)
            host.sources["pools"] = "default for sim nodes"
        into[name] = host
        lines[name] = v.at

    def _labels(self, v: Val) -> dict[str, str]:
        m = self._mapping(v, "labels")
        out = {}
        for k, x in m.items():
            if isinstance(x.value, (dict, list)) or x.value is None:
                raise self.err(x.line, f"label {k!r} must be a plain value, got {shown(x.value)}",
                               hint="labels are flat: {zone: a, rack: r1}")
            out[k] = str(x.value).lower() if isinstance(x.value, bool) else str(x.value)
        return out

    def _hooks(self, v: Val) -> dict[str, tuple[tuple[str, ...], ...]]:
        m = self._mapping(v, "hooks")
        out: dict[str, tuple[tuple[str, ...], ...]] = {}
        for name, x in m.items():
            if name not in HOOK_NAMES:
                raise self.err(x.line, f"unknown hook {name!r}",
                               hint=f"hooks: {', '.join(HOOK_NAMES)}")
            if not isinstance(x.value, list) or not x.value:
                raise self.err(x.line, f"hook {name} must be {HOST_KEYS['hooks']}")
            items = x.value
            cmds = [items] if all(isinstance(i.value, str) for i in items) else items
            argvs: list[tuple[str, ...]] = []
            for cmd in cmds:
                if not isinstance(cmd.value if isinstance(cmd, Val) else cmd, list):
                    raise self.err(x.line, f"hook {name}: each command is a list of strings "
                                   "(an argument list, never a shell line)")
                args = cmd.value if isinstance(cmd, Val) else cmd
                if not args or not all(isinstance(a.value, str) for a in args):
                    raise self.err(x.line, f"hook {name}: each command is a non-empty list of "
                                   "strings")
                argvs.append(tuple(a.value for a in args))
            out[name] = tuple(argvs)
        return out

    def _target(self, v: Val) -> Any:
        """The `target` host key -> xfleet.fleet.target_spec.TargetSpec (checked item by item)."""

        m = self._mapping(v, "target")
        drv = m.get("driver")
        if drv is None or drv.value not in DRIVERS:
            raise self.err(drv.line if drv else v.at,
                           f"target: driver must be one of {', '.join(DRIVERS)}, got "
                           f"{shown(drv.value) if drv else 'nothing'}",
                           hint="e.g. target: {driver: nvmet} (docs/upgrades.md)")
        allowed = NVMET_SETTINGS if drv.value == "nvmet" else (*COMMAND_OPS, "stage_dir")
        settings: dict[str, Any] = {}
        commands: dict[str, tuple[str, ...]] = {}
        for k, x in m.items():
            if k == "driver":
                continue
            if k not in allowed:
                raise self.err(x.line, f"target: unknown setting {k!r} for driver {drv.value}",
                               hint=suggest(k, list(allowed)))
            if drv.value == "nvmet" or k == "stage_dir":
                if k == "port":
                    ok = isinstance(x.value, int) and not isinstance(x.value, bool) and \
                        1 <= x.value <= 65535
                else:
                    ok = isinstance(x.value, str) and bool(x.value.strip()) and \
                        not any(c.isspace() for c in x.value)
                if not ok:
                    raise self.err(x.line, f"target: {k} must be "
                                   f"{'a TCP port (1-65535)' if k == 'port' else 'a word'}, "
                                   f"got {shown(x.value)}")
                settings[k] = x.value
                continue
            args = x.value
            if not isinstance(args, list) or not args or \
                    not all(isinstance(a.value, str) for a in args):
                raise self.err(x.line, f"target: {k} must be a command: a non-empty list of "
                               "strings (an argument list, never a shell line)")
            argv = tuple(a.value for a in args)
            try:
                [a.format(**{n: "" for n in COMMAND_VARS}) for a in argv]
            except (KeyError, IndexError, ValueError) as exc:
                raise self.err(x.line, f"target: {k}: unknown variable {exc}",
                               hint="variables: " + ", ".join("{" + n + "}"
                                                             for n in COMMAND_VARS)) from None
            commands[k] = argv
        if drv.value == "command":
            missing = [op for op in COMMAND_REQUIRED if op not in commands]
            if missing:
                raise self.err(v.at, f"target: the command driver needs {', '.join(missing)}",
                               hint=f"operations: {', '.join(COMMAND_OPS)}")
        return TargetSpec(drv.value, settings, commands)

    def _command(self, key: str, v: Val) -> tuple[str, ...]:
        """A command setting: an argument list of non-empty strings, never a shell line."""
        if isinstance(v.value, str):
            raise self.err(v.line, f"{key} is a string; give the command as a list of "
                           "arguments (it is run without a shell)",
                           hint=f"e.g. {key}: [pass, show, nvme/db-a-01]")
        if not isinstance(v.value, list) or not v.value:
            raise self._bad(key, v)
        for a in v.value:
            if not isinstance(a.value, str) or not a.value:
                raise self.err(a.line, f"{key}: each argument must be a non-empty string, got "
                               f"{shown(a.value)}", hint=f"{key} must be {HOST_KEYS[key]}")
        return tuple(a.value for a in v.value)

    def _bad(self, key: str, v: Val) -> InventoryError:
        return self.err(v.line, f"{key} must be {HOST_KEYS[key]}, got {shown(v.value)}")

    def _mirror(self, f: dict[str, Val], base: Path, default: Path) -> Location:
        """The `mirror` setting: a path (relative to the inventory) or a PostgreSQL URL."""
        if "mirror" not in f:
            return default
        v = f["mirror"]
        if not isinstance(v.value, str) or not v.value:
            raise self.err(v.line, f"mirror must be {FLEET_KEYS['mirror']}, got {shown(v.value)}")
        if is_url(v.value):
            try:
                return location(v.value)
            except MirrorError as exc:
                raise self.err(v.line, str(exc), hint=exc.hint) from None
        p = Path(v.value).expanduser()
        return Path(os.path.normpath(p if p.is_absolute() else (base / p)))

    def _number(self, key: str, v: Val, kind: type, low: float, high: float = 1e12) -> Any:
        """A fleet setting that is a number in [low, high] (an int when `kind` is int)."""
        ok = (int,) if kind is int else (int, float)
        if not isinstance(v.value, ok) or isinstance(v.value, bool) or \
                not low <= v.value <= high:
            raise self.err(v.line, f"{key} must be {FLEET_KEYS[key]}, got {shown(v.value)}")
        return kind(v.value)

    def _rate(self, key: str, v: Val, keys: dict[str, str]) -> int:
        """Bytes per second: a positive integer or a size such as 200M."""

        val = v.value
        try:
            rate = parse_size(str(val)) if isinstance(val, (str, int)) and \
                not isinstance(val, bool) else 0
        except UsageError:
            rate = 0
        if rate <= 0:
            raise self.err(v.line, f"{key} must be {keys[key]}, got {shown(val)}")
        return rate

    def _check(self, key: str, v: Val) -> Any:
        val = v.value
        if key == "kind":
            if val not in KINDS:
                raise self._bad(key, v)
            return val
        if key == "port":
            if not isinstance(val, int) or isinstance(val, bool) or not 1 <= val <= 65535:
                raise self._bad(key, v)
            return val
        if key == "bwlimit":
            return self._rate(key, v, HOST_KEYS)
        if key in ("max_streams", "connect_retries"):
            if not isinstance(val, int) or isinstance(val, bool) or not 1 <= val <= 1000:
                raise self._bad(key, v)
            return val
        if key == "max_prune":
            if not isinstance(val, int) or isinstance(val, bool) or not 1 <= val <= 10_000_000:
                raise self._bad(key, v)
            return val
        if key in ("connect_timeout", "command_timeout"):
            if not isinstance(val, (int, float)) or isinstance(val, bool) or \
                    not 0 < val <= MAX_SECONDS:
                raise self._bad(key, v)
            return float(val)
        if key == "pools":
            if not isinstance(val, list) or not val:
                raise self._bad(key, v)
            out: list[str] = []
            for item in val:
                if not isinstance(item.value, str):
                    raise self.err(item.line, f"pools: pool name {shown(item.value)} is not "
                                   "a string")
                try:
                    out.append(validate_pool(item.value))
                except NameError_ as exc:
                    raise self.err(item.line, f"pools: {exc.message}", hint=exc.hint) from None
                if out.count(item.value) > 1:
                    raise self.err(item.line, f"pools: {item.value!r} is listed twice")
            return tuple(out)
        if key == "labels":
            return self._labels(v)
        if key == "hooks":
            return self._hooks(v)
        if key == "sim":
            sim = plain(self._mapping(v, "sim"))
            if sim.get("now") == SIM_TODAY:
                sim["now"] = int(time.time()) // DAY * DAY
            return sim
        if key == "target":
            return self._target(v)
        if key == "dhchap_secret_command":
            return self._command(key, v)
        if not isinstance(val, str) or not val.strip():
            raise self._bad(key, v)
        if key == "dhchap_secret_file":
            p = Path(val).expanduser()
            return Path(os.path.normpath(p if p.is_absolute() else (self.path.parent / p)))
        if key in ("identity_file", "known_hosts"):
            p = Path(val).expanduser()
            if not p.is_absolute():
                p = self.path.parent / p
            return str(p)
        if key == "host_key":
            # lazy: loading an inventory must not load the SSH transport (~20 ms)
            from xfleet.remote.ssh import parse_public_key  # lazy: see above

            try:
                parse_public_key(val)
            except HostKeyError as exc:
                raise self.err(v.line, f"host_key: {exc.message}", hint=exc.hint) from None
            return val.strip()
        if key == "proxy_jump":
            parse_proxy_jump(val, where=f"{self.file}:{v.line}")
            return val
        if any(c.isspace() for c in val) and key in ("address", "user", "private_address"):
            raise self._bad(key, v)
        return val

    def _finish(self, all_val: Val) -> Inventory:
        f = self.fleet
        base = self.path.parent

        def path_of(key: str, default: Path) -> Path:
            if key not in f:
                return default
            v = f[key]
            if not isinstance(v.value, str) or not v.value:
                raise self.err(v.line, f"{key} must be {FLEET_KEYS[key]}, got {shown(v.value)}")
            p = Path(v.value).expanduser()
            return Path(os.path.normpath(p if p.is_absolute() else (base / p)))

        if not self.hosts:
            raise self.err(all_val.at, "the inventory defines no hosts",
                           hint="add hosts under 'all: hosts:' or under a group's 'hosts:'")
        clash = sorted(set(self.hosts) & set(self.groups))
        if clash:
            raise self.err(self.group_lines[clash[0]],
                           f"{clash[0]!r} is both a group and a host (host at line "
                           f"{self.host_lines[clash[0]]})",
                           hint="names select hosts or groups, so they must differ")
        for iname, line in self.initiator_lines.items():
            if iname in self.hosts:
                raise self.err(line, f"{iname!r} is both an initiator and a host (host at line "
                               f"{self.host_lines[iname]})",
                               hint="a storage node is not an initiator; give each its own name")
            if iname in self.groups:
                raise self.err(line, f"{iname!r} is both an initiator and a group (group at "
                               f"line {self.group_lines[iname]})",
                               hint="give the initiator another name")
        state_default = Path(os.environ.get("XDG_STATE_HOME", "~/.local/state")).expanduser()
        inv = Inventory(
            path=self.path,
            hosts=self.hosts,
            groups=self.groups,
            mirror=self._mirror(f, base, state_default / "xfleet" / f"{self.path.stem}.db"),
            state_dir=path_of("state_dir", state_default / "xfleet" / self.path.stem),
            initiators=self.initiators,
        )
        if "compression_policy" in f:
            inv.compression_policy = path_of("compression_policy", base)
        for key, kind, low, high in (("price_per_gb_month", float, 0, 1e9),
                                     ("parallel", int, 1, MAX_PARALLEL),
                                     ("space_refresh_budget", int, 0, 2**62),
                                     ("space_refresh_interval", float, 0, MAX_SECONDS)):
            if key in f:
                setattr(inv, key, self._number(key, f[key], kind, low, high))
        if "currency" in f:
            v = f["currency"]
            if not isinstance(v.value, str) or not _CURRENCY.match(v.value):
                raise self.err(v.line, f"currency must be {FLEET_KEYS['currency']}, got "
                               f"{shown(v.value)}", hint="e.g. currency: EUR (the reports' "
                               "money is price_per_gb_month in this currency)")
            inv.currency = v.value
        if "move_bwlimit" in f:
            inv.move_bwlimit = self._rate("move_bwlimit", f["move_bwlimit"], FLEET_KEYS)
        if "tenant_property" in f:
            inv.tenant_property = self._user_prop("tenant_property", f["tenant_property"])
        if "user_properties" in f:
            v = f["user_properties"]
            if not isinstance(v.value, list):
                raise self.err(v.line, f"user_properties must be {FLEET_KEYS['user_properties']}"
                               f", got {shown(v.value)}")
            inv.user_properties = tuple(self._user_prop("user_properties", x) for x in v.value)
        if inv.tenant_property not in inv.user_properties:
            inv.user_properties = (inv.tenant_property, *inv.user_properties)
        # a volume's identity and allowed hosts are always mirrored (and so carried by moves
        # and replicas: docs/identity.md, docs/access.md)
        inv.user_properties += tuple(p for p in ALWAYS_MIRRORED if p not in inv.user_properties)
        if "environment" in f:
            env = self._mapping(f["environment"], "environment")
            for k, x in env.items():
                if k not in ("name", "colour", "color"):
                    raise self.err(x.at, f"unknown key {k!r} in environment",
                                   hint=suggest(k, ["name", "colour"]))
                if isinstance(x.value, (dict, list)) or x.value is None:
                    raise self.err(x.line, f"environment {k} must be a plain value, "
                                   f"got {shown(x.value)}")
            inv.environment = {("colour" if k == "color" else k): str(x.value)
                               for k, x in env.items()}
        return inv

    def _user_prop(self, key: str, v: Val) -> str:

        if not isinstance(v.value, str):
            raise self.err(v.line, f"{key}: {shown(v.value)} is not a user property name",
                           hint="user properties look like 'module:name', e.g. xfleet:tenant")
        try:
            return validate_user_property(v.value)
        except ParseError as exc:
            raise self.err(v.line, f"{key}: {exc.message}") from None


def load(path: str | os.PathLike[str]) -> Inventory:
    """Load and validate an inventory; raises InventoryError naming file:line and key."""
    return _Loader(Path(path)).load()


def default_path() -> Path | None:
    env = os.environ.get("XFLEET_INVENTORY")
    if env:
        return Path(env)
    for cand in (Path("inventory/fleet.yaml"), Path("inventory/default.yaml")):
        if cand.is_file():
            return cand
    return None


def unknown_initiator(inv: Inventory, name: str) -> UsageError:
    """The error for an initiator name the inventory does not list, with the close ones."""
    close = difflib.get_close_matches(name, list(inv.initiators), n=3)
    return UsageError(f"no initiator named {name!r} in the inventory",
                      where=str(inv.path),
                      hint=f"did you mean {', '.join(close)}?" if close else
                      "initiators are listed under 'all: initiators:' (docs/inventory.md); "
                      f"known: {', '.join(list(inv.initiators)[:10]) or '(none)'}")
