"""Saved boots (xfleet.lab.saved) with a real QEMU: a small machine without a kernel (its
firmware finds nothing to boot and waits) is saved while it runs, killed, and restored from
the file. No lab VM; runs in every test run. The lab proof (a storage node restored, its clock
set, its pool there) is tests/lab/test_lab_nodes.py::test_a_killed_node_comes_back_from_its_
saved_boot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xfleet.lab import LabError, saved
from xfleet.lab.qemu import pid_of, start_qemu, stop_qemu
from xfleet.lab.state import NodeInfo

QEMU = shutil.which("qemu-system-x86_64")


def _argv(ndir: Path) -> list[str]:
    qmp = saved.qmp_path(ndir)
    assert qmp is not None
    return ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "64",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-drive", f"file={ndir / 'root.qcow2'},if=none,id=root,format=qcow2,cache=unsafe",
            "-device", "virtio-blk-pci,drive=root",
            "-serial", f"file:{ndir / 'console.log'}",
            "-qmp", f"unix:{qmp},server=on,wait=off",
            "-pidfile", str(ndir / "qemu.pid"), "-daemonize"]


def _wait_status(ndir: Path, want: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            last = saved.status(ndir)
        except LabError as exc:
            last = exc.message
        if last == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"QEMU in {ndir} is {last!r}, not {want!r}, after {timeout}s")


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[tuple[NodeInfo, Path]]:
    if QEMU is None:
        pytest.fail("qemu-system-x86_64 is missing: `make test` installs it (lab-deps)")
    ndir = tmp_path / "nodes" / "vm1"
    ndir.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(ndir / "root.qcow2"), "16M"],
                   check=True)
    node = NodeInfo(name="vm1", index=1, ssh_port=0, private_address="10.77.0.11", host_key="")
    try:
        yield node, ndir
    finally:
        stop_qemu(ndir)


def test_a_running_vm_is_saved_killed_and_restored(
        vm: tuple[NodeInfo, Path], tmp_path: Path) -> None:
    node, ndir = vm
    image_dir = tmp_path / "image"
    argv = _argv(ndir)
    start_qemu(node, ndir, argv)
    _wait_status(ndir, "running")
    fp = saved.fingerprint(argv, ndir, b"seed")

    stopped = saved.save(image_dir, "vm1", ndir, fp)
    assert saved.status(ndir) == "running", "the VM must run on after its state is saved"
    entry = saved.saved(image_dir, "vm1", fp)
    assert entry is not None and stopped < 60
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["disks"] == ["root.qcow2"] and meta["fingerprint"] == fp
    assert (entry / "state").stat().st_size > 0
    assert oct(os.stat(saved.root(image_dir)).st_mode & 0o777) == "0o700"
    assert saved.saved(image_dir, "vm1", "another fingerprint") is None
    assert saved.saved(image_dir, "vm2", fp) is None
    # other labs (other ports: other fingerprints) keep theirs, up to KEEP per VM name
    for n in range(saved.KEEP):
        saved.save(image_dir, "vm1", ndir, f"other{n}")
    kept = sorted(d.name for d in (saved.root(image_dir) / "vm1").iterdir())
    assert kept == sorted(f"other{n}" for n in range(saved.KEEP)), kept
    assert saved.saved(image_dir, "vm1", fp) is None  # the oldest went
    saved.save(image_dir, "vm1", ndir, fp)
    entry = saved.saved(image_dir, "vm1", fp)
    assert entry is not None

    stop_qemu(ndir)  # as kill_node does: the VM and its disks are gone
    (ndir / "root.qcow2").unlink()
    extra = saved.prepare(entry, ndir)
    assert (ndir / "root.qcow2").read_bytes() == (entry / "root.qcow2").read_bytes()
    assert extra[0] == "-incoming"
    start_qemu(node, ndir, [*argv, *extra])
    # the state was saved stopped: once loaded, the VM waits paused until resume() runs it
    _wait_status(ndir, "paused")
    saved.resume(ndir, lambda: pid_of(ndir) is not None)
    assert saved.status(ndir) == "running"
    assert "restored from the boot saved" in saved.describe(entry)


def test_a_restore_whose_state_does_not_load_is_an_error(
        vm: tuple[NodeInfo, Path], tmp_path: Path) -> None:
    node, ndir = vm
    bad = tmp_path / "state"
    bad.write_bytes(b"not a migration stream")
    start_qemu(node, ndir, [*_argv(ndir), "-incoming", f"exec:cat {bad}"])
    with pytest.raises(LabError, match="QEMU exited while loading|did not load"):
        saved.resume(ndir, lambda: pid_of(ndir) is not None, timeout=30)


def test_fingerprint_ignores_what_changes_with_every_boot(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "nodes" / "lab1", tmp_path / "b" / "nodes" / "lab1"
    argv_a = ["qemu", "-append", "root=/dev/vda systemd.machine_id=00ff", "-pidfile",
              f"{a}/qemu.pid", "-netdev", "user,hostfwd=tcp:127.0.0.1:2201-:22"]
    argv_b = ["qemu", "-append", "root=/dev/vda systemd.machine_id=abcd", "-pidfile",
              f"{b}/qemu.pid", "-netdev", "user,hostfwd=tcp:127.0.0.1:2201-:22", "-S"]
    fp = saved.fingerprint(argv_a, a, b"seed")
    assert saved.fingerprint(argv_b, b, b"seed") == fp  # machine id, state dir, -S
    assert saved.fingerprint(argv_a, a, b"other keys") != fp
    other_port = [x.replace("2201", "2202") for x in argv_a]
    assert saved.fingerprint(other_port, a, b"seed") != fp


def test_keys_are_kept_with_the_saved_boots_and_adopted_by_a_new_lab(tmp_path: Path) -> None:
    image_dir = tmp_path / "image"
    first = tmp_path / "lab-a" / "id_ed25519"
    first.parent.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(first)], check=True)
    saved.adopt_key(image_dir, "id_ed25519", first)  # kept for the next lab
    kept = saved.root(image_dir) / "id_ed25519"
    assert kept.read_bytes() == first.read_bytes()
    assert oct(kept.stat().st_mode & 0o777) == "0o600"

    second = tmp_path / "lab-b" / "id_ed25519"
    saved.adopt_key(image_dir, "id_ed25519", second)  # a new lab takes it
    assert second.read_bytes() == first.read_bytes()
    assert second.with_name("id_ed25519.pub").read_text() == \
        first.with_name("id_ed25519.pub").read_text()
    assert oct(second.stat().st_mode & 0o777) == "0o600"

    third = tmp_path / "lab-c" / "id_ed25519"  # a lab with its own key keeps it
    third.parent.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(third)], check=True)
    own = third.read_bytes()
    saved.adopt_key(image_dir, "id_ed25519", third)
    assert third.read_bytes() == own and kept.read_bytes() == first.read_bytes()


def test_an_incomplete_saved_boot_is_not_used(tmp_path: Path) -> None:
    image_dir = tmp_path / "image"
    d = saved.boot_dir(image_dir, "lab1", "f")
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"fingerprint": "f", "disks": ["data.raw"]}))
    (d / "state").write_bytes(b"x")
    assert saved.saved(image_dir, "lab1", "f") is None  # its data disk is missing
    (d / "data.raw").write_bytes(b"")
    assert saved.saved(image_dir, "lab1", "f") == d
    (d / "meta.json").write_text("{not json")
    assert saved.saved(image_dir, "lab1", "f") is None


def test_a_restore_replaces_the_root_overlay_and_never_the_data_disk(
        tmp_path: Path) -> None:
    image_dir, ndir = tmp_path / "image", tmp_path / "lab1"
    d = saved.boot_dir(image_dir, "lab1", "f")
    d.mkdir(parents=True)
    ndir.mkdir()
    (d / "meta.json").write_text(json.dumps({"fingerprint": "f", "disks": list(saved.DISKS)}))
    for name in ("state", *saved.DISKS):
        (d / name).write_bytes(b"saved " + name.encode())
    (ndir / "data.raw").write_bytes(b"the pool as it was on the disk")
    (ndir / "root.qcow2").write_bytes(b"a root overlay written by a killed VM")
    saved.prepare(d, ndir)
    assert (ndir / "data.raw").read_bytes() == b"the pool as it was on the disk"
    assert (ndir / "root.qcow2").read_bytes() == b"saved root.qcow2"
    assert saved.DISKS == ("root.qcow2",)
