"""~/.ssh/config and ProxyJump: what OpenSSH's own configuration says about a node."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from xfleet.core.errors import InventoryError
from xfleet.remote.host import Host

USER_SSH_CONFIG = Path("~/.ssh/config")
FROM_NAME = "host name (no 'address' set)"  # the source of an address that defaults to the name


def parse_proxy_jump(spec: str, *, where: str | None = None) -> tuple[str | None, str, int]:
    """'[user@]host[:port]' (IPv6 as '[addr]:port') -> (user, host, port)."""
    if "," in spec:
        raise InventoryError(
            f"proxy_jump {spec!r} lists several jump hosts; one is supported", where=where
        )
    user, _, hostport = spec.rpartition("@")
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        bad = rest not in ("", f":{port_text}")
    else:
        host, _, port_text = hostport.partition(":")
        bad = False
    port = 22
    if port_text:
        port = int(port_text) if port_text.isdigit() else 0
    if bad or not host or not 1 <= port <= 65535 or (user == "" and "@" in spec):
        raise InventoryError(
            f"proxy_jump {spec!r} is not valid",
            where=where,
            hint="expected [user@]host[:port] of a jump host, e.g. admin@bastion.example.net:2222",
        )
    return (user or None), host, port


# ssh_config keyword -> Host field
_SSH_CONFIG_KEYS = {"hostname": "address", "port": "port", "user": "user",
                    "identityfile": "identity_file", "proxyjump": "proxy_jump"}
_UNSET: dict[str, Any] = {"address": None, "port": 22, "user": None, "identity_file": None,
                          "proxy_jump": None}


def ssh_config_for(host: Host, config_path: Path | None = None) -> dict[str, tuple[str, str]]:
    """What ~/.ssh/config (or `config_path`) says for this host: key -> (value, source).

    Only settings the config actually gives are returned (a `Host` block matching the host's
    address, or its name when no address is set). Used by `inventory show` and SSHTransport.
    """
    import paramiko  # lazy: 0.15 s to import, and most commands never connect

    path = (config_path or Path("~/.ssh/config")).expanduser()
    if not path.is_file():
        return {}
    try:
        cfg = paramiko.SSHConfig.from_path(str(path))
    except Exception as exc:
        raise InventoryError(f"cannot read ssh config {path}: {exc}", where=str(path)) from None
    target = host.address or host.name
    found = cfg.lookup(target)
    out: dict[str, tuple[str, str]] = {}
    for ssh_key, our_key in _SSH_CONFIG_KEYS.items():
        if ssh_key not in found:
            continue
        val = found[ssh_key]
        if isinstance(val, list):
            val = val[0]
        val = str(val)
        if ssh_key == "hostname" and val == target:
            continue  # paramiko fills HostName with the name looked up when the config has none
        if ssh_key == "proxyjump" and val.lower() == "none":
            continue
        out[our_key] = (val, f"{path} (Host matching {target})")
    return out


def apply_ssh_config(host: Host, config_path: Path | None = None) -> Host:
    """Fill settings the inventory left unset from ~/.ssh/config, recording the source.

    A setting counts as unset when the inventory did not give it (it is not in `sources`, or
    the address only defaults to the host name) and it still has its default value. Changes
    `host` in place and returns it.
    """
    for key, (val, src) in ssh_config_for(host, config_path).items():
        given = host.sources.get(key)
        if key == "address":
            if given and given != FROM_NAME:
                continue
        elif given or getattr(host, key) != _UNSET[key]:
            continue
        if key == "port":
            if not val.isdigit() or not 1 <= int(val) <= 65535:
                raise InventoryError(f"Port {val!r} is not a TCP port number",
                                     where=src, hint="fix the ssh config")
            host.port = int(val)
        elif key == "identity_file":
            host.identity_file = str(Path(val).expanduser())
        else:
            setattr(host, key, val)
        host.sources[key] = src
    return host


def effective_host(host: Host, ssh_config: Path | None = None) -> Host:
    """A copy of `host` with what the inventory leaves unset filled from ~/.ssh/config
    (or `ssh_config`): the settings SSHTransport, fetch_host_key and record_trust all use."""
    copy = dataclasses.replace(host, sources=dict(host.sources), labels=dict(host.labels))
    if host.kind != "ssh":
        return copy
    return apply_ssh_config(copy, (ssh_config or USER_SSH_CONFIG).expanduser())
