"""The mechanism of a move's live cutover (issue #21 item 3), on real OpenZFS, the real kernel
target and client1's native NVMe multipath; configfs is written by hand here (the move engine
does not drive it yet: docs/identity.md, "Live cutover").

One volume with its own UUID, copied to lab2. Both nodes export it under the same identity
(NQN, namespace UUID and NGUID, serial) with disjoint controller-id ranges, so the host joins
the two paths into one multipath device: lab1's in an optimized ANA group, lab2's in an
inaccessible one. The I/O probe writes and reads through the device while:

1. lab1's group goes inaccessible: the host holds its I/O (it requeues; no error);
2. the final incremental is sent and received into lab2's copy, which lab2 exports meanwhile;
3. lab2's group goes optimized: the host's I/O resumes on lab2;
4. lab1's export is withdrawn and the host drops that path.

Zero I/O errors and zero mismatches (every slot read back through lab2 at the end), the
longest stall recorded."""

from __future__ import annotations

import time

import pytest

from xfleet.core.identity import UUID_PROPERTY, volume_identity, volume_nqn
from xfleet.fleet.target_spec import NVMET_DEFAULTS
from xfleet.lab import probe

from .labkit import Lab, figure, log

pytestmark = pytest.mark.lab

VOL = "tank/live/v"
VUUID = "7b0e3c1a-2f4d-4c6b-9a8e-1d2c3b4a5f60"
NQN = volume_nqn(str(NVMET_DEFAULTS["nqn_prefix"]), VUUID)
ROOT = "/sys/kernel/config/nvmet"

# export VOL under its own identity: $1 address, $2 ANA group, $3 its state, $4-$5 cntlid range
EXPORT = r"""
set -e
R=/sys/kernel/config/nvmet; S=$R/subsystems/$NQN; P=$R/ports/1
modprobe nvmet-tcp
mkdir -p $S/namespaces/1
echo 1 > $S/attr_allow_any_host
echo $4 > $S/attr_cntlid_min; echo $5 > $S/attr_cntlid_max
echo $SERIAL > $S/attr_serial
udevadm settle -t 30 || true
echo /dev/zvol/$VOL > $S/namespaces/1/device_path
echo $NSUUID > $S/namespaces/1/device_uuid
echo $NGUID > $S/namespaces/1/device_nguid
echo $2 > $S/namespaces/1/ana_grpid
if [ ! -d $P ]; then
  mkdir $P; echo tcp > $P/addr_trtype; echo ipv4 > $P/addr_adrfam
  echo $1 > $P/addr_traddr; echo 4420 > $P/addr_trsvcid
fi
[ -d $P/ana_groups/$2 ] || mkdir $P/ana_groups/$2
echo $3 > $P/ana_groups/$2/ana_state
echo 1 > $S/namespaces/1/enable
[ -L $P/subsystems/$NQN ] || ln -s $S $P/subsystems/$NQN
"""

# every nvmet object this test made, removed (links, namespaces, subsystems, groups, ports)
CLEAN = r"""
R=/sys/kernel/config/nvmet
for l in $R/ports/*/subsystems/*; do [ -L "$l" ] && rm -f "$l"; done
for s in $R/subsystems/*; do
  [ -d "$s" ] || continue
  for n in "$s"/namespaces/*; do [ -d "$n" ] && { echo 0 > "$n/enable"; rmdir "$n"; }; done
  rmdir "$s"
done
for p in $R/ports/*; do
  [ -d "$p" ] || continue
  for g in "$p"/ana_groups/*; do [ "${g##*/}" = 1 ] || rmdir "$g"; done
  rmdir "$p"
done
true
"""


def _export(lab: Lab, node: str, group: int, state: str, cntlid: tuple[int, int]) -> None:
    ns_uuid, nguid = volume_identity(VUUID)
    env = f"NQN={NQN} VOL={VOL} NSUUID={ns_uuid} NGUID={nguid} SERIAL={VUUID[:8]}{VUUID[-8:]}"
    lab.run(node, ["sh", "-c", f"{env}\n{EXPORT}", "sh", lab.state.node(node).private_address,
                   str(group), state, str(cntlid[0]), str(cntlid[1])])


def _ana(lab: Lab, node: str, group: int, state: str) -> None:
    lab.run(node, ["sh", "-c", f'echo "$1" > {ROOT}/ports/1/ana_groups/{group}/ana_state', "sh",
                   state])


def _send(lab: Lab, src: str, dst: str, argv: list[str]) -> None:
    """`zfs send ARGV` on src into `zfs receive -u VOL` on dst, through this host."""
    data = lab.run(src, ["sh", "-c", 'zfs send "$@" | base64 -w0', "sh", *argv]).stdout
    lab.run(dst, ["sh", "-c", 'base64 -d | zfs receive -u "$1"', "sh", VOL], input=data)


def _paths(lab: Lab, client: str) -> dict[str, str]:
    """{traddr: controller state} of client's controllers of NQN."""
    out = lab.run(client, ["sh", "-c", 'for c in /sys/class/nvme/nvme*; do '
                           'grep -qx "$1" "$c/subsysnqn" 2>/dev/null && printf "%s %s\\n" '
                           '"$(sed "s/.*traddr=\\([^,]*\\).*/\\1/" "$c/address")" '
                           '"$(cat "$c/state")"; done; true', "sh", NQN]).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def _wait_paths(lab: Lab, client: str, want: dict[str, str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (got := _paths(lab, client)) != want:
        assert time.monotonic() < deadline, f"paths {got}, expected {want}"
        time.sleep(0.3)


def test_io_rides_through_a_cutover_between_nodes(lab: Lab, client: str) -> None:
    a1, a2 = (lab.state.node(n).private_address for n in ("lab1", "lab2"))
    p: probe.Probe | None = None
    try:
        lab.run("lab1", ["sh", "-c", 'zfs create -p -V 32M -o "$1" "$2" && udevadm settle && '
                         'dd if=/dev/urandom of="/dev/zvol/$2" bs=1M count=4 oflag=direct '
                         'status=none && zfs snapshot "$2@s0"', "sh",
                         f"{UUID_PROPERTY}={VUUID}", VOL])
        lab.run("lab2", ["zfs", "create", "-p", "tank/live"])
        _send(lab, "lab1", "lab2", [f"{VOL}@s0"])  # the base copy
        _export(lab, "lab1", 1, "optimized", (1, 99))
        _export(lab, "lab2", 2, "inaccessible", (100, 199))
        lab.run(client, ["modprobe", "nvme-tcp"])
        for a in (a1, a2):  # a short ctrl_loss_tmo: a path left behind must not linger
            lab.run(client, ["nvme", "connect", "-t", "tcp", "-a", a, "-s", "4420", "-n",
                             NQN, "-l", "30", "-c", "1"])
        _wait_paths(lab, client, {a1: "live", a2: "live"})
        head = lab.run(client, ["sh", "-c", 'for s in /sys/class/nvme-subsystem/*; do '
                                'grep -qx "$1" "$s/subsysnqn" && for n in "$s"/nvme*n*; do '
                                'basename "$n"; done; done; true', "sh", NQN]).stdout.split()
        assert len(head) == 1, f"one multipath device for the two paths, got {head}"
        uuid_seen = lab.run(client, ["cat", f"/sys/block/{head[0]}/uuid"]).stdout.strip()
        assert uuid_seen == volume_identity(VUUID)[0]
        p = probe.start(lab.state, client, f"/dev/{head[0]}")
        p.wait_writes(50)  # through lab1's path

        t0 = time.monotonic()
        _ana(lab, "lab1", 1, "inaccessible")  # the host holds its I/O from here
        lab.run("lab1", ["zfs", "snapshot", f"{VOL}@final"])
        _send(lab, "lab1", "lab2", ["-i", "@s0", f"{VOL}@final"])
        _ana(lab, "lab2", 2, "optimized")  # and resumes it on lab2
        held = time.monotonic() - t0
        p.wait_writes(50)  # through lab2's path
        lab.run("lab1", ["rm", "-f", f"{ROOT}/ports/1/subsystems/{NQN}"])  # lab1 withdrawn
        old = [c for c in lab.run(client, ["sh", "-c", 'for c in /sys/class/nvme/nvme*; do '
                                           'grep -q "traddr=$1," "$c/address" && basename '
                                           '"$c"; done; true', "sh", a1]).stdout.split()]
        for c in old:
            lab.run(client, ["nvme", "disconnect", "-d", c])
        _wait_paths(lab, client, {a2: "live"})
        p.wait_writes(50)
        result = p.stop()
        p = None
        log(f"live cutover lab1 -> lab2: hold {held:.1f} s, probe {result}")
        figure(f"live cutover (ANA + final incremental): I/O held {held:.1f} s, longest "
               f"probe stall {result.longest_stall:.2f} s, {result.writes} writes, "
               f"{result.errors} errors, {result.mismatches} mismatches")
        assert result.clean and result.reads > 0, result
        # lab2's copy is lab1's @final (every write made through lab1 before the hold)
        guid = {n: lab.run(n, ["zfs", "get", "-Hp", "-o", "value", "guid", f"{VOL}@final"])
                .stdout.strip() for n in ("lab1", "lab2")}
        assert guid["lab1"] == guid["lab2"] != "", guid
    finally:
        if p is not None:
            p.request_stop()
        lab.run(client, probe.cleanup_argv(), check=False)
        for node in ("lab1", "lab2"):
            lab.run(node, ["sh", "-c", CLEAN], check=False)
            lab.run(node, ["zfs", "destroy", "-r", "tank/live"], check=False)
