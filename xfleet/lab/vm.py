"""Run the lab: N QEMU VMs booted from the cached image, each with a ZFS pool `tank`, plus
optional client VMs (`client1..`, role "client": NVMe/TCP initiators, no data disk, no pool).

Per node (under the state dir, `nodes/<name>/`): a qcow2 overlay over the cached root image, a
sparse raw data disk holding the pool, a seed tar (hostname, network, SSH host key), the pinned
host key pair (generated here, so it is known before the VM boots), a pid file and the serial
console log. The client key pair and the known_hosts file are shared by the lab.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xfleet.lab import saved, ssh
from xfleet.lab.errors import LabError
from xfleet.lab.image import Image, cached_image
from xfleet.lab.paths import Progress, emit, locked, state_root

POOL = "tank"
DATA_DISK_SERIAL = "xfleet-data"
DATA_DEVICE = f"/dev/disk/by-id/virtio-{DATA_DISK_SERIAL}"
PRIVATE_NET = "10.77.0"
DEFAULT_SSH_PORT = 2201
DEFAULT_LINK_PORT = 12301
MEMORY_MB = 768
SMP = 2
CLIENT_MEMORY_MB = 512  # a client runs nvme-cli and the I/O probe, no ZFS ARC
CLIENT_SMP = 1  # an idle client must not take host CPU from the storage nodes (TCG)
MAX_CLIENTS = 2  # lab1 always listens on this many spare private links, so clients can come
#                  and go (booted later, stopped, rebooted) without restarting lab1
CLIENT_ADDRESS_BASE = 100  # client1 = 10.77.0.101
ROLES = ("node", "client")
# The CPU model under TCG: SSE4.2, AES-NI and PCLMUL, no AVX. With `max` (AVX, AVX2) the
# guest's libraries and kernel choose AVX code that TCG emulates slowly; measured on one node,
# Westmere against max: SSH receive 2x faster (4.5 s vs 9.2-9.7 s for 32 MiB), a 32 MiB zfs
# send | receive 7.2 s vs 9.8-11.8 s, `modprobe zfs` 11 s vs 16-22 s, 20 `zfs list` 5.1 s vs
# 5.8-8.1 s, boot to pool ready 42 s vs 50-66 s.
TCG_CPU = "Westmere"
BOOT_TIMEOUT = 300.0
# Boot watchdog: a guest whose serial console is still empty this long after QEMU started is
# hung in early boot (seen under TCG: QEMU spinning, not one byte written for 300 s while its
# sibling booted in 50 s). It is killed and booted again, at most BOOT_ATTEMPTS boots in all.
SILENT_TIMEOUT = 90.0
BOOT_ATTEMPTS = 3
RESTORE_TIMEOUT = 90.0  # a restored VM answers over SSH within seconds, or it boots cold
# No `quiet`, and `earlyprintk` on the serial port: the boot stub ("Probing EDD...") and the
# kernel's first lines ("Linux version ...", before `loglevel` applies) reach the console
# within seconds of QEMU's start, the first sign of life the watchdog waits for (with `quiet`
# nothing was printed until the login prompt, minutes later under load); `loglevel=3` keeps
# the rest off the slow serial port (measured: +2 s of kernel time on one node).
KERNEL_ARGS = (
    "root=/dev/vda rw console=ttyS0,115200 earlyprintk=serial,ttyS0,115200 loglevel=3 "
    "net.ifnames=0 mitigations=off nowatchdog systemd.show_status=false"
)


@dataclass
class NodeInfo:
    name: str
    index: int
    ssh_port: int
    private_address: str
    host_key: str  # "ssh-ed25519 AAAA..." (no comment)
    link_ports: list[int] = field(default_factory=list)
    role: str = "node"  # "node" (storage node with pool tank) or "client" (initiator, no pool)
    boot_attempt: int = 1  # which boot of its last start came up (the watchdog retries)
    boot_note: str | None = None  # why earlier boots were killed, if any

    @property
    def is_client(self) -> bool:
        return self.role == "client"

    def dir(self, state_dir: Path) -> Path:
        return state_dir / "nodes" / self.name


@dataclass
class LabState:
    """What `up` started: enough to reach, inspect and stop the lab later."""

    state_dir: Path
    image_dir: Path
    inventory_path: Path | None
    accel: str
    nodes: list[NodeInfo]

    @property
    def identity_file(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def storage_nodes(self) -> list[NodeInfo]:
        """The storage nodes (pool `tank`), without the clients."""
        return [n for n in self.nodes if not n.is_client]

    @property
    def clients(self) -> list[NodeInfo]:
        return [n for n in self.nodes if n.is_client]

    def node(self, name: str) -> NodeInfo:
        """A lab VM by name: a storage node (`lab1`) or a client (`client1`)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(
            f"no lab node named {name!r}",
            hint=f"lab VMs: {', '.join(n.name for n in self.nodes) or '(none)'}",
        )

    def endpoint(self, node: str | NodeInfo) -> ssh.Endpoint:
        n = self.node(node) if isinstance(node, str) else node
        return ssh.Endpoint(
            name=n.name,
            port=n.ssh_port,
            identity_file=self.identity_file,
            known_hosts=self.known_hosts,
            control_dir=self.state_dir,
        )

    def save(self) -> None:
        data = {
            "state_dir": str(self.state_dir),
            "image_dir": str(self.image_dir),
            "inventory_path": str(self.inventory_path) if self.inventory_path else None,
            "accel": self.accel,
            "nodes": [asdict(n) for n in self.nodes],
        }
        tmp = self.state_dir / "lab.json.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.state_dir / "lab.json")

    @classmethod
    def load(cls, state_dir: Path | None = None) -> LabState:
        sd = (state_dir or state_root()).resolve()
        f = sd / "lab.json"
        if not f.exists():
            raise LabError(
                f"no lab state in {sd}",
                hint="start the lab with `xfleet lab up`",
            )
        data = json.loads(f.read_text())
        return cls(
            state_dir=Path(data["state_dir"]),
            image_dir=Path(data["image_dir"]),
            inventory_path=Path(data["inventory_path"]) if data["inventory_path"] else None,
            accel=data["accel"],
            nodes=[NodeInfo(**n) for n in data["nodes"]],
        )


@dataclass
class NodeStatus:
    name: str
    running: bool
    pid: int | None
    ssh_port: int
    private_address: str
    role: str = "node"
    reachable: bool | None = None  # None: not probed
    pools: dict[str, str] = field(default_factory=dict)  # pool -> health
    zfs_version: str | None = None
    error: str | None = None
    boot_attempt: int = 1  # which boot came up (1 unless the boot watchdog restarted it)
    boot_note: str | None = None  # why the watchdog killed earlier boots


# ---------------------------------------------------------------------------------------------
# helpers


def _pid_of(node_dir: Path) -> int | None:
    """The pid of this node's QEMU if it is running (checked against its command line)."""
    pidfile = node_dir / "qemu.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if str(pidfile).encode() not in cmdline:
        return None  # pid reused by another process: not ours
    return pid


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


PORT_WAIT = 75.0  # > tcp_fin_timeout (60 s): how long a cut connection can hold its port


def _wait_ports_free(name: str, ports: Sequence[int]) -> None:
    """Wait until `ports` can be bound on 127.0.0.1. A killed VM's cut connections keep its
    SSH port (FIN-WAIT-2) until their peers close or the kernel's FIN timeout ends them."""
    deadline = time.monotonic() + PORT_WAIT
    while True:
        busy = [p for p in ports if not _port_free(p)]
        if not busy:
            return
        if time.monotonic() > deadline:
            try:
                shown = subprocess.run(
                    ["ss", "-tanp", "( " + " or ".join(f"sport = :{p}" for p in busy) + " )"],
                    capture_output=True, text=True, check=False).stdout.strip()
            except OSError as exc:
                shown = f"(ss: {exc})"
            raise LabError(
                f"{name}: port(s) {', '.join(map(str, busy))} on 127.0.0.1 are in use "
                f"(waited {PORT_WAIT:.0f}s)",
                hint=f"stop what uses them, or pass other ports (ssh_port=/link_port=):\n"
                     f"{shown}",
            )
        time.sleep(0.2)


def detect_accel() -> str:
    """`kvm` only if a KVM guest really runs here, else `tcg`. `XFLEET_LAB_ACCEL` overrides."""
    forced = os.environ.get("XFLEET_LAB_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    # The guest must actually run for a moment (some hosts fail on the first vCPU entry).
    try:
        p = subprocess.Popen(
            ["qemu-system-x86_64", "-machine", "q35", "-accel", "kvm", "-cpu", "max",
             "-display", "none", "-nodefaults", "-monitor", "stdio"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
    except OSError:
        return "tcg"
    try:
        time.sleep(2)
        out, _ = p.communicate(b"info status\nquit\n", timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return "tcg"
    text = out.decode(errors="replace")
    if p.returncode == 0 and "VM status: running" in text and "error" not in text.lower():
        return "kvm"
    return "tcg"


def _keygen(path: Path, comment: str) -> str:
    """Generate an ed25519 key pair at `path` (if missing); return "ssh-ed25519 AAAA..."."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True, capture_output=True,
        )
    pub = path.with_name(path.name + ".pub").read_text().split()
    return f"{pub[0]} {pub[1]}"


def _shared_keygen(img: Image, name: str, path: Path, comment: str) -> str:
    """`_keygen`, sharing the pair with the saved boots (kept there as `name`): a lab without
    keys takes the kept pair, a new pair is kept for the next lab, so every lab on this
    machine can restore the same saved boots."""
    saved.adopt_key(img.dir, name, path)
    key = _keygen(path, comment)
    saved.adopt_key(img.dir, name, path)
    return key


_EARLY_SH = """\
# the NIC sshd is reached through, up at once (networkd takes seconds to start under TCG)
i=0
wan=
while [ -z "$wan" ] && [ $i -lt 50 ]; do
    for n in /sys/class/net/*; do
        [ "$(cat "$n/address" 2>/dev/null)" = "@MAC@" ] && wan=$(basename "$n")
    done
    [ -n "$wan" ] || sleep 0.1
    i=$((i + 1))
done
if [ -z "$wan" ]; then
    echo "early.sh: no NIC with MAC @MAC@" >&2
    exit 1
fi
ip link set dev "$wan" up
ip addr add 10.0.2.15/24 dev "$wan"
ip route add default via 10.0.2.2 dev "$wan"
# the private links, bridged here rather than by networkd: under load networkd's netlink
# calls time out ("br0: netdev could not be created: Connection timed out") and it then never
# enslaves the links; plain `ip` calls cannot time out
ip link add br0 type bridge
ip addr add @ADDRESS@/24 dev br0
ip link set br0 up
for mac in @PRIVATE_MACS@; do
    i=0
    while [ $i -lt 50 ]; do
        for n in /sys/class/net/*; do
            if [ "$(cat "$n/address" 2>/dev/null)" = "$mac" ]; then
                ip link set dev "$(basename "$n")" master br0
                ip link set dev "$(basename "$n")" up
                i=99
            fi
        done
        [ $i -eq 99 ] || sleep 0.1
        i=$((i + 1))
    done
    [ $i -ge 99 ] || echo "early.sh: no private NIC with MAC $mac" >&2
done
exit 0
"""


def _seed_tar(lab: LabState, node: NodeInfo, hostid: str) -> bytes:
    ndir = node.dir(lab.state_dir)
    wan_mac = f"52:54:00:77:{node.index:02x}:00"
    priv_macs = " ".join(
        f"52:54:00:77:{node.index:02x}:{k + 1:02x}" for k in range(len(node.link_ports))
    )
    files: dict[str, bytes] = {
        "hostname": f"{node.name}\n".encode(),
        "hostid": f"{hostid}\n".encode(),
        "authorized_keys": lab.identity_file.with_suffix(".pub").read_bytes(),
        "ssh_host_ed25519_key": (ndir / "ssh_host_ed25519_key").read_bytes(),
        "ssh_host_ed25519_key.pub": (ndir / "ssh_host_ed25519_key.pub").read_bytes(),
        # run by xfleet-lab-init: the NIC sshd is reached through, and the bridge br0 over the
        # private links
        "early.sh": _EARLY_SH.replace("@MAC@", wan_mac).replace(
            "@ADDRESS@", node.private_address).replace("@PRIVATE_MACS@", priv_macs).encode(),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600 if "key" in name else 0o644
            info.mtime = 0  # the same seed for the same node: its saved boot matches
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return raw + b"\0" * (-len(raw) % 4096)


def _qemu_argv(lab: LabState, node: NodeInfo, img: Image, links: Sequence[str]) -> list[str]:
    ndir = node.dir(lab.state_dir)
    if lab.accel == "kvm":
        accel = ["-accel", "kvm", "-cpu", "host"]
    else:
        accel = ["-accel", "tcg,thread=multi,tb-size=256", "-cpu", TCG_CPU]
    machine_id = secrets.token_hex(16)
    argv = [
        "qemu-system-x86_64",
        "-name", f"xfleet-lab-{node.name}",
        "-machine", "q35",
        *accel,
        "-smp", str(CLIENT_SMP if node.is_client else SMP),
        "-m", str(CLIENT_MEMORY_MB if node.is_client else MEMORY_MB),
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-kernel", str(img.kernel),
        "-initrd", str(img.initrd),
        "-append", f"{KERNEL_ARGS} systemd.machine_id={machine_id}",
        "-drive", f"file={ndir / 'root.qcow2'},if=none,id=root,format=qcow2,cache=unsafe,"
                  "discard=unmap",
        "-device", "virtio-blk-pci,drive=root,addr=0x4",
        "-drive", f"file={ndir / 'seed.tar'},if=none,id=seed,format=raw,readonly=on",
        "-device", "virtio-blk-pci,drive=seed,serial=xfleet-seed,addr=0x5",
    ]
    if not node.is_client:  # a client has no data disk (no pool)
        argv += [
            "-drive", f"file={ndir / 'data.raw'},if=none,id=data,format=raw,cache=unsafe,"
                      "discard=unmap",
            "-device", f"virtio-blk-pci,drive=data,serial={DATA_DISK_SERIAL},addr=0x6",
        ]
    argv += [
        "-netdev", f"user,id=wan,restrict=on,hostfwd=tcp:127.0.0.1:{node.ssh_port}-:22",
        "-device", f"virtio-net-pci,netdev=wan,mac=52:54:00:77:{node.index:02x}:00,addr=0x8",
        "-object", "rng-random,filename=/dev/urandom,id=rng",
        "-device", "virtio-rng-pci,rng=rng,addr=0x7",
        "-serial", f"file:{ndir / 'console.log'}",
        "-pidfile", str(ndir / "qemu.pid"),
        "-daemonize",
    ]
    qmp = saved.qmp_path(ndir)
    if qmp is not None:  # to save the booted VM, and to restore it (xfleet.lab.saved)
        argv += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    for k, spec in enumerate(links):
        argv += [
            "-netdev", f"socket,id=priv{k},{spec}",
            "-device", f"virtio-net-pci,netdev=priv{k},"
                       f"mac=52:54:00:77:{node.index:02x}:{k + 1:02x},addr={0x10 + k:#x}",
        ]
    return argv


def _link_specs(nodes: Sequence[NodeInfo]) -> dict[str, list[str]]:
    """Private network: node 1 is the hub (one listening link per port in its `link_ports`:
    one per other storage node plus MAX_CLIENTS spare ones for clients, all bridged in the
    guest); every other VM connects to its own port on node 1. All on 127.0.0.1. QEMU accepts
    on a listening link at any time and listens again when the peer goes away, so a client can
    boot, stop and reboot while lab1 keeps running."""
    specs: dict[str, list[str]] = {n.name: [] for n in nodes}
    if not nodes:
        return specs
    hub = nodes[0]
    specs[hub.name] = [f"listen=127.0.0.1:{port}" for port in hub.link_ports]
    for other in nodes[1:]:
        specs[other.name] = [f"connect=127.0.0.1:{port}" for port in other.link_ports]
    return specs


def plan(nodes: int, clients: int, ssh_port: int, link_port: int) -> list[tuple[str, int, int,
                                                                                 str, list[int],
                                                                                 str]]:
    """(name, index, ssh port, private address, link ports, role) of every lab VM: storage
    nodes lab1..labN on ssh_port.., then clients client1.. on the next ssh ports, 10.77.0.101..
    lab1 listens on link_port.. (one per other node, then MAX_CLIENTS spare ones)."""
    out: list[tuple[str, int, int, str, list[int], str]] = []
    for i in range(1, nodes + 1):
        links = ([link_port + k for k in range(nodes - 1 + MAX_CLIENTS)] if i == 1
                 else [link_port + i - 2])
        out.append((f"lab{i}", i, ssh_port + i - 1, f"{PRIVATE_NET}.{10 + i}", links, "node"))
    for c in range(1, clients + 1):
        out.append((f"client{c}", CLIENT_ADDRESS_BASE + c, ssh_port + nodes + c - 1,
                    f"{PRIVATE_NET}.{CLIENT_ADDRESS_BASE + c}", [link_port + nodes - 1 + c - 1],
                    "client"))
    return out


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
        running = [n.name for n in old.nodes if _pid_of(n.dir(sd))]
        if running and (len(old.storage_nodes) != nodes or fresh):
            raise LabError(
                f"the lab is already running with nodes {', '.join(running)}",
                hint="run `xfleet lab down` first to change the node count or start fresh",
            )
        running_clients = [n.index - CLIENT_ADDRESS_BASE for n in old.clients
                           if _pid_of(n.dir(sd))]
        clients = max([clients, *running_clients])
        hub = old.storage_nodes[0] if old.storage_nodes else None
        if (clients and hub is not None and _pid_of(hub.dir(sd))
                and len(hub.link_ports) < nodes - 1 + clients):
            raise LabError(
                f"{hub.name} is running without a spare private link for clients",
                hint="run `xfleet lab down` and `xfleet lab up --clients N` again",
            )
    if fresh and (sd / "nodes").exists():
        shutil.rmtree(sd / "nodes")

    t0 = time.monotonic()
    accel = old.accel if old is not None and old.nodes and any(
        _pid_of(n.dir(sd)) for n in old.nodes) else detect_accel()
    emit(progress, f"accelerator: {accel}")
    lab = LabState(
        state_dir=sd,
        image_dir=img.dir,
        inventory_path=inventory_path.resolve() if inventory_path else None,
        accel=accel,
        nodes=[],
    )
    _shared_keygen(img, "id_ed25519", lab.identity_file, "xfleet-lab-client")
    booted = {n.name: n for n in old.nodes if _pid_of(n.dir(sd))} if old is not None else {}
    for name, index, port, address, link_ports, role in plan(nodes, clients, ssh_port,
                                                             link_port):
        ndir = sd / "nodes" / name
        host_key = _shared_keygen(img, f"{name}/ssh_host_ed25519_key",
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

    specs = _link_specs(lab.nodes)
    started: list[NodeInfo] = []
    fingerprints: dict[str, str] = {}  # VM -> what its saved boot must match
    restored: set[str] = set()  # VMs that came up from their saved boot

    def argv_of(node: NodeInfo) -> list[str]:
        ndir = node.dir(sd)
        argv = _qemu_argv(lab, node, img, specs[node.name])
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
            saved.resume(ndir, lambda: _pid_of(ndir) is not None)
            _wait_ssh(lab, node, progress, timeout=RESTORE_TIMEOUT)
            ssh.run(lab.endpoint(node), saved.after_restore_argv(), timeout=60)
        except (LabError, OSError) as exc:
            emit(progress, f"{node.name}: its saved boot did not come up "
                           f"({getattr(exc, 'message', exc)}); forgotten, booting cold")
            _stop_qemu(ndir)
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
    if hub is not None and not _pid_of(hub.dir(sd)):
        for peer in lab.nodes:
            if peer is not hub and _pid_of(peer.dir(sd)):
                emit(progress, f"{peer.name}: restarted with {hub.name}, whose private links "
                               "it connects to")
                _kill(lab, peer, keep_data=True)
    for node in lab.nodes:
        ndir = node.dir(sd)
        if _pid_of(ndir):
            emit(progress, f"{node.name}: already running")
            continue
        ports = [node.ssh_port, *[p for p in node.link_ports if node.index == 1]]
        _wait_ports_free(node.name, ports)
        _prepare_disks(node, ndir, img, data_disk_gb, progress)
        hostid = f"{0x7f000000 + node.index:08x}"
        seed = ndir / "seed.tar"  # holds the node's private host key
        seed.touch(mode=0o600)
        os.chmod(seed, 0o600)
        seed.write_bytes(_seed_tar(lab, node, hostid))
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
            _wait_ssh(lab, node, progress)
        if node.is_client:
            if node.name not in restored:
                ssh.run(lab.endpoint(node), ["modprobe", "nvme-tcp"])
            emit(progress, f"{node.name}: client ready ({time.monotonic() - t0:.0f}s)")
        if node in started and node.name not in restored:
            # a storage node before any pool is imported (saved.SAVE_POINT): a power cycle
            # restores this state with the node's own data disk and imports its pool
            _save_boot(lab, node, img, fingerprints[node.name], progress)
        if not node.is_client:
            _ensure_pool(lab, node)
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


def start_qemu(node: NodeInfo, ndir: Path, argv: list[str]) -> None:
    """Start one VM's QEMU (it daemonizes once its devices are set up) on an empty console
    log; the argv is saved next to it."""
    (ndir / "console.log").unlink(missing_ok=True)
    (ndir / "qemu.argv").write_text(json.dumps(argv, indent=1) + "\n")
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode != 0:
        raise LabError(
            f"{node.name}: qemu failed to start: "
            f"{proc.stderr.decode(errors='replace').strip()[-500:]}",
            hint=f"argv saved in {ndir / 'qemu.argv'}",
        )


def _console_bytes(ndir: Path) -> int:
    try:
        return (ndir / "console.log").stat().st_size
    except FileNotFoundError:
        return 0


def _stop_qemu(ndir: Path, sig: int = signal.SIGKILL, wait: float = 15.0) -> None:
    """Stop a VM's QEMU by its pid file (`sig`, then SIGKILL after `wait` seconds) and wait
    until it is gone: its ports must be free for a restart."""
    pid = _pid_of(ndir)
    for signum, seconds in ((sig, wait), (signal.SIGKILL, 5.0)):
        if pid is None or not _pid_of(ndir):
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + seconds
        while _pid_of(ndir) and time.monotonic() < deadline:
            time.sleep(0.05)
    # an exiting process loses its command line (its memory: a GiB of guest RAM and TCG
    # buffers, freed first) before its sockets are closed: wait until it is really gone, or
    # a restart finds its SSH port still bound
    deadline = time.monotonic() + 30
    while pid is not None and not _exited(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    (ndir / "qemu.pid").unlink(missing_ok=True)


def _exited(pid: int) -> bool:
    """True once `pid` is gone or a zombie (its files, sockets included, are closed)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def watch_boot(
    started: Sequence[NodeInfo],
    state_dir: Path,
    restart: Callable[[NodeInfo], bool | None],
    progress: Progress,
    *,
    silent_timeout: float = SILENT_TIMEOUT,
    attempts: int = BOOT_ATTEMPTS,
    poll: float = 0.25,
    alive: Collection[str] = (),
) -> None:
    """The boot watchdog. Returns once every VM in `started` (just started, in plan order) has
    written to its serial console or exited (`_wait_ssh` reports an exit). A VM still silent
    `silent_timeout` seconds after its start is killed and `restart`ed, at most `attempts`
    boots in all; its `boot_attempt` and `boot_note` record it. Restarting the hub (lab1, which
    listens on the private links) restarts the VMs started with it too, since their links
    connect to it once, at start. Raises LabError when a VM stays silent on its last boot.

    `alive` names VMs of `started` known to be up already (restored from a saved boot: they
    print nothing); `restart` returns True when it restored the VM rather than booting it."""
    since = {n.name: time.monotonic() for n in started}
    pending = {n.name: n for n in started if n.name not in alive}
    while pending:
        now = time.monotonic()
        silent: list[NodeInfo] = []
        for n in list(pending.values()):
            ndir = n.dir(state_dir)
            if _console_bytes(ndir) > 0 or not _pid_of(ndir):
                del pending[n.name]
            elif now - since[n.name] > silent_timeout:
                silent.append(n)
        for n in silent:
            if n.name not in pending:
                continue  # restarted with the hub in this round
            reason = f"boot {n.boot_attempt}: no console output within {silent_timeout:.0f}s"
            if n.boot_attempt >= attempts:
                _stop_qemu(n.dir(state_dir))
                raise LabError(
                    f"{n.name}: hung in early boot {attempts} times (no console output within "
                    f"{silent_timeout:.0f}s of each start)",
                    hint=f"{n.boot_note + '; ' if n.boot_note else ''}{reason}. QEMU argv: "
                    f"{n.dir(state_dir) / 'qemu.argv'}; is the host overloaded?",
                )
            group = [n]
            if n.index == 1 and not n.is_client:  # the hub: its peers reconnect only at start
                group += [m for m in started if m is not n]
            for m in reversed(group):  # peers first, the hub last
                _stop_qemu(m.dir(state_dir))
            for m in group:  # the hub first: it listens, the others connect
                note = (reason if m is n else
                        f"boot {m.boot_attempt}: restarted with {n.name}, whose private "
                        "links it connects to")
                m.boot_note = f"{m.boot_note}; {note}" if m.boot_note else note
                m.boot_attempt += 1
                emit(progress, f"{m.name}: {note}; killed, booting again "
                               f"(attempt {m.boot_attempt} of {attempts})")
                since[m.name] = time.monotonic()
                if restart(m):
                    pending.pop(m.name, None)
                else:
                    pending[m.name] = m
        time.sleep(poll)


def _wait_ssh(lab: LabState, node: NodeInfo, progress: Progress,
              timeout: float = BOOT_TIMEOUT) -> None:
    ep = lab.endpoint(node)
    ndir = node.dir(lab.state_dir)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not _pid_of(ndir):
            tail = ssh.console_tail(ep)
            raise LabError(
                f"{node.name}: qemu exited during boot",
                hint=f"last console lines:\n{tail}",
            )
        if not _ssh_banner(node.ssh_port):
            # slirp accepts the TCP connection even while the guest's sshd is not listening
            # yet, and such a connection then hangs: probe for the banner with short timeouts
            # instead of letting ssh wait out its ConnectTimeout.
            time.sleep(0.5)
            continue
        try:
            res = ssh.run(ep, ["nvme", "version"] if node.is_client else ["zfs", "version"],
                          timeout=60, check=False, connect_timeout=20)
        except LabError as exc:
            last = str(exc)
            continue
        if res.ok:
            return
        last = (res.stderr.strip().splitlines() or ["?"])[-1]
        time.sleep(1)
    raise LabError(
        f"{node.name}: no answer over SSH within {timeout:.0f}s ({last})",
        hint=f"see {ndir / 'console.log'}:\n{ssh.console_tail(ep)}",
    )


def _ssh_banner(port: int, timeout: float = 1.5) -> bool:
    """True if something on 127.0.0.1:port sends an SSH banner within `timeout` seconds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _ensure_pool(lab: LabState, node: NodeInfo) -> None:
    """Pool `tank` on `node`: the one it has, or the one on its data disk (imported), or a new
    one on a blank disk (one round trip: POOL_SCRIPT)."""
    _pool_script(lab.endpoint(node), "ensure")


CREATE_ATTEMPTS = 4

# Pool `tank` on a lab node, in one round trip (each command costs ~0.3-0.8 s of SSH and guest
# CPU under TCG; a reset used to be 7 of them per node). `ensure` keeps a pool it has, or
# imports the one on the data disk, or creates one if the disk is blank; a disk that holds
# anything else is never overwritten. Its guest may have been restored from a saved boot
# that saw another disk (saved boots hold no data disk), so it first forgets what it cached
# of the disk, its partitions included. `recreate` destroys the pool first, after stopping whatever
# keeps it busy: zfs send/receive left behind by a killed test, any process holding a zvol
# open (dd, a probe, a shell; it would make the destroy wait in the kernel, uninterruptibly,
# for as long as it holds it: seen `zpool export` in D state until the holder died), the lab
# NVMe target exporting zvols. Then it clears the event queue.
#
# Creating the pool relabels the disk, and udev then removes and re-adds the disk's by-id links
# (more than once under TCG, where udev is slow): when the kernel opens the new partition in
# such a window, the create fails with "no such pool or dataset" (ENOENT) and leaves nothing
# behind. So the script waits for udev and the device link, and tries again.
# Exit 0: the pool is there; 3: it could not be destroyed; 4: it could not be created; 5: no
# pool to import. Each failure prints what the node shows on stdout.
POOL_SCRIPT = """
mode=$1 pool=$2 dev=$3 attempts=$4
have() { zpool list -H -o name "$pool" >/dev/null 2>&1; }
if [ "$mode" = ensure ]; then
  have && exit 0
  udevadm settle --timeout=60
  disk=$(readlink -f "$dev")
  blockdev --flushbufs "$disk"; blockdev --rereadpt "$disk"
  sync; echo 3 > /proc/sys/vm/drop_caches
  udevadm settle --timeout=60
  err=$(zpool import -N -f "$pool" 2>&1) && exit 0
  if [ -n "$(blkid -p -o value -s PTTYPE "$disk"; blkid -p -o value -s TYPE "$disk")" ]; then
    echo "$err" >&2
    lsblk "$disk" 2>&1; blkid -p "$disk" 2>&1; zpool import 2>&1 | head -20
    exit 5
  fi
fi  # else a blank disk: a new pool on it
if [ "$mode" = recreate ] && { have || zpool import -N -f "$pool" >/dev/null 2>&1; }; then
  pkill -9 -x zfs
  find /proc/[0-9]*/fd -lname '/dev/zd*' 2>/dev/null | cut -d/ -f3 | sort -u | xargs -r kill -9
  [ -d /sys/kernel/config/nvmet/ports ] && systemctl stop xfleet-lab-target 2>/dev/null
  for d in /sys/kernel/config/nvmet/ports/*/subsystems/*; do [ -L "$d" ] && rm -f "$d"; done
  udevadm settle --timeout=30
  if ! zpool destroy -f "$pool" && have; then
    zpool status 2>&1; ps -eo pid,stat,args | grep -E 'zfs|zpool|dd' | grep -v grep
    exit 3
  fi
fi
i=1
while [ "$i" -le "$attempts" ]; do
  udevadm settle --timeout=60
  j=0; while [ ! -e "$dev" ] && [ "$j" -lt 100 ]; do sleep 0.1; j=$((j + 1)); done
  if err=$(zpool create -f -o ashift=12 -o cachefile=none -O canmount=off \
           -O mountpoint=none "$pool" "$dev" 2>&1) || have; then
    # created, or created after all (a lost answer)
    zpool events -c >/dev/null 2>&1
    exit 0
  fi
  echo "attempt $i: $err" >&2
  i=$((i + 1))
done
ls -l /dev/disk/by-id/ 2>&1; zpool status 2>&1; zpool import 2>&1 | head -20; dmesg | tail -20
exit 4
"""


def _pool_script(ep: ssh.Endpoint, mode: str) -> None:
    res = ssh.run(ep, ["sh", "-c", POOL_SCRIPT, "sh", mode, POOL, DATA_DEVICE,
                       str(CREATE_ATTEMPTS)], check=False, timeout=600)
    if res.ok:
        return
    what = {3: f"cannot destroy pool {POOL}",
            4: f"zpool create {POOL} failed {CREATE_ATTEMPTS} times",
            5: f"no pool {POOL} to import on its data disk"}.get(
                res.exit_status, f"pool {POOL} script exited {res.exit_status}")
    raise LabError(f"{ep.name}: {what}: {res.stderr.strip()[-2000:]}",
                   hint=f"what the node shows:\n{res.stdout.strip()[-3000:]}")


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
        pid = _pid_of(n.dir(lab.state_dir))
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
    running = [n for n in lab.storage_nodes if _pid_of(n.dir(lab.state_dir))]
    if not running:
        raise LabError("no lab node is running", hint="start the lab with `xfleet lab up`")

    def one(n: NodeInfo) -> None:
        t = time.monotonic()
        recreate_pool(lab, n)
        emit(progress, f"{n.name}: pool {POOL} recreated in {time.monotonic() - t:.1f}s")

    with ThreadPoolExecutor(max_workers=len(running)) as ex:
        for f in [ex.submit(one, n) for n in running]:
            f.result()


def recreate_pool(lab: LabState, node: str | NodeInfo) -> None:
    """Destroy pool `tank` on one node (if any), create it empty, clear the event queue (one
    round trip: POOL_SCRIPT)."""
    _pool_script(lab.endpoint(node), "recreate")


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
    if _pid_of(n.dir(lab.state_dir)) is None:
        return False
    _kill(lab, n, keep_data=keep_data)
    return True


def _kill(lab: LabState, n: NodeInfo, *, keep_data: bool) -> None:
    ndir = n.dir(lab.state_dir)
    ssh.close_master(lab.endpoint(n))  # first: a connection the kill cuts holds its port
    _stop_qemu(ndir, signal.SIGKILL, wait=10)
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
        pid = _pid_of(ndir)
        if pid is None:
            continue
        _stop_qemu(ndir, signal.SIGTERM, wait=15)
        stopped.append(n.name)
        emit(progress, f"{n.name}: stopped (pid {pid})")
    return stopped
