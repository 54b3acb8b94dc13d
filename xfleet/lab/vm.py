"""Run the lab: N QEMU VMs booted from the cached image, each with a ZFS pool `tank`, plus
optional client VMs (`client1..`, role "client": NVMe/TCP initiators, no data disk, no pool).

Per node (under the state dir, `nodes/<name>/`): a qcow2 overlay over the cached root image, a
sparse raw data disk holding the pool, a seed tar (hostname, network, SSH host key), the pinned
host key pair (generated here, so it is known before the VM boots), a pid file and the serial
console log. The client key pair and the known_hosts file are shared by the lab.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from xfleet.lab import saved, ssh
from xfleet.lab.errors import LabError
from xfleet.lab.image import Image, cached_image
from xfleet.lab.paths import Progress, emit, locked, state_root
from xfleet.lab.pool import ensure_pool, recreate_pool
from xfleet.lab.qemu import (
    detect_accel,
    link_specs,
    pid_of,
    qemu_argv,
    seed_tar,
    shared_keygen,
    start_qemu,
    stop_qemu,
    wait_ports_free,
    wait_ssh,
    watch_boot,
)
from xfleet.lab.state import (
    CLIENT_ADDRESS_BASE,
    DEFAULT_LINK_PORT,
    DEFAULT_SSH_PORT,
    MAX_CLIENTS,
    POOL,
    RESTORE_TIMEOUT,
    SILENT_TIMEOUT,
    LabState,
    NodeInfo,
    NodeStatus,
    plan,
)

# ---------------------------------------------------------------------------------------------
# public API


def up(
    nodes: int = 2,
    inventory_path: Path | None = Path("inventory/lab.yaml"),
    *,
    state_dir: Path | None = None,
    ssh_port: int = DEFAULT_SSH_PORT,
    link_port: int = DEFAULT_LINK_PORT,
    data_disk_gb: int = 8,
    fresh: bool = False,
    clients: int = 0,
    progress: Progress = None,
    silent_timeout: float = SILENT_TIMEOUT,
    stall_first_boot: Sequence[str] = (),
    cold: bool = False,
) -> LabState:
    """Boot `nodes` storage VMs and `clients` initiator VMs (reusing running ones), make sure
    pool `tank` exists on each storage node, and write the inventory. `fresh=True` throws away
    existing overlays and data disks first. Clients that are already running are kept (so
    `up(2)` after `up(2, clients=1)` does not lose client1).

    Boot watchdog: a VM whose console stays empty for `silent_timeout` seconds is killed and
    booted again, at most `BOOT_ATTEMPTS` boots; `NodeInfo.boot_attempt`/`boot_note` (and
    `status()`) say which boot came up and why earlier ones were killed. `stall_first_boot`
    names VMs whose first boot is started with its CPUs stopped (QEMU `-S`): fault injection
    for the watchdog's own test.

    Saved boots (xfleet.lab.saved): a VM whose saved boot matches is restored (seconds)
    instead of booted; one that boots cold is saved once it is ready. `cold=True` boots every
    VM from the image (and saves it anew).

    A storage node that still has its data disk (stopped by `down`, or power-cycled by
    `kill_node(..., keep_data=True)`) comes back with that disk, restored or booted, and its
    pool is imported from it: never replaced by the saved disk, never a new pool over it."""
    if not 1 <= nodes <= 9:
        raise LabError(f"nodes must be between 1 and 9, got {nodes}")
    if not 0 <= clients <= MAX_CLIENTS:
        raise LabError(f"clients must be between 0 and {MAX_CLIENTS}, got {clients}",
                       hint="lab1 has one spare private link per possible client")
    img = cached_image()
    if img is None:
        raise LabError("the lab image is not built", hint="run `xfleet lab build` first")
    sd = (state_dir or state_root()).resolve()
    sd.mkdir(parents=True, exist_ok=True)
    os.chmod(sd, 0o700)
    with locked(sd, "lab operation", progress):
        return _up(nodes, clients, inventory_path, img, sd, ssh_port, link_port, data_disk_gb,
                   fresh, progress, silent_timeout, frozenset(stall_first_boot), cold)


def _up(
    nodes: int,
    clients: int,
    inventory_path: Path | None,
    img: Image,
    sd: Path,
    ssh_port: int,
    link_port: int,
    data_disk_gb: int,
    fresh: bool,
    progress: Progress,
    silent_timeout: float,
    stall_first_boot: frozenset[str],
    cold: bool,
) -> LabState:
    try:
        old = LabState.load(sd)
    except LabError:
        old = None
    if old is not None:
        running = [n.name for n in old.nodes if pid_of(n.dir(sd))]
        if running and (len(old.storage_nodes) != nodes or fresh):
            raise LabError(
                f"the lab is already running with nodes {', '.join(running)}",
                hint="run `xfleet lab down` first to change the node count or start fresh",
            )
        running_clients = [n.index - CLIENT_ADDRESS_BASE for n in old.clients
                           if pid_of(n.dir(sd))]
        clients = max([clients, *running_clients])
        hub = old.storage_nodes[0] if old.storage_nodes else None
        if (clients and hub is not None and pid_of(hub.dir(sd))
                and len(hub.link_ports) < nodes - 1 + clients):
            raise LabError(
                f"{hub.name} is running without a spare private link for clients",
                hint="run `xfleet lab down` and `xfleet lab up --clients N` again",
            )
    if fresh and (sd / "nodes").exists():
        shutil.rmtree(sd / "nodes")

    t0 = time.monotonic()
    accel = old.accel if old is not None and old.nodes and any(
        pid_of(n.dir(sd)) for n in old.nodes) else detect_accel(img.kernel, img.initrd)
    emit(progress, f"accelerator: {accel}")
    lab = LabState(
        state_dir=sd,
        image_dir=img.dir,
        inventory_path=inventory_path.resolve() if inventory_path else None,
        accel=accel,
        nodes=[],
    )
    shared_keygen(img, "id_ed25519", lab.identity_file, "xfleet-lab-client")
    booted = {n.name: n for n in old.nodes if pid_of(n.dir(sd))} if old is not None else {}
    for name, index, port, address, link_ports, role in plan(nodes, clients, ssh_port,
                                                             link_port):
        ndir = sd / "nodes" / name
        host_key = shared_keygen(img, f"{name}/ssh_host_ed25519_key",
                                  ndir / "ssh_host_ed25519_key", f"root@{name}")
        prior = booted.get(name)  # running: keeps what the watchdog recorded about its boot
        lab.nodes.append(
            NodeInfo(
                name=name,
                index=index,
                ssh_port=port,
                private_address=address,
                host_key=host_key,
                link_ports=link_ports,
                role=role,
                boot_attempt=prior.boot_attempt if prior else 1,
                boot_note=prior.boot_note if prior else None,
            )
        )
    lab.known_hosts.write_text("".join(f"{n.name} {n.host_key}\n" for n in lab.nodes))
    lab.save()

    specs = link_specs(lab.nodes)
    started: list[NodeInfo] = []
    fingerprints: dict[str, str] = {}  # VM -> what its saved boot must match
    restored: set[str] = set()  # VMs that came up from their saved boot

    def argv_of(node: NodeInfo) -> list[str]:
        ndir = node.dir(sd)
        argv = qemu_argv(lab, node, img, specs[node.name])
        fingerprints[node.name] = saved.fingerprint(argv, ndir, (ndir / "seed.tar").read_bytes())
        return argv

    def try_restore(node: NodeInfo, argv: list[str]) -> bool:
        """Restore `node` from its saved boot and check it answers; False (and nothing
        running) when there is none or it fails: then it boots cold."""
        ndir = node.dir(sd)
        entry = None if cold else saved.saved(img.dir, node.name, fingerprints[node.name])
        if entry is None:
            return False
        t = time.monotonic()
        try:
            start_qemu(node, ndir, [*argv, *saved.prepare(entry, ndir)])
            saved.resume(ndir, lambda: pid_of(ndir) is not None)
            wait_ssh(lab, node, progress, timeout=RESTORE_TIMEOUT)
            ssh.run(lab.endpoint(node), saved.after_restore_argv(), timeout=60)
        except (LabError, OSError) as exc:
            emit(progress, f"{node.name}: its saved boot did not come up "
                           f"({getattr(exc, 'message', exc)}); forgotten, booting cold")
            stop_qemu(ndir)
            saved.forget(entry)
            for disk in saved.DISKS:
                (ndir / disk).unlink(missing_ok=True)
            _prepare_disks(node, ndir, img, data_disk_gb)
            return False
        note = saved.describe(entry)
        node.boot_note = f"{node.boot_note}; {note}" if node.boot_note else note
        restored.add(node.name)
        emit(progress, f"{node.name}: {note} in {time.monotonic() - t:.1f}s "
                       f"(ssh 127.0.0.1:{node.ssh_port})")
        return True

    # The hub's peers connect to its private links once, when they start: a hub that starts
    # while peers run (lab1 power-cycled) would leave them without a private link, so they
    # are restarted with it (their data disks kept, as in a power cycle).
    hub = lab.storage_nodes[0] if lab.storage_nodes else None
    if hub is not None and not pid_of(hub.dir(sd)):
        for peer in lab.nodes:
            if peer is not hub and pid_of(peer.dir(sd)):
                emit(progress, f"{peer.name}: restarted with {hub.name}, whose private links "
                               "it connects to")
                _kill(lab, peer, keep_data=True)
    for node in lab.nodes:
        ndir = node.dir(sd)
        if pid_of(ndir):
            emit(progress, f"{node.name}: already running")
            continue
        ports = [node.ssh_port, *[p for p in node.link_ports if node.index == 1]]
        wait_ports_free(node.name, ports)
        _prepare_disks(node, ndir, img, data_disk_gb, progress)
        hostid = f"{0x7f000000 + node.index:08x}"
        seed = ndir / "seed.tar"  # holds the node's private host key
        seed.touch(mode=0o600)
        os.chmod(seed, 0o600)
        seed.write_bytes(seed_tar(lab, node, hostid))
        argv = argv_of(node)
        started.append(node)
        if node.name not in stall_first_boot and try_restore(node, argv):
            continue
        if node.name in stall_first_boot:  # fault injection: a guest that never starts
            argv = [*argv, "-S"]
        start_qemu(node, ndir, argv)
        emit(progress, f"{node.name}: qemu started (ssh 127.0.0.1:{node.ssh_port})")

    def restart(node: NodeInfo) -> bool:
        restored.discard(node.name)
        argv = argv_of(node)
        if try_restore(node, argv):
            return True
        start_qemu(node, node.dir(sd), argv)
        return False

    watch_boot(started, sd, restart, progress, silent_timeout=silent_timeout,
               alive=restored)
    if any(n.boot_attempt > 1 for n in started) or restored:
        lab.save()

    def ready(node: NodeInfo) -> None:
        if node.name not in restored:
            wait_ssh(lab, node, progress)
        if node.is_client:
            if node.name not in restored:
                ssh.run(lab.endpoint(node), ["modprobe", "nvme-tcp"])
            emit(progress, f"{node.name}: client ready ({time.monotonic() - t0:.0f}s)")
        if node in started and node.name not in restored:
            # a storage node before any pool is imported (saved.SAVE_POINT): a power cycle
            # restores this state with the node's own data disk and imports its pool
            _save_boot(lab, node, img, fingerprints[node.name], progress)
        if not node.is_client:
            ensure_pool(lab, node)
            attempt = f", boot attempt {node.boot_attempt}" if node.boot_attempt > 1 else ""
            emit(progress, f"{node.name}: pool {POOL} ready ({time.monotonic() - t0:.0f}s"
                           f"{attempt})")

    with ThreadPoolExecutor(max_workers=len(lab.nodes)) as pool:
        for f in [pool.submit(ready, n) for n in lab.nodes]:
            f.result()
    if inventory_path is not None:
        write_inventory(lab, inventory_path)
        emit(progress, f"inventory written: {inventory_path}")
    emit(progress, f"lab up: {len(lab.storage_nodes)} node(s), {len(lab.clients)} client(s) "
                   f"in {time.monotonic() - t0:.0f}s")
    return lab


def _prepare_disks(node: NodeInfo, ndir: Path, img: Image, data_disk_gb: int,
                   progress: Progress = None) -> None:
    """The VM's root overlay on the cached image (a new one if the image changed) and, on a
    storage node, its sparse data disk, where missing."""
    overlay = ndir / "root.qcow2"
    base_file = ndir / "base-image"  # which cached image the overlay is on top of
    if overlay.exists() and (
        not base_file.exists() or base_file.read_text().strip() != str(img.root)
    ):
        emit(progress, f"{node.name}: the lab image changed; new root overlay")
        overlay.unlink()
    if not overlay.exists():
        base_file.write_text(f"{img.root}\n")
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
             "-b", str(img.root), str(overlay)],
            check=True, capture_output=True,
        )
    data = ndir / "data.raw"
    if not node.is_client and not data.exists():
        with data.open("wb") as fh:
            fh.truncate(data_disk_gb * 1024**3)


def _save_boot(lab: LabState, node: NodeInfo, img: Image, fp: str, progress: Progress) -> None:
    """Save a VM that just booted cold and is ready (xfleet.lab.saved) under its fingerprint
    (the newest saved.KEEP per VM name are kept). Best effort: a failure is reported and the
    VM runs on. XFLEET_LAB_SAVE=0 turns saving off."""
    ndir = node.dir(lab.state_dir)
    if saved.qmp_path(ndir) is None or os.environ.get("XFLEET_LAB_SAVE") == "0":
        return
    ssh.close_master(lab.endpoint(node))  # no connection of ours inside the saved state
    try:
        stopped = saved.save(img.dir, node.name, ndir, fp)
    except (LabError, OSError) as exc:
        emit(progress, f"{node.name}: could not save its boot "
                       f"({getattr(exc, 'message', exc)}); the next up boots it cold")
        return
    emit(progress, f"{node.name}: boot saved (stopped {stopped:.1f}s); the next up restores "
                   "it")


def write_inventory(lab: LabState, path: Path) -> None:
    """Write the xfleet inventory for this lab (format validated by xfleet.fleet.inventory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# generated by xfleet lab up — do not edit",
        "all:",
        "  vars:",
        "    mirror: ../.xfleet/lab.db",
        "    kind: ssh",
        "    user: root",
        f"    identity_file: {lab.identity_file}",
        "    connect_timeout: 20",
        "    command_timeout: 600",
        "  hosts:",
    ]
    for n in lab.storage_nodes:
        lines += [
            f"    {n.name}:",
            "      address: 127.0.0.1",
            f"      port: {n.ssh_port}",
            f'      host_key: "{n.host_key}"',
            f"      pools: [{POOL}]",
            f"      private_address: {n.private_address}",
            '      labels: {role: storage, lab: "true"}',
        ]
    if lab.clients:
        lines.append("  initiators:")
    for n in lab.clients:
        lines += [
            f"    {n.name}:",
            "      address: 127.0.0.1",
            f"      port: {n.ssh_port}",
            f'      host_key: "{n.host_key}"',
            f"      private_address: {n.private_address}",
            '      labels: {role: initiator, lab: "true"}',
        ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def status(*, state_dir: Path | None = None, probe: bool = True) -> list[NodeStatus]:
    """One NodeStatus per lab node; with `probe`, also asks each running node over SSH."""
    try:
        lab = LabState.load(state_dir)
    except LabError:
        return []
    out: list[NodeStatus] = []
    for n in lab.nodes:
        pid = pid_of(n.dir(lab.state_dir))
        st = NodeStatus(n.name, pid is not None, pid, n.ssh_port, n.private_address, n.role,
                        boot_attempt=n.boot_attempt, boot_note=n.boot_note)
        if probe and pid is not None and n.is_client:
            try:
                ssh.run(lab.endpoint(n), ["nvme", "version"], timeout=30, check=True,
                        connect_timeout=5)
                st.reachable = True
            except LabError as exc:
                st.reachable = False
                st.error = exc.message
        elif probe and pid is not None:
            try:
                res = ssh.run(
                    lab.endpoint(n),
                    ["sh", "-c", "zfs version | head -1; zpool list -H -o name,health"],
                    timeout=30, check=True, connect_timeout=5,
                )
                lines = res.stdout.splitlines()
                st.reachable = True
                st.zfs_version = lines[0].strip() if lines else None
                for line in lines[1:]:
                    parts = line.split("\t")
                    if len(parts) == 2:
                        st.pools[parts[0]] = parts[1]
            except LabError as exc:
                st.reachable = False
                st.error = exc.message
        out.append(st)
    return out


def ssh_argv(node: str, *, state_dir: Path | None = None) -> list[str]:
    """An interactive `ssh` argv for a lab node (lab key, pinned host key, strict checking).
    Append a remote command (one shell string) to run it instead of a login shell."""
    lab = LabState.load(state_dir)
    return ssh.ssh_base(lab.endpoint(node))


def run(
    node: str,
    argv: Sequence[str],
    *,
    state_dir: Path | None = None,
    input: str | bytes | None = None,
    timeout: float = 600,
    check: bool = True,
) -> ssh.Result:
    """Run an argument list on a lab node over SSH."""
    lab = LabState.load(state_dir)
    return ssh.run(lab.endpoint(node), argv, input=input, timeout=timeout, check=check)


def reset(*, state_dir: Path | None = None, progress: Progress = None) -> None:
    """Destroy and recreate pool `tank` on every running storage node (no reboot; clients are
    left alone)."""
    lab = LabState.load(state_dir)
    with locked(lab.state_dir, "lab operation", progress):
        _reset(lab, progress)


def _reset(lab: LabState, progress: Progress) -> None:
    running = [n for n in lab.storage_nodes if pid_of(n.dir(lab.state_dir))]
    if not running:
        raise LabError("no lab node is running", hint="start the lab with `xfleet lab up`")

    def one(n: NodeInfo) -> None:
        t = time.monotonic()
        recreate_pool(lab, n)
        emit(progress, f"{n.name}: pool {POOL} recreated in {time.monotonic() - t:.1f}s")

    with ThreadPoolExecutor(max_workers=len(running)) as ex:
        for f in [ex.submit(one, n) for n in running]:
            f.result()


def kill_node(node: str, *, state_dir: Path | None = None, keep_data: bool = False) -> bool:
    """Hard-stop one lab node's QEMU with SIGKILL (fault injection). Returns False if it was
    not running. Its root overlay is deleted (QEMU runs it with cache=unsafe, and a qcow2
    file's own metadata is cached in QEMU: it is not trustworthy after a kill), and so is its
    data disk, so the next `up` restores or boots it with an empty pool; unless `keep_data`:
    a power cut. The raw data disk then holds every write the guest saw complete (what ZFS
    had not synced is lost, as on real hardware), and the next `up` brings the node back
    with that disk and its pool imported."""
    lab = LabState.load(state_dir)
    n = lab.node(node)
    if pid_of(n.dir(lab.state_dir)) is None:
        return False
    _kill(lab, n, keep_data=keep_data)
    return True


def _kill(lab: LabState, n: NodeInfo, *, keep_data: bool) -> None:
    ndir = n.dir(lab.state_dir)
    ssh.close_master(lab.endpoint(n))  # first: a connection the kill cuts holds its port
    stop_qemu(ndir, signal.SIGKILL, wait=10)
    for name in ("root.qcow2",) if keep_data else ("root.qcow2", "data.raw"):
        (ndir / name).unlink(missing_ok=True)


def down(*, state_dir: Path | None = None, progress: Progress = None) -> list[str]:
    """Stop the lab's own VMs (by their pid files). Keeps disks and keys; returns stopped names."""
    try:
        lab = LabState.load(state_dir)
    except LabError:
        emit(progress, "no lab state: nothing to stop")
        return []
    with locked(lab.state_dir, "lab operation", progress):
        return _down(lab, progress)


def _down(lab: LabState, progress: Progress) -> list[str]:
    stopped: list[str] = []
    for n in lab.nodes:
        ndir = n.dir(lab.state_dir)
        ssh.close_master(lab.endpoint(n))
        pid = pid_of(ndir)
        if pid is None:
            continue
        stop_qemu(ndir, signal.SIGTERM, wait=15)
        stopped.append(n.name)
        emit(progress, f"{n.name}: stopped (pid {pid})")
    return stopped
