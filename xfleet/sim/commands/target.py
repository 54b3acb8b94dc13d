"""The simulated NVMe-oF target daemon (TARGET: its `target` inventory setting).

`xfleet-sim-target installed|running|ready|exports|restart PATH VERSION|stage PATH SHA` behind
the `command` driver (docs/sim.md). It exports every volume of the node with pinned identities,
in the nvmet listing's format; a version ending in "-broken" never gets ready. Packages are
files put with put_file.sh (only their digest is kept), checked with sha256sum. Its state is
`state_dir/sim-NODE.target.json` next to the node's store, or in memory without one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xfleet.core.identity import pinned_identity
from xfleet.sim.commands.programs import device
from xfleet.sim.content import content_of, device_volume, full_hash
from xfleet.sim.registry import PROGRAM, Context, Fail, command

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport

# The inventory's `target` for simulated nodes: the simulated target daemon behind the
# `command` driver (docs/sim.md; inventory/demo.yaml spells out the same)
TARGET: dict[str, Any] = {
    "driver": "command",
    "installed_version": ["xfleet-sim-target", "installed"],
    "running_version": ["xfleet-sim-target", "running"],
    "ready": ["xfleet-sim-target", "ready"],
    "exports": ["xfleet-sim-target", "exports"],
    "stage": ["xfleet-sim-target", "stage", "{path}", "{sha256}"],
    "restart": ["xfleet-sim-target", "restart", "{path}", "{version}"],
    "rollback": ["xfleet-sim-target", "restart", "{path}", "{version}"],
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
            _save(sim, st)
            return iter(())
        if op == "exports":
            if not st["running"] and not st["installed"].endswith("-broken"):
                return iter(())
            lines = sim.dispatch(["zfs", "list", "-Hp", "-t", "volume", "-o", "name,guid"],
                                 Context(argv=["zfs", "list"]))
            node = sim.host.name

            def rows() -> Iterator[str]:
                for line in lines:
                    name, guid = line.split("\t")
                    u, g = pinned_identity(node, guid)
                    yield (f"nqn.2026-01.io.xfleet.sim:{node}:{name.replace('/', '.')}\t1\t"
                           f"/dev/zvol/{name}\t{u}\t{g}\t1")
            return rows()
    raise Fail("usage: xfleet-sim-target installed|running|ready|exports|"
               "restart PATH VERSION|stage PATH SHA256\n", 2)


def _path(sim: SimTransport) -> Path | None:
    return sim.store.path.with_suffix(".target.json") if sim.store else None


def _state(sim: SimTransport) -> dict[str, Any]:
    path = _path(sim)
    if path is not None and path.exists():
        return dict(json.loads(path.read_text()))
    mem = sim.daemons.get("target")
    return dict(mem) if mem else {"installed": "1.0", "running": "1.0", "files": {}}


def _save(sim: SimTransport, st: dict[str, Any]) -> None:
    path = _path(sim)
    if path is None:
        sim.daemons["target"] = st
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(st))
    os.replace(tmp, path)
