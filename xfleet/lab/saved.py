"""Saved boots: a lab VM booted once is saved (QEMU's RAM and device state, its disks) and the
next `up` restores it in seconds instead of booting it again (a minute or more under TCG).

After a VM came up from a cold boot (pool created on a storage node, `nvme-tcp` loaded on a
client), `save` stops it, migrates its state to a file (`migrate exec:dd of=state`, which also
flushes the disks' caches), copies its disks beside it, and lets it run on: about two seconds.
`restore` copies the disks back and starts QEMU with `-incoming exec:cat state`; the guest
goes on from where it was saved, so the caller sets its clock and stirs its random pool
(`after_restore`).

A saved boot is only used for a VM whose QEMU command line, seed (hostname, addresses, SSH
host key, authorized key) and QEMU version are those it was saved with: its `fingerprint`.
Anything else (a new image, other ports, other keys) boots cold and saves anew. To let every
lab on a machine share them, a lab whose state dir has no keys yet adopts the ones kept with
the saved boots (`adopt_key`). Saving and restoring are optimisations: any failure is
reported through `progress` and the VM boots cold.

Layout: `<image dir>/saved/id_ed25519{,.pub}` (the lab's client key),
`<image dir>/saved/<vm>/ssh_host_ed25519_key{,.pub}` and `<image dir>/saved/<vm>/<fingerprint>/`
(`state`, `root.qcow2`, `data.raw` on storage nodes, `meta.json`). The newest `KEEP` boots of
a VM name are kept (labs on other ports, such as the test session's beside `xfleet lab up`'s,
each keep theirs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xfleet.lab.errors import LabError
from xfleet.remote.transport import quote_command

# what changes with every boot and not with what the VM is: the machine id on the kernel
# command line, the node's own directory (a lab's state dir), `-S` (stalled start)
_MACHINE_ID = re.compile(r"systemd\.machine_id=[0-9a-f]+")
# What a saved boot holds of its VM's disks: the root overlay only. The data disk stays the
# node's own (saved.SAVE_POINT: no pool was imported when it was saved).
DISKS = ("root.qcow2",)
QMP_SOCKET = "qmp.sock"
MIGRATE_TIMEOUT = 180.0
KEEP = 3  # saved boots per VM name (~180 MB each)
UNIX_PATH_MAX = 107


def qmp_path(ndir: Path) -> Path | None:
    """The VM's QMP socket, or None when the path is too long for a unix socket (then the VM
    runs without one, and is neither saved nor restored)."""
    p = ndir / QMP_SOCKET
    return p if len(str(p).encode()) <= UNIX_PATH_MAX else None


def qmp(ndir: Path, *commands: dict[str, Any], timeout: float = 30.0) -> list[Any]:
    """Run QMP `commands` on the VM in `ndir`; their `return` values. Raises LabError on an
    error reply or when the socket does not answer."""
    path = qmp_path(ndir)
    if path is None:
        raise LabError(f"no QMP socket for {ndir.name} (state dir path too long)")
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            f = s.makefile("rw", encoding="utf-8")
            f.readline()  # the greeting
            out: list[Any] = []
            for cmd in ({"execute": "qmp_capabilities"}, *commands):
                f.write(json.dumps(cmd) + "\n")
                f.flush()
                while True:
                    line = f.readline()
                    if not line:
                        raise LabError(f"{ndir.name}: QMP closed during {cmd['execute']}")
                    reply = json.loads(line)
                    if "event" in reply:
                        continue
                    if "error" in reply:
                        raise LabError(f"{ndir.name}: QMP {cmd['execute']}: "
                                       f"{reply['error'].get('desc', reply['error'])}")
                    out.append(reply.get("return"))
                    break
            return out[1:]
    except (OSError, ValueError) as exc:
        raise LabError(f"{ndir.name}: QMP: {exc}") from None


def status(ndir: Path) -> str:
    """QEMU's run state (`running`, `paused`, `inmigrate`, `postmigrate`, ...)."""
    return str(qmp(ndir, {"execute": "query-status"})[0]["status"])


_qemu_version: str | None = None


def qemu_version() -> str:
    global _qemu_version
    if _qemu_version is None:
        try:
            _qemu_version = subprocess.run(
                ["qemu-system-x86_64", "--version"], capture_output=True, text=True,
                check=False, timeout=30).stdout.splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            _qemu_version = "unknown"
    return _qemu_version


# Where in a boot it is saved: 3 = a storage node before any pool is imported, and without
# its data disk (a restore keeps the node's own: after `down` or a power cycle its pool is
# imported from it; else it is blank and gets a new pool). Boots saved at another point (1:
# after the pool was created, with the data disk; 2: before, with it) never match.
SAVE_POINT = 3


def fingerprint(argv: Sequence[str], ndir: Path, seed: bytes) -> str:
    """What a saved boot must match: the command line (without what changes with every
    boot), the seed's content, the QEMU version and the save point."""
    norm = [_MACHINE_ID.sub("systemd.machine_id=*", a).replace(str(ndir), "@NODE@")
            for a in argv if a != "-S"]
    h = hashlib.sha256()
    h.update(json.dumps([norm, qemu_version(), SAVE_POINT]).encode())
    h.update(hashlib.sha256(seed).digest())
    return h.hexdigest()[:32]


def root(image_dir: Path) -> Path:
    return image_dir / "saved"


def boot_dir(image_dir: Path, vm: str, fp: str) -> Path:
    return root(image_dir) / vm / fp


def saved(image_dir: Path, vm: str, fp: str) -> Path | None:
    """The saved boot of `vm` with fingerprint `fp`, if it is complete."""
    d = boot_dir(image_dir, vm, fp)
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("fingerprint") != fp or not (d / "state").exists():
        return None
    if not all((d / disk).exists() for disk in meta.get("disks", [])):
        return None
    return d


def describe(d: Path) -> str:
    try:
        meta = json.loads((d / "meta.json").read_text())
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(meta["saved_at"])))
    except (OSError, ValueError, KeyError):
        when = "?"
    return f"restored from the boot saved {when}"


def _private_root(image_dir: Path) -> Path:
    r = root(image_dir)
    r.mkdir(parents=True, exist_ok=True)
    os.chmod(r, 0o700)  # holds private keys and guests' memory: the user's only
    return r


def adopt_key(image_dir: Path, name: str, local: Path) -> None:
    """Give `local` (a key pair path in a lab's state dir) the pair kept as `name` with the
    saved boots, or keep `local`'s pair there for the next lab, so the labs on this machine
    share saved boots. Best effort: without it a lab boots cold."""
    cached = root(image_dir) / name
    pairs = ((cached, local), (cached.with_name(cached.name + ".pub"),
                               local.with_name(local.name + ".pub")))
    with contextlib.suppress(OSError):
        if not local.exists() and cached.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            for src, dst in pairs:
                shutil.copyfile(src, dst)
            os.chmod(local, 0o600)
        elif local.exists() and not cached.exists():
            _private_root(image_dir)
            cached.parent.mkdir(parents=True, exist_ok=True)
            for dst, src in pairs:
                tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
                shutil.copyfile(src, tmp)
                os.chmod(tmp, 0o600)
                os.replace(tmp, dst)


def _copy(src: Path, dst: Path) -> None:
    """Copy a disk image, keeping it sparse (reflinked where the filesystem can)."""
    proc = subprocess.run(["cp", "--reflink=auto", "--sparse=always", str(src), str(dst)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"cannot copy {src} to {dst}: {proc.stderr.strip()}")


def _wait_migration(ndir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        info = qmp(ndir, {"execute": "query-migrate"})[0]
        state = info.get("status")
        if state == "completed":
            return
        if state in ("failed", "cancelled"):
            raise LabError(f"{ndir.name}: migration {state}: {info.get('error-desc', '')}")
        if time.monotonic() > deadline:
            with contextlib.suppress(LabError):
                qmp(ndir, {"execute": "migrate_cancel"})
            raise LabError(f"{ndir.name}: saving the VM state took over {timeout:.0f}s")
        time.sleep(0.1)


def save(image_dir: Path, vm: str, ndir: Path, fp: str) -> float:
    """Save the running VM in `ndir` as `vm`'s boot with fingerprint `fp`; it runs on
    afterwards. Returns the seconds it was stopped. Raises LabError (the VM still runs on)."""
    _private_root(image_dir)
    final = boot_dir(image_dir, vm, fp)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    t = time.monotonic()
    try:
        qmp(ndir, {"execute": "stop"},
            {"execute": "migrate",
             "arguments": {"uri": "exec:" + quote_command(
                 ["dd", f"of={tmp / 'state'}", "bs=1M", "status=none"])}})
        _wait_migration(ndir, MIGRATE_TIMEOUT)
        disks = [d for d in DISKS if (ndir / d).exists()]
        for d in disks:  # the images were flushed and released when the migration completed
            _copy(ndir / d, tmp / d)
    except LabError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        with contextlib.suppress(LabError):
            qmp(ndir, {"execute": "cont"})
    stopped = time.monotonic() - t
    (tmp / "meta.json").write_text(json.dumps(
        {"fingerprint": fp, "saved_at": time.time(), "disks": disks,
         "qemu": qemu_version(), "seconds": round(stopped, 2)}, indent=1) + "\n")
    old = final.with_name(f".old{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    _prune(final.parent)
    return stopped


def _prune(vm_dir: Path) -> None:
    """Keep the newest KEEP saved boots of a VM name."""
    boots = sorted((d for d in vm_dir.iterdir() if d.is_dir() and (d / "meta.json").exists()),
                   key=lambda d: (d / "meta.json").stat().st_mtime, reverse=True)
    for d in boots[KEEP:]:
        shutil.rmtree(d, ignore_errors=True)


def prepare(d: Path, ndir: Path) -> list[str]:
    """Put the saved disks in `ndir`; the extra QEMU arguments that restore the state."""
    meta = json.loads((d / "meta.json").read_text())
    for disk in meta.get("disks", []):
        (ndir / disk).unlink(missing_ok=True)
        _copy(d / disk, ndir / disk)
    return ["-incoming", "exec:" + quote_command(["cat", str(d / "state")])]


def resume(ndir: Path, alive: Callable[[], bool], timeout: float = 120.0) -> None:
    """Once QEMU (started with `prepare`'s arguments) has loaded the state, run the guest.
    `alive()` says whether QEMU still runs. Raises LabError if it does not get there."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            raise LabError(f"{ndir.name}: QEMU exited while loading the saved state")
        try:
            state = status(ndir)
        except LabError as exc:
            last = exc.message
        else:
            if state == "paused":  # loaded (it was saved stopped)
                qmp(ndir, {"execute": "cont"})
                return
            if state == "running":
                return
            last = state
        time.sleep(0.1)
    raise LabError(f"{ndir.name}: the saved state did not load within {timeout:.0f}s ({last})")


def after_restore_argv() -> list[str]:
    """Run in the guest right after a restore: the clock to now (the guest's clock went on
    from the moment it was saved) and fresh entropy into its random pool (every restore
    starts from the same pool)."""
    return ["sh", "-c", 'date -s "@$1" >/dev/null && printf %s "$2" > /dev/urandom', "sh",
            f"{time.time():.3f}", secrets.token_hex(32)]


def forget(d: Path) -> None:
    """Drop a saved boot (it failed to restore)."""
    shutil.rmtree(d, ignore_errors=True)
