"""The lab's state: its VMs (storage nodes and clients), their ports and addresses, and the
JSON file that records a running lab (under the state dir)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xfleet.lab import ssh
from xfleet.lab.errors import LabError
from xfleet.lab.paths import state_root

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
# panic=-1 oops=panic with QEMU's -no-reboot: a guest kernel that oopses stops its QEMU (its
# console keeps the oops), so the next module's `ensure_up` boots it again instead of every
# later test timing out on a dead VM
KERNEL_ARGS = (
    "root=/dev/vda rw console=ttyS0,115200 earlyprintk=serial,ttyS0,115200 loglevel=3 "
    "net.ifnames=0 mitigations=off nowatchdog systemd.show_status=false panic=-1 oops=panic"
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
