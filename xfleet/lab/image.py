"""Build the lab's bootable Debian 12 + OpenZFS image (cached by a hash of its recipe).

The image is a plain ext4 filesystem (no partition table, no boot loader): QEMU boots the
extracted kernel and initrd directly with `root=/dev/vda`. OpenZFS comes from
bookworm-backports (contrib), built by DKMS inside the chroot for the image's own kernel.

Per-node settings (hostname, addresses, SSH host key, authorized key, hostid) are not in the
image: each VM gets a small read-only "seed" disk (a tar archive) that `xfleet-lab-init`
unpacks early at boot. So one cached image serves every node.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from xfleet.lab.errors import LabError
from xfleet.lab.paths import Progress, cache_root, emit, locked

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
ROOT_SIZE = "4G"
RECIPE_VERSION = 1

PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "iproute2",
    "iputils-ping",
    "procps",
    "less",
    "e2fsprogs",
    "initramfs-tools",
    "zstd",
    "linux-image-amd64",
    "linux-headers-amd64",
    "build-essential",
    "dkms",
    "zfs-dkms",
    "zfsutils-linux",
    "openssh-server",
    "python3",
    "nvme-cli",
)

# OpenZFS and its libraries come from bookworm-backports (2.3.x), and so does the kernel (6.12):
# bookworm's 6.1 is built without NVMe in-band authentication (CONFIG_NVME_AUTH,
# CONFIG_NVME_TARGET_AUTH), which DH-CHAP needs on both sides. Everything else from bookworm.
APT_PREFERENCES = """\
Package: *zfs* *nvpair* *uutil* *zpool* spl*
Pin: release n=bookworm-backports
Pin-Priority: 990

Package: linux-image-* linux-headers-* linux-kbuild-* linux-compiler-* linux-base
Pin: release n=bookworm-backports
Pin-Priority: 990
"""

INIT_SCRIPT = r"""#!/bin/sh
# xfleet-lab-init: unpack this node's seed disk (serial "xfleet-seed") and apply it.
set -eu
seed=""
for s in /sys/block/vd*/serial; do
    [ -r "$s" ] || continue
    if [ "$(cat "$s")" = "xfleet-seed" ]; then
        seed="/dev/$(basename "$(dirname "$s")")"
    fi
done
if [ -z "$seed" ]; then
    echo "xfleet-lab-init: no seed disk found; node keeps the image defaults" >&2
    exit 0
fi
d=/run/xfleet-seed
rm -rf "$d"; mkdir -p "$d"; chmod 0700 "$d"
tar -xf "$seed" -C "$d"
install -m 0644 "$d/hostname" /etc/hostname
hostname "$(cat "$d/hostname")"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$(cat "$d/hostname")" > /etc/hosts
install -d -m 0700 /root/.ssh
install -m 0600 "$d/authorized_keys" /root/.ssh/authorized_keys
install -m 0600 "$d/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
install -m 0644 "$d/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
# The seed's network setup (the NIC sshd is reached through and the private bridge; the image
# has no systemd-networkd: it cost ~25 s of guest CPU in every boot, for nothing to manage).
if [ -f "$d/early.sh" ]; then
    sh "$d/early.sh" || echo "xfleet-lab-init: early.sh failed" >&2
fi
zgenhostid -f "$(cat "$d/hostid")"
rm -rf "$d"
"""

INIT_UNIT = """\
[Unit]
Description=xfleet lab: apply this node's seed (hostname, network, SSH keys)
DefaultDependencies=no
After=systemd-remount-fs.service local-fs.target
Before=sysinit.target xfleet-sshd.service
ConditionPathExists=/usr/local/sbin/xfleet-lab-init

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/xfleet-lab-init

[Install]
WantedBy=sysinit.target
"""

SSHD_CONFIG = """\
# xfleet lab: one pinned ed25519 host key, key-only root login, room for many sessions.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxSessions 64
MaxStartups 64:30:128
# No PAM: its session stack (motd, env, limits, loginuid) ran for every command and cost
# ~0.1 s of each command's ~0.27 s under TCG, and ~0.45 s of each new connection.
UsePAM no
"""

FSTAB = "/dev/vda / ext4 rw,noatime,errors=remount-ro 0 0\n"

# Load the ZFS module in the background from the start of the boot (~25 s of TCG time, beside
# the rest of the boot on the guest's second vCPU), without zfs-load-module.service's
# dependency on systemd-udev-settle (8 s under TCG). `xfleet lab up` waits for it over SSH.
ZFS_LOAD_UNIT = """\
[Unit]
Description=xfleet lab: load the ZFS module (without waiting for udev to settle)
DefaultDependencies=no
After=systemd-remount-fs.service systemd-modules-load.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/sbin/modprobe zfs

[Install]
WantedBy=multi-user.target
"""

# sshd without ssh.service's ordering after network.target (networkd takes seconds under TCG;
# sshd listens on 0.0.0.0 and does not need the addresses to be configured first).
SSHD_UNIT = """\
[Unit]
Description=xfleet lab: OpenSSH server (not waiting for network.target)
After=xfleet-lab-init.service
Wants=xfleet-lab-init.service

[Service]
ExecStartPre=/usr/sbin/sshd -t
ExecStart=/usr/sbin/sshd -D
ExecReload=/bin/kill -HUP $MAINPID
KillMode=process
Restart=on-failure
RuntimeDirectory=sshd
RuntimeDirectoryMode=0755

[Install]
WantedBy=multi-user.target
"""

# A small initrd: only what finds and mounts the virtio root disk (MODULES=most is ~30 MB and
# costs seconds of TCG time at every boot), and the NIC driver: loaded there, the NICs exist
# when xfleet-lab-init configures them (left to udev's coldplug they appeared ~40 s into the
# boot, and sshd waited for them).
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4", "crc32c_generic",
                     "crc32c_intel")

# Units that only slow a throw-away VM's boot down. Pool import is not on the boot path either:
# `xfleet lab up` imports or creates the pool over SSH once the node answers.
MASKED_UNITS: tuple[str, ...] = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "logrotate.timer",
    "dpkg-db-backup.timer",
    "systemd-networkd-wait-online.service",
    "getty@tty1.service",
    "zfs-import-cache.service",
    "zfs-import-scan.service",
    "zfs-import.target",
    "zfs-mount.service",
    "zfs-share.service",
    "zfs-zed.service",
    "zfs-volume-wait.service",
    "zfs-scrub-monthly@.timer",
    "zfs-trim-monthly@.timer",
    "zfs-load-module.service",
    "systemd-udev-settle.service",
    "nvmf-autoconnect.service",
    "ssh.service",
    "ssh.socket",
    # nothing for networkd to manage: xfleet-lab-init configures the NICs with `ip`
    "systemd-networkd.service",
    "systemd-networkd.socket",
    # kernel facilities no lab test uses (each a unit started in every boot)
    "modprobe@drm.service",
    "modprobe@fuse.service",
    "modprobe@efi_pstore.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "dev-hugepages.mount",
)


@dataclass(frozen=True)
class Image:
    """A built image: `root` (qcow2, ext4 inside), `kernel`, `initrd`, and build facts."""

    dir: Path
    root: Path
    kernel: Path
    initrd: Path
    info: dict[str, str]


def recipe() -> dict[str, object]:
    """Everything that determines the image's content; its hash names the cache directory."""
    return {
        "version": RECIPE_VERSION,
        "suite": SUITE,
        "mirror": MIRROR,
        "security_mirror": SECURITY_MIRROR,
        "root_size": ROOT_SIZE,
        "packages": list(PACKAGES),
        "apt_preferences": APT_PREFERENCES,
        "init_script": INIT_SCRIPT,
        "init_unit": INIT_UNIT,
        "sshd_config": SSHD_CONFIG,
        "fstab": FSTAB,
        "zfs_load_unit": ZFS_LOAD_UNIT,
        "sshd_unit": SSHD_UNIT,
        "initramfs_modules": list(INITRAMFS_MODULES),
        "customize": _customize_script(),
        "masked": list(MASKED_UNITS),
    }


def recipe_hash() -> str:
    blob = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def image_dir() -> Path:
    return cache_root() / recipe_hash()


def cached_image() -> Image | None:
    """The image for the current recipe if it was built completely, else None."""
    d = image_dir()
    done = d / "image.json"
    if not done.exists():
        return None
    info = json.loads(done.read_text())
    img = Image(d, d / "root.qcow2", d / "vmlinuz", d / "initrd.img", info)
    if not all(p.exists() for p in (img.root, img.kernel, img.initrd)):
        return None
    return img


def _need_tools() -> None:
    missing = [
        t
        for t in ("mmdebstrap", "qemu-img", "mkfs.ext4", "qemu-system-x86_64")
        if shutil.which(t) is None
    ]
    if missing:
        raise LabError(
            f"missing host tools: {', '.join(missing)}",
            hint="run `sudo scripts/lab-deps.sh` (installs qemu-system-x86, qemu-utils, "
            "mmdebstrap, zstd, openssh-client)",
        )
    if os.geteuid() != 0:
        raise LabError(
            "building the lab image needs root (mmdebstrap builds a chroot and DKMS compiles "
            "the ZFS module inside it)",
            hint="run the build once as root (e.g. `sudo xfleet lab build`); "
            "later `xfleet lab up` uses the cached image",
        )


def _customize_script() -> str:
    """Shell run by mmdebstrap after installing packages; "$1" is the chroot."""
    masks = " ".join(MASKED_UNITS)
    return f"""set -eu
r="$1"
# DKMS: make sure the ZFS module is built for every kernel in the image.
for k in "$r"/lib/modules/*; do
    kv=$(basename "$k")
    chroot "$r" dkms autoinstall -k "$kv"
    if ! ls "$r/lib/modules/$kv/updates/dkms/zfs.ko"* >/dev/null 2>&1; then
        echo "xfleet: DKMS did not produce zfs.ko for kernel $kv" >&2
        chroot "$r" dkms status >&2 || true
        exit 1
    fi
done
mkdir -p "$r/usr/local/sbin" "$r/etc/ssh/sshd_config.d"
rm -f "$r"/etc/ssh/ssh_host_*
echo MODULES=list > "$r/etc/initramfs-tools/conf.d/xfleet"
printf '%s\\n' {" ".join(INITRAMFS_MODULES)} >> "$r/etc/initramfs-tools/modules"
chroot "$r" update-initramfs -u -k all
chroot "$r" systemctl enable xfleet-lab-init.service xfleet-zfs-load.service \
    xfleet-sshd.service
chroot "$r" systemctl mask {masks}
echo xfleet-lab > "$r/etc/hostname"
rm -f "$r/etc/machine-id" "$r/var/lib/dbus/machine-id"
: > "$r/etc/machine-id"
chroot "$r" apt-get clean
rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin
"""


def build(force: bool = False, progress: Progress = None) -> Path:
    """Build (or reuse) the lab image; returns its cache directory.

    A second call with the same recipe is a no-op. `force=True` rebuilds.
    """
    cached = cached_image()
    if cached is not None and not force:
        emit(progress, f"image up to date: {cached.dir}")
        return cached.dir
    _need_tools()
    with locked(image_dir(), "image build", progress):
        cached = cached_image()  # built by whoever held the lock before us?
        if cached is not None and not force:
            emit(progress, f"image up to date: {cached.dir}")
            return cached.dir
        return _build(progress)


def _build(progress: Progress) -> Path:
    d = image_dir()
    work = d / "work"
    if work.exists():
        _unmount_under(work)  # an interrupted mmdebstrap can leave /proc, /sys, /dev/* mounted
        shutil.rmtree(work)
    for stale in ("image.json", "root.qcow2", "vmlinuz", "initrd.img"):
        (d / stale).unlink(missing_ok=True)
    work.mkdir(parents=True)
    rootfs = work / "rootfs"
    files = work / "files"
    files.mkdir()
    (files / "xfleet-pin").write_text(APT_PREFERENCES)
    (files / "xfleet-lab-init").write_text(INIT_SCRIPT)
    (files / "xfleet-lab-init.service").write_text(INIT_UNIT)
    (files / "xfleet.conf").write_text(SSHD_CONFIG)
    (files / "fstab").write_text(FSTAB)
    (files / "xfleet-zfs-load.service").write_text(ZFS_LOAD_UNIT)
    (files / "xfleet-sshd.service").write_text(SSHD_UNIT)
    (files / "customize.sh").write_text(_customize_script())
    log = d / "build.log"
    t0 = time.monotonic()
    emit(progress, f"building lab image in {d} (log: {log}); takes ~6 min on 2 cores")
    sources = [
        f"deb {MIRROR} {SUITE} main contrib",
        f"deb {MIRROR} {SUITE}-updates main contrib",
        f"deb {SECURITY_MIRROR} {SUITE}-security main contrib",
        f"deb {MIRROR} {SUITE}-backports main contrib",
    ]
    argv = [
        "mmdebstrap",
        "--variant=minbase",
        "--components=main,contrib",
        f"--include={','.join(PACKAGES)}",
        "--aptopt=Acquire::Retries \"3\"",
        f'--setup-hook=mkdir -p "$1/etc/apt/preferences.d" && '
        f'cp {files}/xfleet-pin "$1/etc/apt/preferences.d/xfleet-pin"',
        f'--customize-hook=install -m 0755 {files}/xfleet-lab-init '
        '"$1/usr/local/sbin/xfleet-lab-init"',
        f'--customize-hook=install -m 0644 {files}/xfleet-lab-init.service '
        '"$1/etc/systemd/system/xfleet-lab-init.service"',
        f'--customize-hook=mkdir -p "$1/etc/ssh/sshd_config.d" && '
        f'install -m 0644 {files}/xfleet.conf "$1/etc/ssh/sshd_config.d/xfleet.conf"',
        f'--customize-hook=install -m 0644 {files}/fstab "$1/etc/fstab"',
        f"--customize-hook=install -m 0644 {files}/xfleet-zfs-load.service "
        '"$1/etc/systemd/system/xfleet-zfs-load.service"',
        f"--customize-hook=install -m 0644 {files}/xfleet-sshd.service "
        '"$1/etc/systemd/system/xfleet-sshd.service"',
        f"--customize-hook=sh {files}/customize.sh \"$1\"",
        SUITE,
        str(rootfs),
        *sources,
    ]
    with log.open("w") as fh:
        emit(progress, "mmdebstrap: Debian 12 minbase + OpenZFS (backports, DKMS) ...")
        rc = _run_logged(argv, fh, progress)
        if rc != 0:
            raise LabError(
                f"mmdebstrap failed with status {rc}",
                hint=f"see the last lines of {log}; check that deb.debian.org is reachable",
            )
        emit(progress, f"rootfs done in {time.monotonic() - t0:.0f}s; making ext4 + qcow2")
        kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise LabError("no kernel in the built rootfs", hint=f"see {log}")
        kver = kernels[-1].name.removeprefix("vmlinuz-")
        shutil.copy2(rootfs / "boot" / f"vmlinuz-{kver}", work / "vmlinuz")
        shutil.copy2(rootfs / "boot" / f"initrd.img-{kver}", work / "initrd.img")
        zfs_version = _dpkg_version(rootfs, "zfsutils-linux")
        raw = work / "root.raw"
        for cmd in (
            ["mkfs.ext4", "-q", "-F", "-L", "xfleet-root", "-d", str(rootfs), str(raw), ROOT_SIZE],
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(work / "root.qcow2")],
        ):
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
            if rc != 0:
                raise LabError(f"{cmd[0]} failed with status {rc}", hint=f"see {log}")
    for name in ("root.qcow2", "vmlinuz", "initrd.img"):
        os.replace(work / name, d / name)
    info = {
        "recipe": recipe_hash(),
        "kernel": kver,
        "zfs": zfs_version,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": f"{time.monotonic() - t0:.0f}",
    }
    (d / "image.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(work)
    emit(
        progress,
        f"image built in {info['build_seconds']}s: kernel {kver}, OpenZFS {zfs_version}",
    )
    return d


def _unmount_under(path: Path) -> None:
    """Unmount everything mounted below `path` (deepest first); refuse to go on otherwise, so
    that deleting `path` can never reach into a bind-mounted host directory."""
    prefix = str(path.resolve()) + "/"

    def mounted() -> list[str]:
        with open("/proc/self/mounts") as fh:
            points = [line.split()[1].replace("\\040", " ") for line in fh]
        return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)

    for point in mounted():
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    left = mounted()
    if left:
        raise LabError(
            f"cannot clean the previous build: still mounted: {', '.join(left)}",
            hint="unmount them (`umount -R PATH`), then build again",
        )


def _run_logged(argv: list[str], log: IO[str], progress: Progress) -> int:
    """Run `argv`, copying its output to `log`; mmdebstrap's "I: ..." lines and DKMS steps go
    to `progress` too."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        log.write(line)
        text = line.strip()
        if text.startswith("I: ") or text.startswith("Building module") or "DKMS" in text:
            emit(progress, f"  {text}")
    return proc.wait()


def _dpkg_version(rootfs: Path, package: str) -> str:
    status = (rootfs / "var/lib/dpkg/status").read_text(errors="replace")
    for block in status.split("\n\n"):
        lines = block.splitlines()
        if f"Package: {package}" in lines:
            for line in lines:
                if line.startswith("Version: "):
                    return line.removeprefix("Version: ")
    return "unknown"
