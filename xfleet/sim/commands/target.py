"""The simulated NVMe-oF target daemon (TARGET: its `target` inventory setting).

`xfleet-sim-target installed|running|ready|exports|restart PATH VERSION|stage PATH SHA|set-hosts`
behind the `command` driver (docs/sim.md). It exports every volume of the node with pinned
identities, in the nvmet listing's format (with its ALLOW_ANY and HOSTS columns); a version
ending in "-broken" never gets ready. Packages are files put with put_file.sh (only their
digest is kept), checked with sha256sum. `set-hosts` reads `NQN<TAB>HOSTS` lines on stdin and
restricts those subsystems to those hosts (empty: none), like nvmet's `allowed_hosts`; a
restart re-applies every volume's `xfleet:hosts` property (absent: open to any host), as the
lab's target daemon does. Its state is `state_dir/sim-NODE.target.json` next to the node's
store, or in memory without one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xfleet.core.access import parse_hosts_value
from xfleet.core.identity import (
    HOSTS_PROPERTY,
    UUID_PROPERTY,
    pinned_identity,
    subsystem_nqn,
    valid_volume_uuid,
    volume_identity,
)
from xfleet.sim.commands.programs import device
from xfleet.sim.content import content_of, device_volume, full_hash
from xfleet.sim.registry import PROGRAM, Context, Fail, command

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport

# The inventory's `target` for simulated nodes: the simulated target daemon behind the
# `command` driver (docs/sim.md; inventory/demo.yaml spells out the same)
SIM_PREFIX = "nqn.2026-01.io.xfleet.sim"  # the simulated target's nqn_prefix
TARGET: dict[str, Any] = {
    "driver": "command",
    "installed_version": ["xfleet-sim-target", "installed"],
    "running_version": ["xfleet-sim-target", "running"],
    "ready": ["xfleet-sim-target", "ready"],
    "exports": ["xfleet-sim-target", "exports"],
    "stage": ["xfleet-sim-target", "stage", "{path}", "{sha256}"],
    "restart": ["xfleet-sim-target", "restart", "{path}", "{version}"],
    "rollback": ["xfleet-sim-target", "restart", "{path}", "{version}"],
    "set_hosts": ["xfleet-sim-target", "set-hosts"],
}


@command(PROGRAM, "put_file")
def put_file(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    """put_file.sh PATH, the package on stdin."""
    with sim.lock:
        st = _state(sim)
        st["files"][args[0]] = hashlib.sha256(ctx.stdin or b"").hexdigest()
        _save(sim, st)
        return iter(())


@command("sha256sum")
def sha256sum(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    """`sha256sum [--] PATH`: a staged package's digest, or a volume's device (a move's full
    verification: the hash of its content identity, xfleet/sim/content.py)."""
    path = args[-1] if args else "-"
    if device_volume(path) is not None:
        rec = device(sim, path)
        if rec is None:
            raise Fail(f"sha256sum: {path}: No such file or directory\n", 1)
        return iter([f"{full_hash(content_of(rec), int(rec['volsize']))}  {path}"])
    with sim.lock:
        st = _state(sim)
        if path not in st["files"]:
            raise Fail(f"sha256sum: {path}: No such file or directory\n", 1)
        return iter([f"{st['files'][path]}  {path}"])


@command("xfleet-sim-target")
def target_daemon(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    with sim.lock:
        st = _state(sim)
        op, rest = (args[0], args[1:]) if args else ("", [])
        if op in ("installed", "running", "ready"):
            v = st["installed"] if op == "installed" else st["running"]
            if op == "ready" and not v:
                raise Fail("not ready\n", 1)
            return iter([v] if v else [])
        if op == "stage" and len(rest) == 2:
            if st["files"].get(rest[0]) != rest[1]:
                raise Fail(f"stage: {rest[0]}: digest mismatch\n", 1)
            return iter(())
        if op == "restart" and len(rest) == 2:
            path, version = rest
            if path and path not in st["files"]:
                raise Fail(f"dpkg: error: cannot access archive '{path}'\n", 2)
            st["installed"] = version or st["installed"]
            st["running"] = None if st["installed"].endswith("-broken") else st["installed"]
            st["hosts"] = _hosts_from_properties(sim)
            _save(sim, st)
            return iter(())
        if op == "exports":
            if not st["running"] and not st["installed"].endswith("-broken"):
                return iter(())
            hosts: dict[str, list[str]] = st.get("hosts") or {}

            def rows() -> Iterator[str]:
                for nqn, name, guid, _, vuuid in _volumes(sim):
                    u, g = volume_identity(vuuid) if vuuid else \
                        pinned_identity(sim.host.name, guid)
                    allowed = hosts.get(nqn)
                    yield (f"{nqn}\t1\t/dev/zvol/{name}\t{u}\t{g}\t1\t"
                           f"{0 if allowed is not None else 1}\t{','.join(allowed or ())}")
            return rows()
        if op == "set-hosts" and not rest:
            return _set_hosts(sim, st, (ctx.stdin or b"").decode())
    raise Fail("usage: xfleet-sim-target installed|running|ready|exports|"
               "restart PATH VERSION|stage PATH SHA256|set-hosts\n", 2)


def _volumes(sim: SimTransport, prop: bool = False
             ) -> Iterator[tuple[str, str, str, str, str | None]]:
    """(nqn, volume, guid, xfleet:hosts or "-", own xfleet:uuid or None) of every volume of
    the node: a volume with its own UUID (set or received, never inherited) is exported under
    the identity derived from it (docs/identity.md), the others under the pinned one."""
    cols = f"name,guid,{HOSTS_PROPERTY}" if prop else "name,guid"
    node = sim.host.name
    own: dict[str, str] = {}
    for pool in sim.base.pools:
        for line in sim.dispatch(["zfs", "get", "-H", "-p", "-r", "-t", "volume", "-s",
                                  "local,received", "-o", "name,value", UUID_PROPERTY, pool],
                                 Context(argv=["zfs", "get"])):
            vol, _, got = line.partition("\t")
            if valid_volume_uuid(got):
                own[vol] = got
    for line in sim.dispatch(["zfs", "list", "-Hp", "-t", "volume", "-o", cols],
                             Context(argv=["zfs", "list"])):
        name, guid, *value = line.split("\t")
        vuuid = own.get(name)
        yield (subsystem_nqn(SIM_PREFIX, node, name, vuuid), name, guid,
               value[0] if value else "-", vuuid)


def _hosts_from_properties(sim: SimTransport) -> dict[str, list[str]]:
    """What a (re)start applies: each volume's `xfleet:hosts` (absent or empty: open)."""
    out: dict[str, list[str]] = {}
    for nqn, _, _, value, _ in _volumes(sim, prop=True):
        hosts = parse_hosts_value(value)
        if hosts is not None:
            out[nqn] = list(hosts)
    return out


def _set_hosts(sim: SimTransport, st: dict[str, Any], text: str) -> Iterator[str]:
    """`set-hosts`: NQN<TAB>HOSTS lines; an unknown subsystem is reported on its line."""
    jobs: list[tuple[str, list[str]]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].startswith("nqn."):
            raise Fail(f"set-hosts: line {n}: expected NQN<TAB>HOSTS, got {line!r}\n", 2)
        jobs.append((parts[0], [h for h in parts[1].split(",") if h]))
    known = {nqn for nqn, *_ in _volumes(sim)} if jobs else set()
    hosts: dict[str, list[str]] = dict(st.get("hosts") or {})
    out: list[str] = []
    for nqn, allowed in jobs:
        if nqn not in known:
            out.append(f"{nqn}\tERR\tno such subsystem")
            continue
        hosts[nqn] = sorted(set(allowed))
        out.append(f"{nqn}\tOK\t")
    st["hosts"] = hosts
    _save(sim, st)
    return iter(out)


@command(PROGRAM, "zvol_hosts")
def zvol_hosts(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    """zvol_hosts.py PROPERTY, VOLUME<TAB>VALUE lines on stdin: the same `zfs set PROP=VALUE
    VOLUME...` per value, answered by this node's `zfs set` (xfleet/remote/programs/
    zvol_hosts.py; chunks and one-by-one retries make no difference here)."""
    if len(args) != 1:
        raise Fail("IndexError: list index out of range\n", 1)
    groups: dict[str, list[str]] = {}
    for n, line in enumerate((ctx.stdin or b"").decode().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise Fail(f"line {n}: expected VOLUME<TAB>VALUE, got {line!r}\n", 2)
        groups.setdefault(parts[1], []).append(parts[0])
    return iter(_zfs_set_each(sim, args[0], groups.items()))


def _zfs_set_each(sim: SimTransport, prop: str,
                  groups: Iterable[tuple[str, list[str]]]) -> list[str]:
    out: list[str] = []
    done = 0
    for value, names in groups:
        sub = Context(argv=["zfs", "set"])
        try:
            list(sim.dispatch(["zfs", "set", f"{prop}={value}", *names], sub))
        except Fail as f:
            sub.fail(f.stderr, f.code)
        if sub.code == 0:
            done += len(names)
            continue
        for one in names:
            s1 = Context(argv=["zfs", "set"])
            try:
                list(sim.dispatch(["zfs", "set", f"{prop}={value}", one], s1))
            except Fail as f:
                s1.fail(f.stderr, f.code)
            if s1.code == 0:
                done += 1
            else:
                out.append(f"ERR\t{one}\t{' '.join(''.join(s1.err).split())}")
    return [*out, f"OK\t{done}"]


def _path(sim: SimTransport) -> Path | None:
    return sim.store.path.with_suffix(".target.json") if sim.store else None


def _state(sim: SimTransport) -> dict[str, Any]:
    path = _path(sim)
    if path is not None and path.exists():
        return dict(json.loads(path.read_text()))
    mem = sim.daemons.get("target")
    return dict(mem) if mem else {"installed": "1.0", "running": "1.0", "files": {},
                                  "hosts": {}}


def _save(sim: SimTransport, st: dict[str, Any]) -> None:
    path = _path(sim)
    if path is None:
        sim.daemons["target"] = st
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(st))
    os.replace(tmp, path)
