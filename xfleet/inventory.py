"""The inventory: which storage nodes exist and how to reach them.

Ansible-like YAML so SREs feel at home::

    all:
      vars: {...}            # fleet-level settings and defaults for every host
      children:
        zone-a:              # a group (zone, rack, tier...), nested as deep as you like
          vars: {...}
          hosts:
            n1: {address: 10.0.0.1, pools: [tank]}

Host settings are inherited all.vars < outer group vars < inner group vars < host. Every value
remembers where it came from (file:line), so `xfleet inventory show` can tell, and every error
names the file, the line and the key.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xfleet.errors import InventoryError
from xfleet.names import validate_pool

KINDS = ("ssh", "local", "sim")

# key -> (expected type description, validator)
HOST_KEYS: dict[str, str] = {
    "kind": "one of ssh, local, sim",
    "address": "a host name or IP address",
    "port": "a TCP port number (1-65535)",
    "user": "a user name",
    "identity_file": "a path to a private key",
    "proxy_jump": "[user@]host[:port] of a jump host",
    "host_key": "a pinned public host key, 'ssh-ed25519 AAAA...'",
    "known_hosts": "a path to a known_hosts file",
    "pools": "a list of pool names",
    "labels": "a mapping of label names to values",
    "max_streams": "a positive integer (concurrent send/receive streams on this node)",
    "connect_timeout": "seconds (a positive number)",
    "command_timeout": "seconds without output before a command is abandoned",
    "connect_retries": "a positive integer (attempts for connection-level failures)",
    "private_address": "the node's address on the storage network (node-to-node streams)",
    "sim": "a mapping of simulator settings (seed, volumes, ...)",
}
FLEET_KEYS: dict[str, str] = {
    "mirror": "a path to the SQLite mirror (relative to the inventory file)",
    "price_per_gb_month": "a price in your currency per GB-month (a number)",
    "parallel": "a positive integer (nodes worked on at once)",
    "user_properties": "a list of ZFS user properties to mirror, e.g. [xfleet:tenant]",
    "tenant_property": "the user property that names a volume's tenant",
    "environment": "a mapping with name and colour, e.g. {name: prod, colour: red}",
    "state_dir": "a directory for xfleet's local state (relative to the inventory file)",
}
DEFAULT_TENANT_PROPERTY = "xfleet:tenant"


@dataclass
class Host:
    name: str
    kind: str = "ssh"
    address: str | None = None
    port: int = 22
    user: str | None = None
    identity_file: str | None = None
    proxy_jump: str | None = None
    host_key: str | None = None
    known_hosts: str | None = None
    pools: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    max_streams: int = 2
    connect_timeout: float = 10.0
    command_timeout: float = 600.0
    connect_retries: int = 3
    private_address: str | None = None
    sim: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # key -> where the value came from


@dataclass
class Inventory:
    path: Path
    hosts: dict[str, Host]
    groups: dict[str, list[str]]
    mirror: Path
    state_dir: Path
    price_per_gb_month: float = 0.08
    parallel: int = 8
    user_properties: tuple[str, ...] = (DEFAULT_TENANT_PROPERTY,)
    tenant_property: str = DEFAULT_TENANT_PROPERTY
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def trust_store(self) -> Path:
        return self.state_dir / "known_hosts"

    def select(self, names: list[str] | tuple[str, ...] = ()) -> list[Host]:
        """Hosts by name or group name (all hosts when empty); unknown names are errors."""
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
                    f"known hosts: {', '.join(list(self.hosts)[:10])}",
                )
        return list(out.values())


# ---------------------------------------------------------------------------------------------
# YAML with line numbers


@dataclass
class _Val:
    value: Any
    line: int


def _convert(node: yaml.Node, file: str) -> Any:
    """A composed YAML node to plain Python, with every mapping value wrapped in _Val(line)."""
    if isinstance(node, yaml.MappingNode):
        out: dict[str, _Val] = {}
        for k, v in node.value:
            key = _convert(k, file)
            if not isinstance(key, str):
                raise InventoryError(
                    f"mapping key {key!r} is not a string", where=f"{file}:{k.start_mark.line + 1}"
                )
            if key in out:
                raise InventoryError(
                    f"duplicate key {key!r}", where=f"{file}:{k.start_mark.line + 1}",
                    hint="each key may appear once per mapping",
                )
            out[key] = _Val(_convert(v, file), v.start_mark.line + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_Val(_convert(v, file), v.start_mark.line + 1) for v in node.value]
    return yaml.safe_load(yaml.serialize(node)) if isinstance(node, yaml.ScalarNode) else None


def _plain(v: Any) -> Any:
    if isinstance(v, _Val):
        return _plain(v.value)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"


class _Loader:
    def __init__(self, path: Path):
        self.path = path
        self.file = str(path)

    def err(self, line: int, msg: str, hint: str | None = None) -> InventoryError:
        return InventoryError(msg, where=f"{self.file}:{line}", hint=hint)

    def load(self) -> Inventory:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            raise InventoryError(
                f"inventory file {self.file} does not exist",
                hint="pass --inventory PATH or set XFLEET_INVENTORY; "
                "see inventory/example.yaml for the format",
            ) from None
        except OSError as exc:
            raise InventoryError(f"cannot read inventory {self.file}: {exc}") from None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line = mark.line + 1 if mark else 0
            raise self.err(line, f"YAML syntax error: {exc.problem}",
                           hint="check indentation and quoting near this line") from None
        if node is None:
            raise self.err(1, "the inventory is empty", hint="it must start with 'all:'")
        root = _convert(node, self.file)
        if not isinstance(root, dict) or "all" not in root:
            raise self.err(1, "the inventory must have a top-level 'all:' key",
                           hint="see inventory/example.yaml")
        extra = [k for k in root if k != "all"]
        if extra:
            raise self.err(root[extra[0]].line, f"unknown top-level key {extra[0]!r}",
                           hint="everything goes under 'all:' (vars, children, hosts)")
        self.hosts: dict[str, Host] = {}
        self.groups: dict[str, list[str]] = {}
        self.fleet: dict[str, _Val] = {}
        self._group("all", root["all"], [], {})
        return self._finish()

    def _mapping(self, v: _Val, what: str) -> dict[str, _Val]:
        if v.value is None:
            return {}
        if not isinstance(v.value, dict):
            raise self.err(v.line, f"{what} must be a mapping, got {_typename(v.value)}")
        return v.value  # type: ignore[no-any-return]

    def _group(
        self, name: str, v: _Val, parents: list[str], inherited: dict[str, tuple[Any, str]]
    ) -> list[str]:
        body = self._mapping(v, f"group {name!r}")
        for k in body:
            if k not in ("vars", "children", "hosts"):
                raise self.err(body[k].line, f"unknown key {k!r} in group {name!r}",
                               hint="a group has 'vars', 'children' and 'hosts'")
        scope = dict(inherited)
        if "vars" in body:
            for k, val in self._mapping(body["vars"], f"vars of group {name!r}").items():
                if k in FLEET_KEYS:
                    if name != "all":
                        raise self.err(val.line, f"{k!r} is a fleet-level setting",
                                       hint="set it under all: vars:")
                    self.fleet[k] = val
                    continue
                if k not in HOST_KEYS:
                    raise self.err(val.line, f"unknown setting {k!r} in vars of group {name!r}",
                                   hint=_suggest(k, [*HOST_KEYS, *FLEET_KEYS]))
                src = f"{self.file}:{val.line} (group {name})"
                if k == "labels" and "labels" in scope:
                    merged = dict(scope["labels"][0])
                    merged.update(self._labels(val))
                    scope[k] = (merged, src)
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
                if cname in self.groups or cname == "all":
                    raise self.err(cv.line, f"group {cname!r} is defined twice")
                self.groups[cname] = []
                members.extend(self._group(cname, cv, lineage, scope))
        if name != "all":
            self.groups[name] = sorted(set(members), key=members.index)
        return members

    def _host(
        self, name: str, v: _Val, groups: list[str], scope: dict[str, tuple[Any, str]]
    ) -> None:
        if name in self.hosts:
            raise self.err(v.line, f"host {name!r} is defined twice",
                           hint="a host belongs to several groups by being listed in one place "
                           "and matched by labels, not by being repeated")
        body = self._mapping(v, f"host {name!r}")
        settings = dict(scope)
        for k, val in body.items():
            if k not in HOST_KEYS:
                raise self.err(val.line, f"unknown setting {k!r} for host {name!r}",
                               hint=_suggest(k, list(HOST_KEYS)))
            src = f"{self.file}:{val.line} (host)"
            if k == "labels" and "labels" in settings:
                merged = dict(settings["labels"][0])
                merged.update(self._labels(val))
                settings[k] = (merged, src)
            else:
                settings[k] = (self._check(k, val), src)
        host = Host(name=name, groups=tuple(groups))
        for k, (value, src) in settings.items():
            setattr(host, k, value)
            host.sources[k] = src
        if host.kind == "ssh" and not host.address:
            host.address = name
            host.sources["address"] = "host name (no 'address' set)"
        if host.kind == "sim" and not host.pools:
            host.pools = ("tank",)
            host.sources["pools"] = "default for sim nodes"
        self.hosts[name] = host

    def _labels(self, v: _Val) -> dict[str, str]:
        m = self._mapping(v, "labels")
        out = {}
        for k, x in m.items():
            if isinstance(x.value, (dict, list)) or x.value is None:
                raise self.err(x.line, f"label {k!r} must be a plain value")
            out[k] = str(x.value)
        return out

    def _check(self, key: str, v: _Val) -> Any:
        val = v.value
        line = v.line
        want = HOST_KEYS[key]
        if key == "kind":
            if val not in KINDS:
                raise self.err(line, f"kind {val!r} is not valid", hint=f"expected {want}")
            return val
        if key == "port":
            if not isinstance(val, int) or isinstance(val, bool) or not 1 <= val <= 65535:
                raise self.err(line, f"port {val!r} is not valid", hint=f"expected {want}")
            return val
        if key in ("max_streams", "connect_retries"):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise self.err(line, f"{key} {val!r} is not valid", hint=f"expected {want}")
            return val
        if key in ("connect_timeout", "command_timeout"):
            if not isinstance(val, (int, float)) or isinstance(val, bool) or val <= 0:
                raise self.err(line, f"{key} {val!r} is not valid", hint=f"expected {want}")
            return float(val)
        if key == "pools":
            if not isinstance(val, list) or not val:
                raise self.err(line, "pools must be a non-empty list", hint=f"expected {want}")
            out = []
            for item in val:
                if not isinstance(item.value, str):
                    raise self.err(item.line, f"pool name {item.value!r} is not a string")
                try:
                    out.append(validate_pool(item.value))
                except Exception as exc:
                    raise self.err(item.line, str(exc)) from None
            return tuple(out)
        if key == "labels":
            return self._labels(v)
        if key == "sim":
            return _plain(self._mapping(v, "sim"))
        if not isinstance(val, str) or not val.strip():
            raise self.err(line, f"{key} {val!r} is not valid", hint=f"expected {want}")
        if key in ("identity_file", "known_hosts"):
            p = Path(val).expanduser()
            if not p.is_absolute():
                p = self.path.parent / p
            return str(p)
        return val

    def _finish(self) -> Inventory:
        f = self.fleet
        base = self.path.parent

        def path_of(key: str, default: Path) -> Path:
            if key not in f:
                return default
            v = f[key]
            if not isinstance(v.value, str) or not v.value:
                raise self.err(v.line, f"{key} must be a path", hint=FLEET_KEYS[key])
            p = Path(v.value).expanduser()
            return p if p.is_absolute() else (base / p)

        state_default = Path(os.environ.get("XDG_STATE_HOME", "~/.local/state")).expanduser()
        inv = Inventory(
            path=self.path,
            hosts=self.hosts,
            groups=self.groups,
            mirror=path_of("mirror", state_default / "xfleet" / f"{self.path.stem}.db"),
            state_dir=path_of("state_dir", state_default / "xfleet" / self.path.stem),
        )
        if "price_per_gb_month" in f:
            v = f["price_per_gb_month"]
            if not isinstance(v.value, (int, float)) or isinstance(v.value, bool) or v.value < 0:
                raise self.err(v.line, "price_per_gb_month must be a non-negative number")
            inv.price_per_gb_month = float(v.value)
        if "parallel" in f:
            v = f["parallel"]
            if not isinstance(v.value, int) or isinstance(v.value, bool) or v.value < 1:
                raise self.err(v.line, "parallel must be a positive integer")
            inv.parallel = v.value
        if "tenant_property" in f:
            v = f["tenant_property"]
            inv.tenant_property = self._user_prop(v)
        if "user_properties" in f:
            v = f["user_properties"]
            if not isinstance(v.value, list):
                raise self.err(v.line, "user_properties must be a list",
                               hint=FLEET_KEYS["user_properties"])
            inv.user_properties = tuple(self._user_prop(x) for x in v.value)
        if inv.tenant_property not in inv.user_properties:
            inv.user_properties = (inv.tenant_property, *inv.user_properties)
        if "environment" in f:
            inv.environment = {k: str(x) for k, x in _plain(
                self._mapping(f["environment"], "environment")).items()}
        if not self.hosts:
            raise self.err(1, "the inventory defines no hosts",
                           hint="add hosts under all: hosts: or under a group")
        return inv

    def _user_prop(self, v: _Val) -> str:
        from xfleet.zfs import ParseError, validate_user_property

        if not isinstance(v.value, str):
            raise self.err(v.line, f"{v.value!r} is not a user property name")
        try:
            return validate_user_property(v.value)
        except ParseError as exc:
            raise self.err(v.line, str(exc)) from None


def _typename(v: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean"}.get(type(v), type(v).__name__)


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


def ssh_config_for(host: Host, config_path: Path | None = None) -> dict[str, tuple[str, str]]:
    """What ~/.ssh/config says for this host: key -> (value, source). Used by `inventory show`.

    Values set in the inventory win; ~/.ssh/config fills in only what the inventory leaves unset.
    """
    import paramiko

    path = config_path or Path("~/.ssh/config").expanduser()
    if not path.is_file():
        return {}
    cfg = paramiko.SSHConfig.from_path(str(path))
    found = cfg.lookup(host.address or host.name)
    out: dict[str, tuple[str, str]] = {}
    mapping = {"hostname": "address", "port": "port", "user": "user",
               "identityfile": "identity_file", "proxyjump": "proxy_jump"}
    for ssh_key, our_key in mapping.items():
        if ssh_key in found:
            val = found[ssh_key]
            if isinstance(val, list):
                val = val[0]
            out[our_key] = (str(val), f"{path} (Host {host.address or host.name})")
    return out


def apply_ssh_config(host: Host, config_path: Path | None = None) -> Host:
    """Fill settings the inventory left unset from ~/.ssh/config, recording the source."""
    for key, (val, src) in ssh_config_for(host, config_path).items():
        if key in host.sources and not host.sources[key].startswith("host name"):
            continue
        if key == "port":
            host.port = int(val)
        elif key == "identity_file":
            host.identity_file = str(Path(val).expanduser())
        else:
            setattr(host, key, val)
        host.sources[key] = src
    return host
