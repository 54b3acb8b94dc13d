"""Rolling upgrades of the real NVMe/TCP target (xfleet-lab-target) on both lab nodes while the
lab's client VM (client1, an nvme-cli initiator) runs an I/O probe against a volume on each:
1.0 -> 1.1 with zero I/O errors; the broken 1.2 fails on the canary, which is rolled back while
the other node is untouched; a rollout SIGKILLed mid-node is finished by `rollouts resume`.
Everything goes through the CLI, as an SRE would run it (issue #8's lab acceptance)."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from xfleet.core.identity import pinned_identity
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.lab import probe, target_pkg
from xfleet.ops import initiator
from xfleet.ops.target import NvmetDriver

from .labkit import ROOT, Lab, log

pytestmark = pytest.mark.lab

VOLUMES = {"lab1": "tank/up/a", "lab2": "tank/up/b"}
CLIENT = "client1"


@dataclass
class Fleet:
    inventory: Path
    mirror: Path
    debs: dict[str, target_pkg.Package]
    devices: dict[str, str]  # node -> the client's block device of that node's volume
    nqns: dict[str, str]  # node -> subsystem NQN
    identities: dict[str, tuple[str, str]]  # node -> pinned (uuid, nguid)

    def deb(self, version: str) -> str:
        return str(self.debs[version].path)


def _with_targets(lab: Lab, out: Path) -> Path:
    """The lab's inventory (nodes and the client as an initiator) with `target: nvmet`."""
    data = yaml.safe_load(lab.inventory.read_text())
    assert CLIENT in (data["all"].get("initiators") or {}), "the lab has no client VM"
    for host in data["all"]["hosts"].values():
        host["target"] = {"driver": "nvmet"}
    data["all"]["vars"]["mirror"] = str(out.parent / "m.db")
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def _running(lab: Lab, node: str) -> tuple[str | None, str]:
    """(running version, ActiveEnterTimestampMonotonic of the service: changes on restart)."""
    ready = lab.run(node, ["cat", "/run/xfleet-lab-target/ready"], check=False).stdout
    version = next((ln.split("=", 1)[1] for ln in ready.splitlines()
                    if ln.startswith("version=")), None)
    since = lab.run(node, ["systemctl", "show", "-p", "ActiveEnterTimestampMonotonic",
                           "--value", "xfleet-lab-target"]).stdout.strip()
    return version, since


@pytest.fixture(scope="module")
def fleet(lab: Lab, client: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("upgrades")
    assert client == CLIENT  # booted for these tests (conftest.py)
    debs = target_pkg.build_all(tmp / "debs")
    try:
        for node, vol in VOLUMES.items():
            lab.run(node, ["zfs", "create", "-p", "-V", "32M", vol])
            # only 1.0 is put on the nodes: the rollout copies 1.1 itself (staging)
            target_pkg.install(lab.state, node, {"1.0": debs["1.0"]}, "1.0")
        inv_path = _with_targets(lab, tmp / "fleet.yaml")
        mirror = tmp / "m.db"
        r = lab.xfleet("sync", inventory=inv_path, mirror=mirror)
        assert r.code == 0, r.explain()
        inv = inventory.load(inv_path)
        nqns, ids = {}, {}
        with Connections(inv.hosts, state_dir=inv.state_dir) as conns, \
                Connections(inv.initiators, state_dir=inv.state_dir) as clients:
            host = clients.get(CLIENT)
            for node, vol in VOLUMES.items():
                (e,) = NvmetDriver(node, conns.get(node)).exports()
                guid = lab.run(node, ["zfs", "get", "-Hp", "-o", "value", "guid", vol]
                               ).stdout.strip()
                assert (e.uuid, e.nguid) == pinned_identity(node, guid)
                nqns[node], ids[node] = e.nqn, (e.uuid, e.nguid)
                initiator.connect(host, lab.state.node(node).private_address, 4420, e.nqn,
                                  ctrl_loss_tmo=-1, reconnect_delay=1)
            devices: dict[str, str] = {}
            for _ in range(60):
                by = initiator.by_nqn(initiator.controllers(host))
                devices = {node: "/dev/" + by[nqn][0].namespaces[0].device
                           for node, nqn in nqns.items()
                           if nqn in by and by[nqn][0].live and by[nqn][0].namespaces}
                if len(devices) == len(nqns):
                    break
                time.sleep(1)
            assert len(devices) == 2, f"the client did not see both namespaces: {by}"
        yield Fleet(inv_path, mirror, debs, devices, nqns, ids)
    finally:
        lab.run(CLIENT, probe.cleanup_argv(), check=False)
        for node in VOLUMES:
            target_pkg.uninstall(lab.state, node)


def _stop(lab: Lab, probes: list[probe.Probe]) -> list[probe.ProbeResult]:
    try:
        return probe.stop_all(probes)
    except Exception:
        diag = lab.run(CLIENT, ["sh", "-c", "ps aux | grep [p]robe; ls -la /root/xfleet-probe; "
                                "journalctl -b --no-pager | tail -60; dmesg | tail -60"],
                       check=False)
        log(f"client diagnostics:\n{diag.stdout}\n{diag.stderr}")
        raise


def _probes(lab: Lab, fleet: Fleet) -> list[probe.Probe]:
    ps = [probe.start(lab.state, CLIENT, dev, name=f"up-{node}")
          for node, dev in fleet.devices.items()]
    for p in ps:  # some I/O on every device before the first restart
        p.wait_writes()
    return ps


def _client_sees(lab: Lab, fleet: Fleet) -> dict[str, tuple[str, str, str]]:
    inv = inventory.load(fleet.inventory)
    with Connections(inv.initiators, state_dir=inv.state_dir) as clients:
        by = initiator.by_nqn(initiator.controllers(clients.get(CLIENT)))
    return {node: (by[nqn][0].state, by[nqn][0].namespaces[0].uuid,
                   by[nqn][0].namespaces[0].nguid) for node, nqn in fleet.nqns.items()}


def _check_clients(lab: Lab, fleet: Fleet, results: list[probe.ProbeResult], what: str) -> None:
    for node, res in zip(fleet.devices, results, strict=True):
        log(f"{what}: probe on {node}'s volume: {res.writes} writes, {res.errors} errors, "
            f"{res.mismatches} mismatches, longest stall {res.longest_stall:.2f}s")
        assert res.clean, (node, res)
    assert _client_sees(lab, fleet) == {n: ("live", *fleet.identities[n]) for n in VOLUMES}


def test_rolling_upgrade_1_0_to_1_1_without_io_errors(lab: Lab, fleet: Fleet) -> None:
    # the playbook's check mode runs the same preflight and shows the batches
    r = lab.xfleet("play", str(ROOT / "playbooks" / "rolling-upgrade.yaml"), "--check",
                   "--var", f"package=1.1={fleet.deb('1.1')}",
                   "--var", f"previous=1.0={fleet.deb('1.0')}",
                   inventory=fleet.inventory, mirror=fleet.mirror)
    assert r.code == 0, r.explain()
    assert "batch 1: restart lab1 into 1.1" in r.out and "batch 2: restart lab2" in r.out

    probes = _probes(lab, fleet)
    r = lab.xfleet("upgrade", "target", "1.1", "--package", fleet.deb("1.1"),
                   "--rollback-package", fleet.deb("1.0"), "--soak", "5", "--yes", "--json",
                   inventory=fleet.inventory, mirror=fleet.mirror)
    results = _stop(lab, probes)
    assert r.code == 0, r.explain()
    d = r.json()
    assert d["state"] == "done", d
    assert [(n["node"], n["batch"], n["from_version"], n["state"]) for n in d["nodes"]] == [
        ("lab1", 0, "1.0", "done"), ("lab2", 1, "1.0", "done")]
    for n in d["nodes"]:
        log(f"upgrade 1.0 -> 1.1: {n['node']} took {n['finished_at'] - n['started_at']:.1f}s "
            "(checks, restart, ready, exports, soak 5s, client verify)")
    for node in VOLUMES:
        assert _running(lab, node)[0] == "1.1"
    _check_clients(lab, fleet, results, "1.0 -> 1.1")
    r = lab.xfleet("rollouts", "show", str(d["id"]), inventory=fleet.inventory,
                   mirror=fleet.mirror)
    assert r.code == 0 and "client1: 1 path(s) live, identities unchanged" in r.out, r.explain()


def test_broken_version_fails_the_canary_rolls_back_and_pauses(lab: Lab, fleet: Fleet) -> None:
    untouched = _running(lab, "lab2")
    assert untouched[0] == "1.1"
    probes = _probes(lab, fleet)
    r = lab.xfleet("upgrade", "target", "1.2", "--package", fleet.deb("1.2"),
                   "--rollback-package", fleet.deb("1.1"), "--ready-timeout", "20", "--soak",
                   "2", "--yes", "--json", inventory=fleet.inventory, mirror=fleet.mirror)
    results = _stop(lab, probes)
    assert r.code == 4, r.explain()  # paused
    d = r.json()
    assert d["state"] == "paused"
    assert "the canary failed" in d["reason"] and "not ready with version 1.2" in d["reason"]
    assert "rolled back to 1.1" in d["reason"]
    assert [(n["node"], n["state"]) for n in d["nodes"]] == [("lab1", "failed"),
                                                              ("lab2", "staged")]
    assert _running(lab, "lab1")[0] == "1.1"
    assert _running(lab, "lab2") == untouched  # never restarted
    _check_clients(lab, fleet, results, "broken 1.2 on the canary, rolled back")
    r = lab.xfleet("rollouts", "stop", str(d["id"]), inventory=fleet.inventory,
                   mirror=fleet.mirror)
    assert r.code == 0 and "stopped" in r.out, r.explain()


def test_sigkill_mid_rollout_then_resume_finishes(lab: Lab, fleet: Fleet) -> None:
    probes = _probes(lab, fleet)
    rid, state = None, None
    with lab.running_xfleet("upgrade", "target", "1.0", "--allow-downgrade", "--package",
                            fleet.deb("1.0"), "--rollback-package", fleet.deb("1.1"), "--soak",
                            "8", "--yes", inventory=fleet.inventory,
                            mirror=fleet.mirror) as p:
        for _ in range(300):
            conn = sqlite3.connect(f"file:{fleet.mirror}?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT rollout, state FROM rollout_nodes WHERE node = "
                                   "'lab1' AND rollout = (SELECT max(id) FROM rollouts)"
                                   ).fetchone()
            except sqlite3.OperationalError:
                row = None
            finally:
                conn.close()
            if row and row[1] == "soaking":
                rid, state = row
                break
            assert p.poll() is None, p.communicate()
            time.sleep(0.5)
        assert state == "soaking", "the rollout never got to soak lab1"
        p.send_signal(signal.SIGKILL)
    assert p.returncode == -signal.SIGKILL
    r = lab.xfleet("rollouts", "show", str(rid), "--json", inventory=fleet.inventory,
                   mirror=fleet.mirror)
    assert r.json()["state"] == "running"  # as the killed process left it
    assert _running(lab, "lab1")[0] == "1.0" and _running(lab, "lab2")[0] == "1.1"
    r = lab.xfleet("rollouts", "resume", str(rid), "--json", inventory=fleet.inventory,
                   mirror=fleet.mirror)
    results = _stop(lab, probes)
    assert r.code == 0, r.explain()
    d = r.json()
    assert d["state"] == "done" and [n["state"] for n in d["nodes"]] == ["done", "done"]
    for node in VOLUMES:
        assert _running(lab, node)[0] == "1.0"
    r = lab.xfleet("rollouts", "show", str(rid), "--json", "--log", "0",
                   inventory=fleet.inventory, mirror=fleet.mirror)
    assert r.code == 0, r.explain()
    msgs = [e["message"] for e in json.loads(r.out)["log"]]
    assert "resuming from soaking" in msgs  # lab1 was not restarted a second time
    assert sum(m.startswith("1.1 -> 1.0: restarting") for m in msgs) == 2
    _check_clients(lab, fleet, results, "1.1 -> 1.0 with a SIGKILL and resume")
