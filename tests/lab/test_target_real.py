"""The lab NVMe/TCP target (xfleet-lab-target 1.0/1.1/broken 1.2) on lab1, lab2 as the
initiator (nvme-cli over the private link) running an I/O probe through a rolling upgrade:
1.0 -> 1.1 keeps the identities (a volume's own from its xfleet:uuid, another's pinned from
node and guid) and costs the probe no error; the broken 1.2 never gets
ready (the driver's readiness check times out with a clear error); rolling back to 1.1 works."""

from __future__ import annotations

from pathlib import Path

import pytest

from xfleet.core.identity import (
    UUID_PROPERTY,
    nqn_for,
    pinned_identity,
    volume_identity,
    volume_nqn,
)
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.fleet.target_spec import NVMET_DEFAULTS
from xfleet.lab import probe, target_pkg
from xfleet.ops.target import NvmetDriver, TargetError

from .labkit import Lab, log

pytestmark = pytest.mark.lab
PREFIX = str(NVMET_DEFAULTS["nqn_prefix"])

VOLUMES = ("tank/tgt/a", "tank/tgt/b")
# tank/tgt/b has its own identity (docs/identity.md); tank/tgt/a the legacy pinned one
B_UUID = "5f1c2a7e-9d3b-4e8a-b6c1-0a2b3c4d5e6f"

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


def _initiator(lab: Lab) -> dict[str, tuple[str, str, str]]:
    out = lab.run("lab2", ["sh", "-c", IDENTITIES]).stdout
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_target_upgrade_keeps_identities_and_io(lab: Lab, tmp_path: Path) -> None:
    pkgs = target_pkg.build_all(tmp_path / "debs")
    addr = lab.state.node("lab1").private_address
    target_pkg.prepare_node(lab.state, "lab1", pkgs)  # packages + conf (address)
    for v in VOLUMES:
        own = ["-o", f"{UUID_PROPERTY}={B_UUID}"] if v == VOLUMES[1] else []
        lab.run("lab1", ["zfs", "create", "-p", "-V", "32M", *own, v])
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
            a, b = (by_dev[f"/dev/zvol/{v}"] for v in VOLUMES)
            assert (a.uuid, a.nguid) == pinned_identity("lab1", guids[VOLUMES[0]]) and a.enabled
            assert a.nqn == nqn_for(PREFIX, "lab1", VOLUMES[0])
            # the volume's own identity: the NQN and namespace ids any node would export it by
            assert (b.uuid, b.nguid) == volume_identity(B_UUID) and b.enabled
            assert b.nqn == volume_nqn(PREFIX, B_UUID)

            # lab2 connects to both subsystems over the private link; the kernel retries for
            # ever (-l -1) every second (-c 1) while the target restarts
            lab.run("lab2", ["modprobe", "nvme-tcp"])
            for e in exports:
                lab.run("lab2", ["nvme", "connect", "-t", "tcp", "-a", addr, "-s", "4420",
                                 "-n", e.nqn, "-l", "-1", "-c", "1"])
            seen = _initiator(lab)
            assert {nqn: (u, g) for nqn, (_, u, g) in seen.items()} == \
                {e.nqn: (e.uuid, e.nguid) for e in exports}
            io = probe.start(lab.state, "lab2", "/dev/" + seen[exports[0].nqn][0])
            io.wait_writes()  # I/O through this version before the next step

            # the upgrade: stage (digest), install + restart, readiness
            drv.stage("1.1", pkgs["1.1"].remote_path, pkgs["1.1"].sha256)
            with pytest.raises(TargetError, match="sha256"):
                drv.stage("1.1", pkgs["1.1"].remote_path, pkgs["1.0"].sha256)
            drv.restart("1.1", pkgs["1.1"].remote_path)
            assert drv.wait_ready("1.1", timeout=120) == "1.1"
            assert drv.versions().installed == "1.1" and drv.versions().running == "1.1"
            assert drv.exports() == exports  # same NQNs, devices and pinned identities
            io.wait_writes()  # I/O through this version before the next step

            # the broken 1.2: exports, but never ready; roll back to 1.1
            drv.restart("1.2", pkgs["1.2"].remote_path)
            with pytest.raises(TargetError, match="not ready with version 1.2"):
                drv.wait_ready("1.2", timeout=15)
            drv.rollback("1.1", pkgs["1.1"].remote_path)
            assert drv.wait_ready("1.1", timeout=120) == "1.1"
            assert drv.versions().installed == "1.1"
            io.wait_writes()  # I/O through this version before the next step

            result = io.stop()
            log(f"probe through 1.0 -> 1.1 -> 1.2 (broken) -> 1.1: {result}")
            assert result.errors == 0 and result.mismatches == 0, result
            assert result.writes > 0 and result.reads > 0
            after = _initiator(lab)
            assert {nqn: (u, g) for nqn, (_, u, g) in after.items()} == \
                {nqn: (u, g) for nqn, (_, u, g) in seen.items()}
        finally:
            lab.run("lab2", probe.cleanup_argv(), check=False)
            lab.remove_target("lab1")

