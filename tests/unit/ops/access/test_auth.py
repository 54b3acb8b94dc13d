"""xfleet.ops.access.auth: the order of `apply` (node by node: the target, then the host's
connections to that node), where it stops, what it refuses before touching a target, and that
a secret only ever travels on stdin. The nodes and the host answer as the remote programs do
(their contracts are pinned in tests/unit/remote/test_programs.py); the kernel's side, DH-CHAP
itself, is proven in the lab (tests/lab/test_auth_real.py)."""

from __future__ import annotations

import base64
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from xfleet import mirror
from xfleet.core.errors import UsageError
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.fleet.inventory import Inventory
from xfleet.ops.access import auth, initiators
from xfleet.remote.programs import identify
from xfleet.remote.transport import Transport

NQN1 = "nqn.2014-08.org.nvmexpress:uuid:00000001-0000-4000-8000-000000000001"
NQN2 = "nqn.2014-08.org.nvmexpress:uuid:00000002-0000-4000-8000-000000000002"


def new_secret() -> str:
    key = os.urandom(32)
    return "DHHC-1:01:" + base64.b64encode(key + zlib.crc32(key).to_bytes(4, "little")
                                           ).decode() + ":"


class Scripted(Transport):
    """A node's or a host's answers to the auth programs; records every argv and stdin."""

    kind = "scripted"

    def __init__(self, name: str, *, fail: str | None = None,
                 controllers: list[dict[str, object]] | None = None):
        super().__init__(name)
        self.fail, self.ctrls = fail, controllers or []
        self.keys: dict[str, str] = {}
        self.seen: list[tuple[list[str], bytes | None]] = []

    def _stream(self, argv: list[str], timeout: float, stdin: bytes | None,
                status: list[int], err: list[str]) -> Iterator[str]:
        self.seen.append((list(argv), stdin))
        found = identify(argv)
        assert found is not None, argv
        prog, args = found
        text = (stdin or b"").decode()
        if prog.name == "nvmet_auth":
            for line in text.splitlines():
                host, secret = line.split("\t")
                if self.fail:
                    yield f"{host}\tERR\t{self.fail}"
                elif args[0] == "check":
                    have = self.keys.get(host)
                    yield f"{host}\tOK\t" + ("none" if have is None else
                                             "match" if have == secret else "differs")
                else:
                    yield f"{host}\tOK\t" + ("unchanged" if self.keys.get(host) == secret
                                             else "changed")
                    self.keys[host] = secret
        elif prog.name == "nvme_controllers":
            yield json.dumps({"controllers": self.ctrls})
        elif prog.name == "nvme_dhchap":
            for name in args:
                yield f"{name}\tOK\tchanged"
        status[0] = 0
        err[0] = ""


def ctrl(name: str, address: str, dhchap: str = "set") -> dict[str, object]:
    return {"name": name, "subsysnqn": "nqn.2026-01.io.xfleet:vol:x", "transport": "tcp",
            "address": f"traddr={address},trsvcid=4420", "state": "live", "dhchap": dhchap,
            "namespaces": []}


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Inventory, Path, Path]:
    key = tmp_path / "db1.key"
    key.write_text(new_secret() + "\n")
    key.chmod(0o600)
    nodes = "".join(f"    n{i}:\n      kind: local\n      target: {{driver: nvmet, address: "
                    f"10.0.0.{i}}}\n" for i in (1, 2, 3))
    path = tmp_path / "fleet.yaml"
    path.write_text("all:\n  vars:\n    mirror: mirror.db\n    state_dir: state\n"
                    "  hosts:\n" + nodes + "    n4:\n      kind: local\n"
                    "  initiators:\n"
                    f"    db1: {{kind: local, dhchap_secret_file: {key}}}\n"
                    "    db2: {kind: local}\n")
    inv = inventory.load(path)
    conn = mirror.connect(inv.mirror)
    initiators.record(conn, {"db1": (NQN1, None), "db2": (NQN2, None)})
    conn.close()
    return inv, path, key


def run(inv: Inventory, answering: dict[str, Scripted], host: Scripted,
        hosts: tuple[str, ...] = (), nodes: tuple[str, ...] = (),
        progress: list[str] | None = None) -> auth.Report:
    with Connections(inv.hosts) as conns, Connections(inv.initiators) as clients:
        for n, t in answering.items():
            conns.use(n, t)
        clients.use("db1", host)
        return auth.apply(inv, inv.mirror, conns, hosts, nodes, clients=clients,
                          progress=progress.append if progress is not None else None)


def test_apply_goes_node_by_node_and_the_secret_travels_on_stdin_only(
        setup: tuple[Inventory, Path, Path]) -> None:
    inv, _, key = setup
    secret = key.read_text().strip()
    nodes = {n: Scripted(n) for n in ("n1", "n2", "n3")}
    host = Scripted("db1", controllers=[ctrl("nvme0", "10.0.0.2"), ctrl("nvme1", "10.0.0.9")])
    said: list[str] = []
    report = run(inv, nodes, host, progress=said)
    assert report.ok, report.to_dict()
    assert [(s.node, s.host, s.target, s.connections) for s in report.steps] == [
        ("n1", "db1", "changed", []), ("n2", "db1", "changed", ["nvme0 changed"]),
        ("n3", "db1", "changed", [])]
    assert all(t.keys == {NQN1: secret} for t in nodes.values())
    # one command per node; on the host one listing and one re-authentication (n2's path)
    assert [len(t.seen) for t in nodes.values()] == [1, 1, 1]
    assert [identify(a)[0].name for a, _ in host.seen] == ["nvme_controllers", "nvme_dhchap"]  # type: ignore[index]
    assert identify(host.seen[1][0])[1] == ["nvme0"]  # type: ignore[index]
    everything = [*host.seen, *(s for t in nodes.values() for s in t.seen)]
    assert all(secret not in " ".join(argv) for argv, _ in everything)
    assert host.seen[1][1] == secret.encode()
    assert all(secret not in m for m in said) and len(said) == 3
    # journaled: one line per node, never the secret
    conn = mirror.connect(inv.mirror, readonly=True)
    lines = auth.log(conn)
    conn.close()
    assert [(r["node"], r["initiator"], r["hostnqn"], r["source"], r["target"],
             r["connections"], r["outcome"], r["batch"]) for r in reversed(lines)] == [
        ("n1", "db1", NQN1, "file", "changed", None, "ok", report.batch),
        ("n2", "db1", NQN1, "file", "changed", "nvme0 changed", "ok", report.batch),
        ("n3", "db1", NQN1, "file", "changed", None, "ok", report.batch)]
    assert secret not in repr(lines) and secret.split(":")[2][:12] not in repr(lines)
    # again: nothing changes; status says match everywhere
    again = run(inv, nodes, host)
    assert {s.target for s in again.steps} == {"unchanged"}
    with Connections(inv.hosts) as conns:
        for n, t in nodes.items():
            conns.use(n, t)
        status = auth.status(inv, inv.mirror, conns)
    assert [(s.node, s.target) for s in status.steps] == [
        ("n1", "match"), ("n2", "match"), ("n3", "match")]
    key.write_text(new_secret() + "\n")  # rotated at the source
    with Connections(inv.hosts) as conns:
        for n, t in nodes.items():
            conns.use(n, t)
        assert {s.target for s in auth.status(inv, inv.mirror, conns).steps} == {"differs"}


def test_a_failing_node_stops_the_rest(setup: tuple[Inventory, Path, Path]) -> None:
    inv, _, _ = setup
    nodes = {"n1": Scripted("n1"), "n2": Scripted("n2", fail="Permission denied"),
             "n3": Scripted("n3")}
    report = run(inv, nodes, Scripted("db1"))
    assert not report.ok
    assert [(s.node, s.ok, s.error) for s in report.steps] == [
        ("n1", True, None), ("n2", False, "Permission denied")]
    assert report.left == ["n3"] and nodes["n3"].seen == []
    assert report.to_dict()["left"] == ["n3"]
    conn = mirror.connect(inv.mirror, readonly=True)
    lines = auth.log(conn, ["db1"], limit=1)
    conn.close()
    assert [(r["node"], r["target"], r["outcome"], r["message"]) for r in lines] == [
        ("n2", None, "failed", "Permission denied")]


def test_a_path_connected_without_a_secret_refuses_its_node_before_the_target(
        setup: tuple[Inventory, Path, Path]) -> None:
    inv, _, _ = setup
    nodes = {n: Scripted(n) for n in ("n1", "n2", "n3")}
    host = Scripted("db1", controllers=[ctrl("nvme4", "10.0.0.1", dhchap="none")])
    report = run(inv, nodes, host)
    (step,) = report.steps
    assert step.node == "n1" and not step.ok
    assert step.error is not None and "without a DH-CHAP secret (nvme4)" in step.error
    assert step.hint is not None and "reconnect" in step.hint
    assert nodes["n1"].seen == [] and report.left == ["n2", "n3"]


def test_what_it_refuses_before_anything_runs(setup: tuple[Inventory, Path, Path],
                                              tmp_path: Path) -> None:
    inv, path, _ = setup
    nodes = {n: Scripted(n) for n in ("n1", "n2", "n3")}
    with pytest.raises(UsageError, match="'db2' has no DH-CHAP secret"):
        run(inv, nodes, Scripted("db1"), hosts=("db2",))
    with pytest.raises(UsageError, match="no initiator named 'db9'"):
        run(inv, nodes, Scripted("db1"), hosts=("db9",))
    with pytest.raises(UsageError, match="n4 has no kernel target"):
        run(inv, nodes, Scripted("db1"), nodes=("n4",))
    conn = mirror.connect(inv.mirror)
    conn.execute("DELETE FROM initiators WHERE name = 'db1'")
    conn.close()
    with pytest.raises(UsageError, match="host NQN of db1 was never read") as exc:
        run(inv, nodes, Scripted("db1"))
    assert exc.value.hint == "xfleet initiators --read db1"
    bare = tmp_path / "bare.yaml"
    bare.write_text(path.read_text().replace("dhchap_secret_file", "address"))
    with pytest.raises(UsageError, match="no initiator of the inventory has a DH-CHAP"):
        run(inventory.load(bare), nodes, Scripted("db1"))
    assert all(t.seen == [] for t in nodes.values())
