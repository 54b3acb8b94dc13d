"""Every remote program (xfleet/remote/programs/), run here on its own as a node runs it.

The features' own tests run them too, with their parsers (test_estimate, test_initiator,
test_moves, test_target); these pin each program's contract: its arguments, its output, its
exit status. Programs that need a kernel device (nvme_fabrics_connect) are only compiled here;
the lab runs them for real (tests/lab/test_initiator_real.py)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import PATIENCE

from xfleet.remote import programs
from xfleet.remote.programs import Program, identify, program
from xfleet.sim import PROGRAMS

# each program -> the test below that runs it (a new program needs one)
TESTED = {
    "sample_blocks": "test_sample_blocks",
    "sample_hashes": "test_sample_hashes",
    "nvmet_exports": "test_nvmet_exports",
    "nvme_controllers": "test_nvme_controllers",
    "nvme_fabrics_connect": "test_nvme_fabrics_connect_compiles",
    "put_file": "test_put_file",
    "replica_cursor": "test_replica_cursor",
    "send_direct": "test_send_direct",
    "wait_device": "test_wait_device",
}


def _run(p: Program, *args: str, stdin: bytes | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    argv = p.argv(*args)
    if argv[0] == "python3":
        argv[0] = sys.executable
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=PATIENCE, env=env,
                          check=False)


def test_every_program_is_tested_here() -> None:
    assert sorted(TESTED) == programs.names()
    for name in TESTED.values():
        assert callable(globals()[name]), name


def test_argv_and_identify_round_trip() -> None:
    for name in programs.names():
        p = program(name)
        argv = p.argv("a", "b c")
        assert identify(argv) == (p, ["a", "b c"])
        assert argv[:2] == [p.interpreter, "-c"]
    assert identify(["python3", "-c", "print(1)"]) is None
    assert identify(["zfs", "list"]) is None


def test_sample_blocks(tmp_path: Path) -> None:
    bs = 4096
    dev = tmp_path / "vol"
    dev.write_bytes(bytes(bs) + b"x" * bs + b"y" * bs)
    out = _run(program("sample_blocks"), str(bs), "1", str(dev), "0", str(bs), str(2 * bs))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert [ln.split()[:2] for ln in lines] == [["Z", "0"], ["D", str(bs)]]  # stops at WANT
    missing = _run(program("sample_blocks"), str(bs), "1", str(tmp_path / "none"), "0")
    assert missing.returncode == 2 and b"cannot open" in missing.stderr


def test_sample_hashes(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(2 * 2**20 + 100)
    dev = tmp_path / "vol"
    dev.write_bytes(data)
    out = _run(program("sample_hashes"), str(dev), "1", "2", "7")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == [
        f"{hashlib.sha256(data[o << 20:(o + 1) << 20]).hexdigest()} {o}" for o in (1, 2, 7)]


def test_nvmet_exports(tmp_path: Path) -> None:
    ns = tmp_path / "subsystems" / "nqn.x:n1:tank.v" / "namespaces" / "1"
    ns.mkdir(parents=True)
    for k, v in {"device_path": "/dev/zvol/tank/v", "device_uuid": "u-1",
                 "device_nguid": "g-1", "enable": "1"}.items():
        (ns / k).write_text(v + "\n")
    (ns.parent / "2").mkdir()  # a namespace being set up: nothing readable yet
    out = _run(program("nvmet_exports"), str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == [
        "nqn.x:n1:tank.v\t1\t/dev/zvol/tank/v\tu-1\tg-1\t1", "nqn.x:n1:tank.v\t2\t\t\t\t"]
    empty = _run(program("nvmet_exports"), str(tmp_path / "none"))
    assert (empty.returncode, empty.stdout) == (0, b"")


def test_nvme_controllers(tmp_path: Path) -> None:
    ctrl = tmp_path / "class" / "nvme" / "nvme0"
    ctrl.mkdir(parents=True)
    (ctrl / "state").write_text("live\n")
    (ctrl / "nvme0n1").mkdir()
    (ctrl / "nvme0n1" / "nsid").write_text("1\n")
    out = _run(program("nvme_controllers"), str(tmp_path))
    assert out.returncode == 0, out.stderr
    (c,) = json.loads(out.stdout)["controllers"]
    assert (c["name"], c["state"], c["subsysnqn"], c["subsystem"]) == ("nvme0", "live", None, None)
    assert [(n["device"], n["nsid"], n["uuid"]) for n in c["namespaces"]] == \
        [("nvme0n1", "1", None)]


def test_nvme_fabrics_connect_compiles() -> None:
    """It writes /dev/nvme-fabrics, which only an initiator has: compiled here, run in the lab."""
    compile(program("nvme_fabrics_connect").text, "nvme_fabrics_connect.py", "exec")


def test_put_file(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b" / "pkg.deb"
    out = _run(program("put_file"), str(dest), stdin=b"\x00payload\xff")
    assert out.returncode == 0, out.stderr
    assert dest.read_bytes() == b"\x00payload\xff"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["pkg.deb"]  # no .part left


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.mark.parametrize("send_status", [0, 3])
def test_send_direct(tmp_path: Path, send_status: int) -> None:
    """The plumbing around `zfs send | ssh DEST RECEIVE` (stand-ins for both commands, so no
    ZFS behaviour is claimed): send's progress (stderr) comes back on stdout, the stream goes
    to ssh's stdin, and a failed send fails the whole pipeline (pipefail)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    got = tmp_path / "received"
    _stub(bin_dir, "zfs", f'echo "progress $*" >&2\nprintf stream\nexit {send_status}\n')
    _stub(bin_dir, "ssh", f'cat > {got}\necho "ssh $*" >> {got}.argv\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = _run(program("send_direct"), "root@n2", "zfs receive -s tank/v", "tank/v@s1", env=env)
    assert out.returncode == send_status, out.stderr
    assert out.stdout.decode() == "progress send -v -P tank/v@s1\n"
    assert got.read_text() == "stream"
    assert (tmp_path / "received.argv").read_text().split()[-5:] == \
        ["root@n2", "zfs", "receive", "-s", "tank/v"]


def test_replica_cursor(tmp_path: Path) -> None:
    """The order of a cursor's advance (a stand-in `zfs` that logs its arguments, so no ZFS
    behaviour is claimed; the simulator and the lab run it against zfs): the new bases are
    held in one command and bookmarked before the old ones are released and their bookmarks
    destroyed; a retried run's "tag already exists" and "bookmark exists" are success; a
    failed hold changes nothing else and exits 1."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _stub(bin_dir, "zfs", f'printf "%s|" "$@" >> {calls}\necho >> {calls}\n'
          'case "$1" in bookmark) echo "cannot create bookmark: bookmark exists" >&2; exit 1;; '
          'hold) [ -e ' + str(tmp_path / "nohold") + ' ] && { echo "cannot hold: no such '
          'pool" >&2; exit 1; };; esac\nexit 0\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    p = program("replica_cursor")
    out = _run(p, "xfleet-replica-7", "tank/a b", "s2", "s1", "tank/c", "s9", "", env=env)
    assert out.returncode == 0, out.stderr
    assert calls.read_text().splitlines() == [
        "hold|xfleet-replica-7|tank/a b@s2|tank/c@s9|",
        "bookmark|tank/a b@s2|tank/a b#xfleet-replica-7_s2|",
        "bookmark|tank/c@s9|tank/c#xfleet-replica-7_s9|",
        "release|xfleet-replica-7|tank/a b@s1|",
        "destroy|tank/a b#xfleet-replica-7_s1|"]
    steps = [line.split("\t")[:2] for line in out.stdout.decode().splitlines()]
    assert steps == [["hold", "OK"], ["bookmark", "OK"], ["bookmark", "OK"],
                     ["release", "OK"], ["destroy", "OK"]]
    calls.unlink()
    (tmp_path / "nohold").write_text("")
    out = _run(p, "xfleet-replica-7", "tank/c", "s10", "s9", env=env)
    assert out.returncode == 1
    assert calls.read_text().splitlines() == ["hold|xfleet-replica-7|tank/c@s10|"]
    assert out.stdout.decode().startswith("hold\tERR\t")


def test_wait_device(tmp_path: Path) -> None:
    dev = tmp_path / "zd0"
    p = program("wait_device")
    argv = p.argv(str(dev))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    created = threading.Event()

    def create() -> None:  # appears while the program polls (udev is asynchronous)
        dev.write_text("")
        created.set()

    threading.Thread(target=create).start()
    assert proc.wait(timeout=PATIENCE) == 0 and created.is_set()
    assert _run(p, str(dev)).returncode == 0


def test_every_program_is_simulated_or_says_why_not() -> None:
    for name in programs.names():
        if name not in PROGRAMS:
            assert "Not on the simulator:" in program(name).text, name
