"""NVMe-oF target drivers: parsers on real output, pinned identities, the command driver's argv
building, the nvmet driver's remote commands (counted), the inventory `target` key's errors."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES

from xfleet.core.errors import InventoryError, UsageError
from xfleet.core.identity import nqn_for, pinned_identity
from xfleet.fleet import inventory
from xfleet.fleet.target_spec import TargetSpec
from xfleet.ops.target import (
    CommandDriver,
    Export,
    NvmetDriver,
    TargetError,
    driver_for,
    parse_exports,
    parse_ready,
    parse_sha256sum,
    parse_version,
)
from xfleet.remote.transport import Transport

REAL = FIXTURES / "real"


class Canned(Transport):
    """Answers each command from a table keyed by its first argument; records the argv."""

    kind = "canned"

    def __init__(self, answers: dict[str, tuple[int, str]]):
        super().__init__("lab1")
        self.answers = answers

    def _stream(self, argv: list[str], timeout: float, stdin: bytes | None,
                status: list[int], err: list[str]) -> Iterator[str]:
        code, out = self.answers.get(argv[0], (127, ""))
        yield from out.splitlines()
        status[0] = code
        err[0] = "" if code == 0 else f"{argv[0]}: failed"


def test_parse_exports_on_the_lab_configfs_listing() -> None:
    # captured from lab1 running xfleet-lab-target 1.0 (tests/fixtures/real/README.md)
    exports = parse_exports((REAL / "nvmet_exports.txt").read_text())
    assert exports == [
        Export("nqn.2026-01.io.xfleet:lab1:tank.db.vb", 1, "/dev/zvol/tank/db/vb",
               "21846a1b-6a54-5324-bd6e-8f49a3cb4878", "d7cfe11d-d2b4-5162-9223-e9a071148c1d"),
        Export("nqn.2026-01.io.xfleet:lab1:tank.va", 1, "/dev/zvol/tank/va",
               "170f2af6-6743-5e46-b238-947bed797abc", "6242cb7b-10ca-5e5b-a1dc-ad0c79a9b13c"),
    ]


def test_the_initiator_sees_the_identities_the_target_listed() -> None:
    # the same namespace seen from lab2 (sysfs uuid/nguid and `nvme id-ns` nguid)
    seen = (REAL / "nvme_initiator.txt").read_text()
    (va,) = [e for e in parse_exports((REAL / "nvmet_exports.txt").read_text())
             if e.device == "/dev/zvol/tank/va"]
    assert f"{va.uuid} {va.nguid}" in seen
    assert f'"nguid":"{va.nguid.replace("-", "")}"' in seen


def test_parse_exports_rejects_unexpected_lines() -> None:
    with pytest.raises(TargetError, match="line 2"):
        parse_exports("nqn.x\t1\t/dev/zvol/t/a\tu\tn\t1\ngarbage\n")
    assert parse_exports("") == []
    (e,) = parse_exports("nqn.x\t1\t/dev/zvol/t/a\tU\tN\t0\n")
    assert (e.uuid, e.nguid, e.enabled) == ("u", "n", False)
    assert (e.allow_any_host, e.hosts, e.volume) == (True, (), "t/a")  # the 6-column form


def test_parse_exports_reads_who_may_connect() -> None:
    (a, b, c) = parse_exports("nqn.a\t1\t/dev/zvol/t/a\tu\tn\t1\t1\t\n"
                              "nqn.b\t1\t/dev/zvol/t/b c\tu\tn\t1\t0\tnqn.h2,nqn.h1\n"
                              "nqn.c\t1\t/dev/nvme0n1\tu\tn\t1\t0\t\n")
    assert (a.allow_any_host, a.hosts) == (True, ())
    assert (b.allow_any_host, b.hosts, b.volume) == (False, ("nqn.h1", "nqn.h2"), "t/b c")
    assert (c.allow_any_host, c.hosts, c.volume) == (False, (), None)  # closed; not a zvol
    assert b.to_dict()["hosts"] == ["nqn.h1", "nqn.h2"]
    with pytest.raises(TargetError, match="line 1"):
        parse_exports("nqn.a\t1\t/dev/zvol/t/a\tu\tn\t1\t1\n")  # 7 columns


def test_set_hosts_is_one_command_with_the_hosts_on_stdin() -> None:
    class Recorder(Canned):
        stdin: list[bytes | None] = []

        def _stream(self, argv: list[str], timeout: float, stdin: bytes | None,
                    status: list[int], err: list[str]) -> Iterator[str]:
            self.stdin.append(stdin)
            return super()._stream(argv, timeout, stdin, status, err)

    t = Recorder({"python3": (0, "nqn.s:a\tOK\t+1 -0\nnqn.s:b\tERR\tNo such file\n")})
    d = NvmetDriver("lab1", t)
    got = d.set_hosts({"nqn.s:b": ["nqn.h1"], "nqn.s:a": ["nqn.h2", "nqn.h1", "nqn.h1"],
                       "nqn.s:c": []})
    assert t.commands == 1 and t.history[0][3] == "/sys/kernel/config/nvmet"
    assert t.stdin == [b"nqn.s:a\tnqn.h1,nqn.h2\nnqn.s:b\tnqn.h1\nnqn.s:c\t\n"]
    assert got.done == ("nqn.s:a",)
    assert got.failed == {"nqn.s:b": "No such file", "nqn.s:c": "the target did not report it"}
    assert d.set_hosts({}).done == () and t.commands == 1  # nothing to do: no command
    with pytest.raises(UsageError, match="not an NVMe qualified name"):
        d.set_hosts({"nqn.s:a": ["nqn.h1\tnqn.evil"]})
    with pytest.raises(UsageError, match="not an NVMe qualified name"):
        d.set_hosts({"nqn.s:a": ["nqn.h1,nqn.h2"]})  # a comma would split the list
    cmd = CommandDriver("st1", t, {"running_version": ("v",), "exports": ("e",),
                                   "restart": ("r",), "ready": ("r",),
                                   "set_hosts": ("spdk-target", "hosts", "{node}")})
    assert cmd.set_hosts_argv() == ["spdk-target", "hosts", "st1"]
    with pytest.raises(UsageError, match="has no set_hosts command"):
        CommandDriver("st1", t, {"running_version": ("v",), "exports": ("e",),
                                 "restart": ("r",), "ready": ("r",)}).set_hosts({"nqn.a": []})


def test_small_parsers() -> None:
    assert parse_version("\n1.1\n") == "1.1" and parse_version("  \n") is None
    assert parse_ready("version=1.1\nexports=2\n") == {"version": "1.1", "exports": "2"}
    assert parse_ready("not ready\n") == {}
    digest = "ab" * 32
    assert parse_sha256sum(f"{digest.upper()}  /var/lib/x.deb\n") == digest
    assert parse_sha256sum("sha256sum: x: No such file\n") is None


def test_pinned_identity_follows_the_guid_not_the_name() -> None:
    a = pinned_identity("lab1", "9021381232338172871")
    assert a == pinned_identity("lab1", 9021381232338172871)  # deterministic
    assert a != pinned_identity("lab1", 9021381232338172872)  # a re-created volume
    assert a != pinned_identity("lab2", 9021381232338172871)  # another node
    assert a[0] != a[1]
    # the lab capture: tank/va on lab1 got the identity of its guid
    assert nqn_for("nqn.2026-01.io.xfleet", "lab1", "tank/db/vb") == \
        "nqn.2026-01.io.xfleet:lab1:tank.db.vb"


def test_nvmet_driver_lists_every_export_in_one_command() -> None:
    t = Canned({"python3": (0, (REAL / "nvmet_exports.txt").read_text()),
                "cat": (0, "version=1.1\nexports=2\n"),
                "dpkg-query": (0, "1.1"), "dpkg": (0, ""), "systemctl": (0, ""),
                "sha256sum": (0, "ab" * 32 + "  /var/lib/xfleet/target/x.deb\n")})
    d = NvmetDriver("lab1", t)
    assert len(d.exports()) == 2 and t.commands == 1
    assert t.history[0][:2] == ["python3", "-c"] and t.history[0][3] == "/sys/kernel/config/nvmet"
    v = d.versions()
    assert (v.installed, v.running) == ("1.1", "1.1")
    assert d.wait_ready("1.1", timeout=0) == "1.1"
    d.stage("1.1", "/var/lib/xfleet/target/x.deb", "AB" * 32)
    with pytest.raises(TargetError, match="sha256"):
        d.stage("1.1", "/var/lib/xfleet/target/x.deb", "cd" * 32)
    d.restart("1.1", "/var/lib/xfleet/target/x.deb")
    assert t.history[-2:] == [["dpkg", "-i", "--", "/var/lib/xfleet/target/x.deb"],
                              ["systemctl", "restart", "xfleet-lab-target"]]


def test_readiness_that_never_comes_times_out_with_a_clear_error() -> None:
    t = Canned({"cat": (0, "version=1.1\n")})  # the old version keeps answering
    d = NvmetDriver("lab1", t)
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(TargetError, match=r"not ready with version 1\.2 after 5s "
                       r"\(reports 1\.1\)") as exc:
        d.wait_ready("1.2", timeout=5, interval=1, clock=lambda: now[0], sleep=sleep)
    assert "roll back" in (exc.value.hint or "")
    assert t.commands == 6
    gone = NvmetDriver("lab1", Canned({}))  # no ready file at all
    with pytest.raises(TargetError, match="reports not ready"):
        gone.wait_ready("1.2", timeout=0)


def test_command_driver_builds_argv_lists_with_variables() -> None:
    cmds = {"running_version": ("spdk-target", "version"),
            "exports": ("spdk-target", "exports", "--node", "{node}"),
            "restart": ("spdk-target", "install", "{path}", "--version={version}"),
            "ready": ("spdk-target", "ready"),
            "stage": ("spdk-target", "stage", "{path}", "{sha256}")}
    t = Canned({"spdk-target": (0, "2.0\n")})
    d = CommandDriver("lab1", t, cmds)
    assert d.argv("restart", version="2.0", path="/tmp/a b;rm -rf /") == \
        ["spdk-target", "install", "/tmp/a b;rm -rf /", "--version=2.0"]  # one argument stays one
    assert d.argv("exports") == ["spdk-target", "exports", "--node", "lab1"]
    assert d.versions().running == "2.0" and d.versions().installed is None
    assert d.is_ready() == "2.0"
    with pytest.raises(UsageError, match="no rollback command"):
        d.rollback("1.0", "/x")
    with pytest.raises(UsageError, match="no exports, restart"):
        CommandDriver("lab1", t, {"running_version": ("v",), "ready": ("r",)})
    failing = CommandDriver("lab1", Canned({}), cmds)
    assert failing.is_ready() is None  # a failing readiness command is "not ready"


def test_driver_for_the_inventory_spec() -> None:
    t = Canned({})
    assert isinstance(driver_for("lab1", t, TargetSpec("nvmet", {"port": 4421})), NvmetDriver)
    with pytest.raises(UsageError, match="no target in the inventory"):
        driver_for("lab1", t, None)


def _inv(tmp_path: Path, target: str) -> Path:
    p = tmp_path / "fleet.yaml"
    p.write_text(textwrap.dedent("""\
        all:
          hosts:
            n1:
              address: 10.0.0.1
              target:
        """) + textwrap.indent(textwrap.dedent(target), " " * 8))
    return p


def test_inventory_target_key(tmp_path: Path) -> None:
    inv = inventory.load(_inv(tmp_path, """\
        driver: nvmet
        port: 4421
        address: 10.77.0.11
        """))
    assert inv.hosts["n1"].target == TargetSpec("nvmet", {"port": 4421, "address": "10.77.0.11"})
    inv = inventory.load(_inv(tmp_path, """\
        driver: command
        running_version: [spdk-target, version]
        exports: [spdk-target, exports]
        restart: [spdk-target, install, '{path}']
        ready: [spdk-target, ready]
        """))
    assert inv.hosts["n1"].target.commands["restart"] == ("spdk-target", "install", "{path}")


@pytest.mark.parametrize("target,needle,message", [
    ("driver: spdk\n", "spdk", "driver must be one of nvmet, command, got 'spdk'"),
    ("port: 4420\n", "target:", "driver must be one of nvmet, command, got nothing"),
    ("driver: nvmet\nport: 70000\n", "70000", "port must be a TCP port"),
    ("driver: nvmet\nprot: 4420\n", "prot", "unknown setting 'prot'"),
    ("driver: nvmet\nservice: 'a b'\n", "service", "service must be a word"),
    ("driver: command\nrunning_version: 'spdk version'\n", "running",
     "a non-empty list of strings"),
    ("driver: command\nready: [x, '{versoin}']\n", "versoin", "unknown variable 'versoin'"),
    ("driver: command\nready: [x]\n", "target:", "needs running_version, exports, restart"),
])
def test_inventory_target_errors_name_file_and_line(tmp_path: Path, target: str, needle: str,
                                                    message: str) -> None:
    path = _inv(tmp_path, target)
    line = [i for i, t in enumerate(path.read_text().splitlines(), 1) if needle in t][0]
    with pytest.raises(InventoryError) as exc:
        inventory.load(path)
    assert f"fleet.yaml:{line}:" in str(exc.value)
    assert message in str(exc.value)


def test_the_kernel_targets_settings_are_the_inventorys_over_the_defaults() -> None:
    spec = TargetSpec("nvmet", {"port": 4421, "auth_dir": "/srv/keys"})
    got = spec.nvmet_settings()
    assert (got["port"], got["auth_dir"], got["nqn_prefix"]) == (
        4421, "/srv/keys", "nqn.2026-01.io.xfleet")
    assert NvmetDriver("n1", Canned({}), spec.settings).settings == got
    assert TargetSpec("nvmet").nvmet_settings()["auth_dir"] == "/etc/xfleet/dhchap"
