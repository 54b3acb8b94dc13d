"""QEMU for the lab: a VM's command line, seed, keys and private links; starting it, watching
its boot (the watchdog) and waiting for its sshd; stopping it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from xfleet.lab import saved, ssh
from xfleet.lab.errors import LabError
from xfleet.lab.image import Image
from xfleet.lab.paths import Progress, cache_root, emit
from xfleet.lab.programs import program_text
from xfleet.lab.state import (
    BOOT_ATTEMPTS,
    BOOT_TIMEOUT,
    CLIENT_MEMORY_MB,
    CLIENT_SMP,
    DATA_DISK_SERIAL,
    KERNEL_ARGS,
    MEMORY_MB,
    SILENT_TIMEOUT,
    SMP,
    TCG_CPU,
    LabState,
    NodeInfo,
)

# ---------------------------------------------------------------------------------------------
# helpers


def pid_of(node_dir: Path) -> int | None:
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


def wait_ports_free(name: str, ports: Sequence[int]) -> None:
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


TCG_ACCEL = "tcg,thread=single,tb-size=256"
KVM_PROBE_SECONDS = 30.0
# printed by every Linux kernel once it has booted far enough to start init ("Run /bin/true
# as init process")
KERNEL_REACHED_INIT = " as init process"


def detect_accel(kernel: Path | None = None, initrd: Path | None = None) -> str:
    """`kvm` only if a KVM guest really runs here, else `tcg`. `XFLEET_LAB_ACCEL` overrides.

    With the lab's `kernel` and `initrd`, the probe boots them under KVM until the kernel
    starts init (about a second where KVM works): some hosts give a /dev/kvm on which a
    guest's vCPU runs the firmware and the kernel's first steps, then stops for good (seen
    2026-12-06: every VM hung after "Probing EDD", using no CPU). Without them, a bare guest
    only has to be running."""
    forced = os.environ.get("XFLEET_LAB_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    if kernel is not None and initrd is not None:
        # one probe per host boot and kernel: the answer cannot change before a reboot
        key = f"{_boot_id()} {kernel}"
        memo = cache_root() / "accel-probe"
        with contextlib.suppress(OSError):
            seen, _, accel = memo.read_text().strip().rpartition(" ")
            if seen == key and accel in ("kvm", "tcg"):
                return accel
        accel = "kvm" if _kernel_reaches_init(kernel, initrd) else "tcg"
        with contextlib.suppress(OSError):
            memo.parent.mkdir(parents=True, exist_ok=True)
            memo.write_text(f"{key} {accel}\n")
        return accel
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


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _kernel_reaches_init(kernel: Path, initrd: Path) -> bool:
    """Boot `kernel` under KVM with no disk: True once it says it runs init (the guest is
    then killed), False when it does not within KVM_PROBE_SECONDS or qemu fails."""
    try:
        p = subprocess.Popen(
            ["qemu-system-x86_64", "-machine", "q35", "-accel", "kvm", "-cpu", "host",
             "-m", "256", "-display", "none", "-nodefaults", "-no-reboot",
             "-serial", "stdio", "-kernel", str(kernel), "-initrd", str(initrd),
             "-append", "console=ttyS0 loglevel=7 panic=-1 rdinit=/bin/true"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
    except OSError:
        return False
    assert p.stdout is not None
    found = threading.Event()

    def watch() -> None:
        assert p.stdout is not None
        for raw in p.stdout:
            if KERNEL_REACHED_INIT in raw.decode(errors="replace"):
                found.set()
                return

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    try:
        reader.join(KVM_PROBE_SECONDS)
    finally:
        p.kill()
        p.wait()
    return found.is_set()


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


def shared_keygen(img: Image, name: str, path: Path, comment: str) -> str:
    """`_keygen`, sharing the pair with the saved boots (kept there as `name`): a lab without
    keys takes the kept pair, a new pair is kept for the next lab, so every lab on this
    machine can restore the same saved boots."""
    saved.adopt_key(img.dir, name, path)
    key = _keygen(path, comment)
    saved.adopt_key(img.dir, name, path)
    return key


_EARLY_SH = program_text("early.sh")  # xfleet/lab/programs/early.sh


def seed_tar(lab: LabState, node: NodeInfo, hostid: str) -> bytes:
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


def qemu_argv(lab: LabState, node: NodeInfo, img: Image, links: Sequence[str]) -> list[str]:
    ndir = node.dir(lab.state_dir)
    if lab.accel == "kvm":
        accel = ["-accel", "kvm", "-cpu", "host"]
    else:
        # One host thread for both vCPUs: with multi-threaded TCG (QEMU 7.2), the 6.12 guest
        # kernel died now and then of "Oops: int3" in __alloc_skb right after nvme-tcp
        # toggled a static key (text_poke_bp): a vCPU ran code translated before the patch
        # had removed its int3 (2026-12-06, one VM in a lab run).
        accel = ["-accel", TCG_ACCEL, "-cpu", TCG_CPU]
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
        "-no-reboot",
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


def link_specs(nodes: Sequence[NodeInfo]) -> dict[str, list[str]]:
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


def stop_qemu(ndir: Path, sig: int = signal.SIGKILL, wait: float = 15.0) -> None:
    """Stop a VM's QEMU by its pid file (`sig`, then SIGKILL after `wait` seconds) and wait
    until it is gone: its ports must be free for a restart."""
    pid = pid_of(ndir)
    for signum, seconds in ((sig, wait), (signal.SIGKILL, 5.0)):
        if pid is None or not pid_of(ndir):
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + seconds
        while pid_of(ndir) and time.monotonic() < deadline:
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
    written to its serial console or exited (`wait_ssh` reports an exit). A VM still silent
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
            if _console_bytes(ndir) > 0 or not pid_of(ndir):
                del pending[n.name]
            elif now - since[n.name] > silent_timeout:
                silent.append(n)
        for n in silent:
            if n.name not in pending:
                continue  # restarted with the hub in this round
            reason = f"boot {n.boot_attempt}: no console output within {silent_timeout:.0f}s"
            if n.boot_attempt >= attempts:
                stop_qemu(n.dir(state_dir))
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
                stop_qemu(m.dir(state_dir))
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


def wait_ssh(lab: LabState, node: NodeInfo, progress: Progress,
              timeout: float = BOOT_TIMEOUT) -> None:
    ep = lab.endpoint(node)
    ndir = node.dir(lab.state_dir)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not pid_of(ndir):
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
