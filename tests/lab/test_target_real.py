"""The lab NVMe/TCP target (xfleet-lab-target 1.0/1.1/broken 1.2) on lab1, lab2 as the
initiator (nvme-cli over the private link) running an I/O probe through a rolling upgrade:
1.0 -> 1.1 keeps the pinned identities and costs the probe no error; the broken 1.2 never gets
ready (the driver's readiness check times out with a clear error); rolling back to 1.1 works."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from xfleet import inventory
from xfleet.lab import target_pkg
from xfleet.target import NvmetDriver, TargetError, pinned_identity
from xfleet.transport import Connections

from .labkit import Lab, log

pytestmark = pytest.mark.lab

VOLUMES = ("tank/tgt/a", "tank/tgt/b")

# lab2: sequence-numbered, checksummed 4 KiB blocks written with O_DIRECT and read back; every
# error and mismatch counted, the longest stall (one write+read round) recorded; ends when the
# stop file exists, then reads every slot back once more.
PROBE = r"""
import json, mmap, os, sys, time, zlib
dev, stop, out = sys.argv[1:4]
BS, SLOTS = 4096, 256
fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
wbuf, rbuf = mmap.mmap(-1, BS), mmap.mmap(-1, BS)
def block(seq):
    body = (seq.to_bytes(8, "little") * (BS // 8 - 1))
    return seq.to_bytes(8, "little")[:4] + zlib.crc32(body).to_bytes(4, "little") + body
st = {"writes": 0, "reads": 0, "errors": 0, "mismatches": 0, "longest_stall": 0.0,
      "messages": []}
last = {}
seq = 0
while not os.path.exists(stop):
    seq += 1
    slot = seq % SLOTS
    t = time.monotonic()
    try:
        wbuf.seek(0); wbuf.write(block(seq))
        os.pwritev(fd, [wbuf], slot * BS); st["writes"] += 1
        last[slot] = seq
        os.preadv(fd, [rbuf], slot * BS); st["reads"] += 1
        if bytes(rbuf) != block(seq):
            st["mismatches"] += 1
    except OSError as exc:
        st["errors"] += 1
        st["messages"].append(str(exc))
        time.sleep(0.2)
    st["longest_stall"] = max(st["longest_stall"], time.monotonic() - t)
    time.sleep(0.01)
for slot, s in last.items():
    os.preadv(fd, [rbuf], slot * BS)
    if bytes(rbuf) != block(s):
        st["mismatches"] += 1
json.dump(st, open(out + ".tmp", "w")); os.replace(out + ".tmp", out)
"""

# lab2: NQN, block device, uuid, nguid of each connected namespace (sysfs)
IDENTITIES = r"""
for s in /sys/class/nvme-subsystem/nvme-subsys*; do
  for n in "$s"/nvme*n*; do
    [ -e "$n/uuid" ] || continue
    printf '%s\t%s\t%s\t%s\n' "$(cat "$s/subsysnqn")" "$(basename "$n")" "$(cat "$n/uuid")" \
      "$(cat "$n/nguid")"
  done
done
"""


def _copy(lab: Lab, node: str, src: Path, dst: str) -> None:
    lab.run(node, ["sh", "-c", 'mkdir -p "$(dirname "$1")" && base64 -d > "$1"', "sh", dst],
            input=base64.b64encode(src.read_bytes()).decode())


def _initiator(lab: Lab) -> dict[str, tuple[str, str, str]]:
    out = lab.run("lab2", ["sh", "-c", IDENTITIES]).stdout
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_target_upgrade_keeps_identities_and_io(lab: Lab, tmp_path: Path) -> None:
    pkgs = target_pkg.build_all(tmp_path / "debs")
    addr = lab.state.node("lab1").private_address
    for p in pkgs.values():
        _copy(lab, "lab1", p.path, p.remote_path)
    lab.run("lab1", ["sh", "-c", 'printf "address=%s\\n" "$1" > "$2"', "sh", addr,
                     target_pkg.CONF])
    for v in VOLUMES:
        lab.run("lab1", ["zfs", "create", "-p", "-V", "32M", v])
    inv = inventory.load(lab.inventory)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        t = conns.get("lab1")
        drv = NvmetDriver("lab1", t)
        try:
            drv.stage("1.0", pkgs["1.0"].remote_path, pkgs["1.0"].sha256)
            drv.restart("1.0", pkgs["1.0"].remote_path)
            assert drv.wait_ready("1.0", timeout=120) == "1.0"

            before = t.commands
            exports = drv.exports()
            assert t.commands == before + 1  # one remote command lists every export
            guids = {v: lab.run("lab1", ["zfs", "get", "-Hp", "-o", "value", "guid", v])
                     .stdout.strip() for v in VOLUMES}
            by_dev = {e.device: e for e in exports}
            assert sorted(by_dev) == [f"/dev/zvol/{v}" for v in VOLUMES]
            for v in VOLUMES:
                e = by_dev[f"/dev/zvol/{v}"]
                assert (e.uuid, e.nguid) == pinned_identity("lab1", guids[v]) and e.enabled

            # lab2 connects to both subsystems over the private link; the kernel retries for
            # ever (-l -1) every second (-c 1) while the target restarts
            lab.run("lab2", ["modprobe", "nvme-tcp"])
            for e in exports:
                lab.run("lab2", ["nvme", "connect", "-t", "tcp", "-a", addr, "-s", "4420",
                                 "-n", e.nqn, "-l", "-1", "-c", "1"])
            seen = _initiator(lab)
            assert {nqn: (u, g) for nqn, (_, u, g) in seen.items()} == \
                {e.nqn: (e.uuid, e.nguid) for e in exports}
            probe_dev = "/dev/" + seen[exports[0].nqn][0]
            _copy(lab, "lab2", _probe_file(tmp_path), "/root/probe.py")
            lab.run("lab2", ["sh", "-c", 'rm -f /root/probe.stop /root/probe.json; setsid '
                             'python3 /root/probe.py "$1" /root/probe.stop /root/probe.json '
                             '>/root/probe.log 2>&1 < /dev/null &', "sh", probe_dev])
            time.sleep(3)

            # the upgrade: stage (digest), install + restart, readiness
            drv.stage("1.1", pkgs["1.1"].remote_path, pkgs["1.1"].sha256)
            with pytest.raises(TargetError, match="sha256"):
                drv.stage("1.1", pkgs["1.1"].remote_path, pkgs["1.0"].sha256)
            drv.restart("1.1", pkgs["1.1"].remote_path)
            assert drv.wait_ready("1.1", timeout=120) == "1.1"
            assert drv.versions().installed == "1.1" and drv.versions().running == "1.1"
            assert drv.exports() == exports  # same NQNs, devices and pinned identities
            time.sleep(3)

            # the broken 1.2: exports, but never ready; roll back to 1.1
            drv.restart("1.2", pkgs["1.2"].remote_path)
            with pytest.raises(TargetError, match="not ready with version 1.2"):
                drv.wait_ready("1.2", timeout=15)
            drv.rollback("1.1", pkgs["1.1"].remote_path)
            assert drv.wait_ready("1.1", timeout=120) == "1.1"
            assert drv.versions().installed == "1.1"
            time.sleep(3)

            lab.run("lab2", ["touch", "/root/probe.stop"])
            probe: dict[str, object] = {}
            for _ in range(120):
                res = lab.run("lab2", ["cat", "/root/probe.json"], check=False)
                if res.exit_status == 0:
                    probe = json.loads(res.stdout)
                    break
                time.sleep(1)
            log(f"probe through 1.0 -> 1.1 -> 1.2 (broken) -> 1.1: {probe}")
            assert probe, lab.run("lab2", ["cat", "/root/probe.log"], check=False).stdout
            assert probe["errors"] == 0 and probe["mismatches"] == 0, probe
            assert isinstance(probe["writes"], int) and probe["writes"] > 0
            after = _initiator(lab)
            assert {nqn: (u, g) for nqn, (_, u, g) in after.items()} == \
                {nqn: (u, g) for nqn, (_, u, g) in seen.items()}
        finally:
            lab.run("lab2", ["sh", "-c", "touch /root/probe.stop; sleep 1; nvme disconnect-all"],
                    check=False)
            lab.run("lab1", ["sh", "-c", "systemctl stop xfleet-lab-target; "
                             "dpkg -P xfleet-lab-target"], check=False)


def _probe_file(tmp_path: Path) -> Path:
    p = tmp_path / "probe.py"
    p.write_text(PROBE)
    return p
