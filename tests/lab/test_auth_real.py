"""DH-CHAP on the real kernel target and client1's real NVMe host (issue #21 item 1, the
lab image's bookworm-backports kernel: CONFIG_NVME_TARGET_AUTH and CONFIG_NVME_HOST_AUTH).

client1's secret comes from a file named in the inventory. `xfleet auth apply` gives it to
lab1's target: from then on, lab1 refuses client1 without it and with a wrong one, and lets
it in with it (through `initiator.connect(secret=)`, the secret on stdin). With the I/O probe
running, the secret is rotated (the file changed, `auth status` says `differs`, `auth apply`
gives the new one to the target and to client1's live connection); a controller reset then
re-authenticates with the new secret on both sides, and the probe sees no error and no
mismatch. The secret survives the target losing its configfs host entries (as at a reboot):
the service gives it back from the node's auth_dir before it exports anything. No secret
appears in any xfleet output."""

from __future__ import annotations

import base64
import json
import os
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import wait_for

from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.fleet.secrets import parse_secret
from xfleet.fleet.target_spec import NVMET_DEFAULTS
from xfleet.lab import probe, target_pkg
from xfleet.ops import initiator
from xfleet.ops.target import NvmetDriver

from .labkit import Lab, log

pytestmark = pytest.mark.lab

VOL = "tank/auth/a"
PORT = int(NVMET_DEFAULTS["port"])
AUTH_DIR = str(NVMET_DEFAULTS["auth_dir"])
SERVICE = str(NVMET_DEFAULTS["service"])


def _new_secret() -> str:
    """A DH-CHAP secret as `nvme gen-dhchap-key --hmac=1` prints it (32 random bytes)."""
    key = os.urandom(32)
    blob = key + zlib.crc32(key).to_bytes(4, "little")
    return f"DHHC-1:01:{base64.b64encode(blob).decode()}:"


def _inventory(lab: Lab, out: Path, client: str, secret_file: Path) -> Path:
    data = yaml.safe_load(lab.inventory.read_text())
    data["all"]["hosts"]["lab1"]["target"] = {"driver": "nvmet"}
    data["all"]["initiators"][client]["dhchap_secret_file"] = str(secret_file)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def test_dhchap_on_the_kernel_target(lab: Lab, client: str, tmp_path: Path) -> None:
    debs = target_pkg.build_all(tmp_path / "debs")
    lab.run("lab1", ["zfs", "create", "-p", "-V", "16M", VOL])
    key_file = tmp_path / "client1.key"
    one, two = _new_secret(), _new_secret()
    key_file.write_text(one + "\n")
    key_file.chmod(0o600)
    inv_path = _inventory(lab, tmp_path / "fleet.yaml", client, key_file)
    mirror = tmp_path / "m.db"
    inv = inventory.load(inv_path)
    address = lab.state.node("lab1").private_address
    outputs: list[str] = []

    def x(*args: str, code: int = 0) -> Any:
        r = lab.xfleet(*args, "--json", inventory=inv_path, mirror=mirror)
        outputs.append(r.out + r.err)
        assert r.code == code, r.explain()
        return json.loads(r.out)

    p: probe.Probe | None = None
    try:
        lab.install_target("lab1", {"1.0": debs["1.0"]})
        with Connections(inv.hosts, state_dir=inv.state_dir) as conns, \
                Connections(inv.initiators, state_dir=inv.state_dir) as hosts:
            drv = NvmetDriver("lab1", conns.get("lab1"))
            (nqn,) = [e.nqn for e in drv.exports()]
            t = hosts.get(client)
            x("sync", "--node", "lab1")
            x("initiators", "--read", client)
            assert x("attach", VOL, client)["ok"] is True

            # no secret on the target yet: status says none
            status = x("auth", "status", code=1)
            assert [(s["node"], s["host"], s["target"]) for s in status["steps"]] == \
                [("lab1", client, "none")], status
            applied = x("auth", "apply")
            assert [(s["node"], s["target"], s["connections"]) for s in applied["steps"]] == \
                [("lab1", "changed", [])], applied
            assert x("auth", "status")["steps"][0]["target"] == "match"
            hostnqn = lab.run(client, ["cat", "/etc/nvme/hostnqn"]).stdout.strip()
            kept = lab.run("lab1", ["stat", "-c", "%a", AUTH_DIR, f"{AUTH_DIR}/{hostnqn}"]
                           ).stdout.split()
            assert kept == ["700", "600"], kept

            # lab1 refuses client1 without the secret, and with a wrong one
            bare = t.run(initiator.connect_argv(address, PORT, nqn, ctrl_loss_tmo=3),
                         check=False)
            assert bare.exit_status != 0, bare
            wrong = t.run(initiator.connect_argv(address, PORT, nqn, ctrl_loss_tmo=3,
                                                 secret_on_stdin=True),
                          stdin=(_new_secret() + "\n").encode(), check=False)
            assert wrong.exit_status != 0, wrong
            assert initiator.controllers(t) == []
            log(f"client1 without its secret: {bare.stderr.strip()}; with a wrong one: "
                f"{wrong.stderr.strip()}")

            # with it: connected, and the connection says it was made with a secret
            initiator.connect(t, address, PORT, nqn, ctrl_loss_tmo=30, reconnect_delay=1,
                              secret=parse_secret(one, "test"))
            (ctrl,) = wait_for(lambda: [c for c in initiator.controllers(t)
                                        if c.live and c.namespaces], "client1's path",
                               timeout=60, interval=0.3)
            assert ctrl.authenticated is True
            p = probe.start(lab.state, client, f"/dev/{ctrl.namespaces[0].device}")
            p.wait_writes(30)

            # rotation: the source changes; status sees it; apply gives the target and the
            # live connection the new secret
            key_file.write_text(two + "\n")
            assert x("auth", "status", code=1)["steps"][0]["target"] == "differs"
            rotated = x("auth", "apply", client)
            assert [(s["target"], s["connections"]) for s in rotated["steps"]] == \
                [("changed", [f"{ctrl.name} changed"])], rotated
            journal = x("auth", "log", client, "--limit", "1")["log"]
            assert [(r["batch"], r["node"], r["source"], r["target"], r["connections"],
                     r["outcome"]) for r in journal] == [
                (rotated["batch"], "lab1", "file", "changed", f"{ctrl.name} changed", "ok")]
            # a reset makes the controller connect (and authenticate) again: with the new
            # secret on both sides, it comes back
            t.run(["nvme", "reset", f"/dev/{ctrl.name}"])
            wait_for(lambda: [c.state for c in initiator.controllers(t)] == ["live"],
                     "client1's controller to be live after the reset", timeout=60,
                     interval=0.3)
            p.wait_writes(30)
            assert x("auth", "apply")["steps"][0] == {
                "node": "lab1", "host": client, "target": "unchanged",
                "connections": [f"{ctrl.name} unchanged"], "ok": True, "error": None,
                "hint": None}

            # as after a reboot: the target loses its host entries; the service gives the
            # secret back before it exports anything
            lab.run("lab1", ["systemctl", "stop", SERVICE])
            lab.run("lab1", ["rmdir", f"/sys/kernel/config/nvmet/hosts/{hostnqn}"])
            lab.run("lab1", ["systemctl", "start", SERVICE])
            drv.wait_ready("1.0", timeout=60, interval=0.5)
            assert x("auth", "status")["steps"][0]["target"] == "match"
            wait_for(lambda: [c.state for c in initiator.controllers(t)] == ["live"],
                     "client1's controller to reconnect after the target's restart",
                     timeout=60, interval=0.3)
            p.wait_writes(30)
            result = p.stop()
            p = None
            log(f"probe through a rotation, a reset and a target restart: {result}")
            assert result.clean, result
            t.run(["nvme", "disconnect", "-n", nqn])
            again = t.run(initiator.connect_argv(address, PORT, nqn, ctrl_loss_tmo=3,
                                                 secret_on_stdin=True),
                          stdin=(one + "\n").encode(), check=False)
            assert again.exit_status != 0, "the old secret must be refused"
        for text in outputs:
            assert one not in text and two not in text
            for secret in (one, two):
                assert secret.split(":")[2] not in text
    finally:
        if p is not None:
            p.request_stop()
        lab.run(client, probe.cleanup_argv(), check=False)
        lab.run(client, ["nvme", "disconnect-all"], check=False)
        lab.remove_target("lab1")
        lab.run("lab1", ["sh", "-c", "for h in /sys/kernel/config/nvmet/hosts/*; do "
                         '[ -d "$h" ] && rmdir "$h"; done; rm -rf "$1"', "sh", AUTH_DIR],
                check=False)
