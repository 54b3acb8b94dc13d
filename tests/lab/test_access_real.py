"""NVMe-oF access control on real OpenZFS and the real kernel target (issue #21, item 1):
client1's host NQN read over SSH; `xfleet target audit` flags the open subsystems; attach
restricts a subsystem (client1 connects, `nvme list` shows its namespace), a host not in the
allowed list cannot connect, a second writer is refused; a target restart re-applies the
allowed hosts from the zvols' xfleet:hosts; detach drops client1's connection (its
namespace leaves `nvme list`) and closes the volume. Through the CLI, on lab1.

The second initiator, `db2`, is lab2 reached as a database host (the same VM, another role):
its own /etc/nvme/hostnqn (the lab image gives every VM the same one, which `initiators
--read` refuses: lab2 gets a random one first; `nvme gen-hostnqn` would derive a zero UUID
from QEMU's DMI)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import wait_for

from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import STORAGE_ONLY_KEYS
from xfleet.fleet.target_spec import NVMET_DEFAULTS
from xfleet.lab import target_pkg
from xfleet.ops import initiator
from xfleet.ops.target import NvmetDriver
from xfleet.remote.transport import Transport

from .labkit import Lab, log

pytestmark = pytest.mark.lab

A, B = "tank/acc/a", "tank/acc/b"
PORT = int(NVMET_DEFAULTS["port"])
EXIT_FINDINGS = 5


def _inventory(lab: Lab, out: Path) -> Path:
    """The lab's inventory with lab1's target (nvmet) and lab2 also listed as initiator db2."""
    data = yaml.safe_load(lab.inventory.read_text())
    hosts = data["all"]["hosts"]
    hosts["lab1"]["target"] = {"driver": "nvmet"}
    data["all"]["initiators"]["db2"] = {k: v for k, v in hosts["lab2"].items()
                                        if k not in STORAGE_ONLY_KEYS}
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def _devices(t: Transport) -> list[str]:
    """The namespaces `nvme list` shows on the initiator."""
    text = t.run(["nvme", "list", "-o", "json"]).stdout
    return sorted(d["DevicePath"] for d in (json.loads(text) if text.strip() else {})
                  .get("Devices", []))


def test_allowed_hosts_on_the_kernel_target(lab: Lab, client: str, tmp_path: Path) -> None:
    debs = target_pkg.build_all(tmp_path / "debs")
    for v in (A, B):
        lab.run("lab1", ["zfs", "create", "-p", "-V", "16M", v])
    hostnqn = lab.run(client, ["cat", "/etc/nvme/hostnqn"]).stdout.strip()
    if lab.run("lab2", ["cat", "/etc/nvme/hostnqn"], check=False).stdout.strip() in \
            (hostnqn, ""):  # one image, one host NQN: give lab2 its own, as a host would have
        lab.run("lab2", ["sh", "-c", "echo nqn.2014-08.org.nvmexpress:uuid:$(cat "
                         "/proc/sys/kernel/random/uuid) > /etc/nvme/hostnqn"])
    inv_path = _inventory(lab, tmp_path / "fleet.yaml")
    mirror = tmp_path / "m.db"
    inv = inventory.load(inv_path)
    address = lab.state.node("lab1").private_address

    def x(*args: str, code: int = 0) -> Any:
        r = lab.xfleet(*args, "--json", inventory=inv_path, mirror=mirror)
        assert r.code == code, r.explain()
        return json.loads(r.out)

    start = time.monotonic()
    try:
        target_pkg.install(lab.state, "lab1", {"1.0": debs["1.0"]}, "1.0")
        with Connections(inv.hosts, state_dir=inv.state_dir) as conns, \
                Connections(inv.initiators, state_dir=inv.state_dir) as hosts:
            drv = NvmetDriver("lab1", conns.get("lab1"))
            nqn = {e.device.removeprefix("/dev/zvol/"): e.nqn for e in drv.exports()}
            assert sorted(nqn) == [A, B]
            t = hosts.get(client)
            assert _devices(t) == []
            assert lab.xfleet("sync", "--node", "lab1", inventory=inv_path,
                              mirror=mirror).code == 0
            read = x("initiators", "--read")
            got = {r["name"]: r["hostnqn"] for r in read["initiators"]}
            assert got[client] == hostnqn and got["db2"] not in (None, hostnqn)

            # every export is open: the audit says so, and fails
            audit = x("target", "audit", "--node", "lab1", code=EXIT_FINDINGS)
            assert sorted((f["kind"], f["volume"]) for f in audit["findings"]) == \
                [("open", A), ("open", B)]

            # attach: A to client1, B to db2; a second writer of A is refused
            assert x("attach", A, client)["ok"] is True
            assert x("attach", B, "db2")["ok"] is True
            refused = x("attach", A, "db2", code=1)
            assert "a second writer is refused" in refused["error"]["message"]
            assert x("target", "audit", "--node", "lab1")["ok"] is True
            listed = {e.device: (e.allow_any_host, e.hosts) for e in drv.exports()}
            assert listed[f"/dev/zvol/{A}"] == (False, (hostnqn,))
            assert listed[f"/dev/zvol/{B}"] == (False, (got["db2"],))

            # durable: a restart of the target re-applies them from xfleet:hosts
            assert lab.run("lab1", ["zfs", "get", "-H", "-o", "value", "xfleet:hosts", A]
                           ).stdout.strip() == hostnqn
            lab.run("lab1", ["systemctl", "restart", str(NVMET_DEFAULTS["service"])])
            drv.wait_ready("1.0", timeout=60, interval=0.5)
            assert {e.device: (e.allow_any_host, e.hosts) for e in drv.exports()} == listed

            # client1 connects to A (allowed) and sees it; B refuses it
            initiator.connect(t, address, PORT, nqn[A], ctrl_loss_tmo=3, reconnect_delay=1)
            (dev,) = wait_for(lambda: _devices(t), "client1's namespace of A", timeout=30,
                              interval=0.3)
            denied = t.run(initiator.connect_argv(address, PORT, nqn[B], ctrl_loss_tmo=3),
                           check=False)
            assert denied.exit_status != 0, denied
            assert [c.nqn for c in initiator.controllers(t)] == [nqn[A]]
            assert _devices(t) == [dev]
            log(f"client1: {dev} from {nqn[A]}; connecting to {nqn[B]} failed: "
                f"{denied.stderr.strip()}")

            # detach: the controller is dropped and cannot come back; nvme list is empty
            assert x("detach", A, client)["ok"] is True
            wait_for(lambda: _devices(t) == [], "client1's namespace of A to go", timeout=30,
                     interval=0.3)
            assert {e.device: (e.allow_any_host, e.hosts) for e in drv.exports()}[
                f"/dev/zvol/{A}"] == (False, ())
            assert lab.run("lab1", ["zfs", "get", "-H", "-o", "value", "xfleet:hosts", A]
                           ).stdout.strip() == "none"
            again = t.run(initiator.connect_argv(address, PORT, nqn[A], ctrl_loss_tmo=3),
                          check=False)
            assert again.exit_status != 0
            assert x("target", "audit", "--node", "lab1")["ok"] is True
            log(f"access control on lab1: {time.monotonic() - start:.1f}s")
    finally:
        lab.run(client, ["nvme", "disconnect-all"], check=False)
        target_pkg.uninstall(lab.state, "lab1")
