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
    "assign_uuids": "test_assign_uuids",
    "sample_blocks": "test_sample_blocks",
    "sample_hashes": "test_sample_hashes",
    "nvmet_auth": "test_nvmet_auth",
    "nvmet_exports": "test_nvmet_exports",
    "nvmet_hosts": "test_nvmet_hosts",
    "nvmet_live": "test_nvmet_live",
    "zvol_hosts": "test_zvol_hosts",
    "nvme_controllers": "test_nvme_controllers",
    "nvme_dhchap": "test_nvme_dhchap",
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
    (ns.parent.parent / "attr_allow_any_host").write_text("0\n")
    (ns.parent.parent / "allowed_hosts").mkdir()
    for h in ("nqn.h2", "nqn.h1"):
        (ns.parent.parent / "allowed_hosts" / h).symlink_to(tmp_path)
    out = _run(program("nvmet_exports"), str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == [
        "nqn.x:n1:tank.v\t1\t/dev/zvol/tank/v\tu-1\tg-1\t1\t0\tnqn.h1,nqn.h2",
        "nqn.x:n1:tank.v\t2\t\t\t\t\t0\tnqn.h1,nqn.h2"]
    empty = _run(program("nvmet_exports"), str(tmp_path / "none"))
    assert (empty.returncode, empty.stdout) == (0, b"")


def _subsystem(root: Path, nqn: str, *hosts: str) -> Path:
    """A configfs-like subsystem linked to port 1 (plain files and symlinks: the kernel's
    refusals are the lab's to show, tests/lab/test_access_real.py)."""
    sub = root / "subsystems" / nqn
    (sub / "allowed_hosts").mkdir(parents=True)
    (sub / "attr_allow_any_host").write_text("1\n")
    (root / "ports" / "1" / "subsystems").mkdir(parents=True, exist_ok=True)
    (root / "ports" / "1" / "subsystems" / nqn).symlink_to(f"../../../subsystems/{nqn}")
    for h in hosts:
        (root / "hosts" / h).mkdir(parents=True, exist_ok=True)
        (sub / "allowed_hosts" / h).symlink_to(root / "hosts" / h)
    return sub


def test_nvmet_hosts(tmp_path: Path) -> None:
    """Each subsystem ends with exactly its hosts and attr_allow_any_host 0; a subsystem that
    lost a host has its port link re-made (the kernel drops its controllers then); an unknown
    subsystem is its line's error; a malformed line changes nothing."""
    a = _subsystem(tmp_path, "nqn.s:a")
    b = _subsystem(tmp_path, "nqn.s:b", "nqn.h1", "nqn.h2")
    link = tmp_path / "ports" / "1" / "subsystems" / "nqn.s:b"
    p = program("nvmet_hosts")
    out = _run(p, str(tmp_path), stdin=b"nqn.s:a\tnqn.h1,nqn.h3\nnqn.s:b\tnqn.h2\n"
               b"nqn.s:gone\tnqn.h1\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == [
        "nqn.s:a\tOK\t+2 -0", "nqn.s:b\tOK\t+0 -1",
        "nqn.s:gone\tERR\tno such subsystem"]
    assert sorted(x.name for x in (a / "allowed_hosts").iterdir()) == ["nqn.h1", "nqn.h3"]
    assert sorted(x.name for x in (b / "allowed_hosts").iterdir()) == ["nqn.h2"]
    assert (a / "attr_allow_any_host").read_text() == (b / "attr_allow_any_host").read_text() \
        == "0"
    assert os.readlink(a / "allowed_hosts" / "nqn.h3") == str(tmp_path / "hosts" / "nqn.h3")
    assert os.readlink(link) == str(b)  # re-made (it was relative)
    assert os.readlink(tmp_path / "ports" / "1" / "subsystems" / "nqn.s:a") == \
        "../../../subsystems/nqn.s:a"  # no host removed: untouched
    assert (tmp_path / "hosts" / "nqn.h1").is_dir()  # host entries stay
    out = _run(p, str(tmp_path), stdin=b"nqn.s:a\t\nbad line\n")
    assert (out.returncode, out.stdout) == (2, b"")
    assert b"line 2: expected NQN<TAB>HOSTS" in out.stderr
    assert len(list((a / "allowed_hosts").iterdir())) == 2  # nothing changed
    out = _run(p, str(tmp_path), stdin=b"nqn.s:a\t\n")  # no host at all
    assert out.stdout == b"nqn.s:a\tOK\t+0 -2\n"
    assert list((a / "allowed_hosts").iterdir()) == []


def test_nvmet_auth(tmp_path: Path) -> None:
    """set writes a host's dhchap_key when it differs and keeps it in AUTH_DIR (0700, files
    0600); a second set is `unchanged`; check says match, differs or none and changes
    nothing; no secret is ever printed; a malformed line changes nothing (exit 2); a target
    whose host entries have no dhchap_key (a kernel without DH-CHAP) is exit 3, one without
    the nvmet module loaded exit 4. A host entry
    the program makes itself gets its attribute files from configfs alone: the lab runs that
    (tests/lab/test_auth_real.py)."""
    p = program("nvmet_auth")
    one, two = "DHHC-1:00:" + "A" * 44 + ":", "DHHC-1:01:" + "B" * 44 + ":"
    for h in ("nqn.h1", "nqn.h2"):
        (tmp_path / "hosts" / h).mkdir(parents=True)
        (tmp_path / "hosts" / h / "dhchap_key").write_text("\n")
    keys = tmp_path / "keys"
    stdin = f"nqn.h1\t{one}\nnqn.h2\t{two}\n".encode()
    out = _run(p, "set", str(tmp_path), str(keys), stdin=stdin)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == ["nqn.h1\tOK\tchanged", "nqn.h2\tOK\tchanged"]
    assert (tmp_path / "hosts" / "nqn.h1" / "dhchap_key").read_text() == one
    assert (keys / "nqn.h2").read_text() == two + "\n"
    assert keys.stat().st_mode & 0o777 == 0o700
    assert (keys / "nqn.h1").stat().st_mode & 0o777 == 0o600
    out = _run(p, "set", str(tmp_path), str(keys), stdin=stdin)
    assert out.stdout.decode().splitlines() == ["nqn.h1\tOK\tunchanged",
                                                "nqn.h2\tOK\tunchanged"]
    (tmp_path / "hosts" / "nqn.h3").mkdir()
    (tmp_path / "hosts" / "nqn.h3" / "dhchap_key").write_text("\n")
    check = f"nqn.h1\t{one}\nnqn.h2\t{one}\nnqn.h3\t{one}\n".encode()
    out = _run(p, "check", str(tmp_path), str(keys), stdin=check)
    assert out.stdout.decode().splitlines() == [
        "nqn.h1\tOK\tmatch", "nqn.h2\tOK\tdiffers", "nqn.h3\tOK\tnone"]
    assert (tmp_path / "hosts" / "nqn.h2" / "dhchap_key").read_text() == two  # unchanged
    for bad in (b"nqn.h1\tnot-a-secret\n", b"nqn.h1\n", b"../x\t" + one.encode() + b"\n"):
        out = _run(p, "set", str(tmp_path), str(keys), stdin=f"nqn.h2\t{one}\n".encode() + bad)
        assert (out.returncode, out.stdout) == (2, b""), out
        assert (tmp_path / "hosts" / "nqn.h2" / "dhchap_key").read_text() == two
    old = tmp_path / "old"
    (old / "hosts" / "nqn.h1").mkdir(parents=True)  # a 6.1 kernel: no dhchap_key
    out = _run(p, "set", str(old), str(keys), stdin=f"nqn.h1\t{one}\n".encode())
    assert out.returncode == 3 and b"CONFIG_NVME_TARGET_AUTH" in out.stderr, out
    assert one.encode() not in out.stdout + out.stderr
    for mode in ("set", "check"):  # no nvmet module: nothing to write to, said so
        out = _run(p, mode, str(tmp_path / "absent"), str(keys), stdin=f"nqn.h1\t{one}\n".encode())
        assert out.returncode == 4 and b"not loaded" in out.stderr, out
    assert not (tmp_path / "absent").exists()


def test_nvmet_live(tmp_path: Path) -> None:
    """isolate gives the source's namespace its own optimized group and keeps its controller
    ids in the lower half; export makes the copy's subsystem (same identity, only the given
    hosts, the other ids, a new group in the given state) on the port at the address, and
    keeps it on a second call; ana changes only the volume's group and refuses group 1; a
    subsystem of another device is refused (exit 4), a missing one is exit 3. settle and
    withdraw remove configfs directories, which only the kernel allows with their attribute
    files in them: the lab runs them (tests/lab/test_live_cutover_real.py)."""
    p = program("nvmet_live")
    nqn = "nqn.2026-01.io.xfleet:vol:7b0e3c1a-2f4d-4c6b-9a8e-1d2c3b4a5f60"
    sub = _subsystem(tmp_path, nqn)
    ns = sub / "namespaces" / "1"
    ns.mkdir(parents=True)
    (ns / "device_path").write_text("/dev/zvol/tank/v\n")
    (ns / "enable").write_text("1\n")
    (sub / "attr_serial").write_text("7b0e3c1a5f60\n")
    port = tmp_path / "ports" / "1"
    (port / "addr_traddr").write_text("10.0.0.1\n")
    (port / "addr_trsvcid").write_text("4420\n")
    (port / "ana_groups" / "1").mkdir(parents=True)
    (port / "ana_groups" / "2").mkdir()  # another volume's cutover holds group 2

    out = _run(p, str(tmp_path), "isolate", nqn, "/dev/zvol/tank/v")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split() == ["group=3", "serial=7b0e3c1a5f60", "cntlid_min=1",
                                           "address=10.0.0.1", "port=4420"]
    assert (ns / "ana_grpid").read_text() == "3"
    assert (port / "ana_groups" / "3" / "ana_state").read_text() == "optimized"
    assert (sub / "attr_cntlid_max").read_text() == "32767"
    again = _run(p, str(tmp_path), "isolate", nqn, "/dev/zvol/tank/v")
    assert again.stdout.split()[0] == b"group=3"  # kept: a resumed move changes nothing

    out = _run(p, str(tmp_path), "isolate", nqn, "/dev/zvol/tank/other")
    assert out.returncode == 4 and b"already exports /dev/zvol/tank/v" in out.stderr
    out = _run(p, str(tmp_path), "isolate", "nqn.2026-01.io.xfleet:vol:nope", "/dev/x")
    assert out.returncode == 3 and b"no subsystem" in out.stderr

    out = _run(p, str(tmp_path), "ana", nqn, "inaccessible")
    assert (out.returncode, out.stdout) == (0, b"group=3\n"), out.stderr
    assert (port / "ana_groups" / "3" / "ana_state").read_text() == "inaccessible"
    assert not (port / "ana_groups" / "1" / "ana_state").exists()  # the others' group
    assert _run(p, str(tmp_path), "ana", nqn, "bogus").returncode == 2

    # the copy, on "another node" (its own configfs tree)
    other = tmp_path / "n2"
    args = ["export", nqn, "/dev/zvol/tank2/v", "7b0e3c1a-2f4d-4c6b-9a8e-1d2c3b4a5f60",
            "0d5b4c7e-0000-5000-8000-000000000001", "7b0e3c1a5f60", "32768", "65519",
            "10.0.0.2", "4420", "inaccessible"]
    out = _run(p, str(other), *args, stdin=b"nqn.h1,nqn.h2")
    assert (out.returncode, out.stdout) == (0, b"group=2 port=1\n"), out.stderr
    copy = other / "subsystems" / nqn
    cns = copy / "namespaces" / "1"
    assert {f: (copy / f).read_text() for f in ("attr_allow_any_host", "attr_cntlid_min",
                                                "attr_cntlid_max", "attr_serial")} == {
        "attr_allow_any_host": "0", "attr_cntlid_min": "32768", "attr_cntlid_max": "65519",
        "attr_serial": "7b0e3c1a5f60"}
    assert sorted(x.name for x in (copy / "allowed_hosts").iterdir()) == ["nqn.h1", "nqn.h2"]
    assert (cns / "device_path").read_text() == "/dev/zvol/tank2/v"
    assert (cns / "device_uuid").read_text() == "7b0e3c1a-2f4d-4c6b-9a8e-1d2c3b4a5f60"
    assert (cns / "ana_grpid").read_text() == "2"
    assert (cns / "enable").read_text() == "1"
    assert (other / "ports" / "1" / "addr_traddr").read_text() == "10.0.0.2"
    assert (other / "ports" / "1" / "ana_groups" / "2" / "ana_state").read_text() == \
        "inaccessible"
    assert os.readlink(other / "ports" / "1" / "subsystems" / nqn) == str(copy)
    out = _run(p, str(other), *args, stdin=b"nqn.h1")  # resumed: kept as it is
    assert (out.returncode, out.stdout) == (0, b"group=2 port=1\n"), out.stderr
    assert len(list((copy / "allowed_hosts").iterdir())) == 2
    out = _run(p, str(other), "export", nqn, "/dev/x")
    assert out.returncode == 2 and b"export: expected" in out.stderr
    out = _run(p, str(other), "withdraw", "nqn.2026-01.io.xfleet:vol:nope")
    assert (out.returncode, out.stdout) == (0, b"absent\n"), out.stderr
    out = _run(p, str(other), "frobnicate", nqn)
    assert out.returncode == 2 and b"unknown operation" in out.stderr
    assert _run(p, str(other), "ana", "not-an-nqn", "optimized").returncode == 2


def test_zvol_hosts(tmp_path: Path) -> None:
    """Volumes of one value go in one `zfs set` (a stand-in `zfs` that logs its arguments:
    no ZFS behaviour is claimed; the simulator and the lab run it against zfs); a chunk that
    fails is retried one by one, and only the failing volume is reported."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _stub(bin_dir, "zfs", f'printf "%s|" "$@" >> {calls}\necho >> {calls}\n'
          'for a in "$@"; do [ "$a" = "tank/gone" ] && { echo "cannot open '
          "'tank/gone': dataset does not exist\" >&2; exit 1; }; done\nexit 0\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    p = program("zvol_hosts")
    out = _run(p, "xfleet:hosts", stdin=b"tank/a b\tnqn.h1\ntank/c\tnone\ntank/gone\tnqn.h1\n"
               b"tank/d\tnqn.h1\n", env=env)
    assert out.returncode == 0, out.stderr
    assert calls.read_text().splitlines() == [
        "set|xfleet:hosts=nqn.h1|tank/a b|tank/gone|tank/d|",
        "set|xfleet:hosts=nqn.h1|tank/a b|", "set|xfleet:hosts=nqn.h1|tank/gone|",
        "set|xfleet:hosts=nqn.h1|tank/d|", "set|xfleet:hosts=none|tank/c|"]
    assert out.stdout.decode().splitlines() == [
        "ERR\ttank/gone\tcannot open 'tank/gone': dataset does not exist", "OK\t3"]
    bad = _run(p, "xfleet:hosts", stdin=b"tank/a\n", env=env)
    assert bad.returncode == 2 and b"line 1: expected VOLUME<TAB>VALUE" in bad.stderr


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
    assert c["dhchap"] is None  # a kernel without DH-CHAP
    secret = "DHHC-1:00:" + "Q" * 44 + ":"
    for text, want in (("none\n", "none"), (secret + "\n", "set")):
        (ctrl / "dhchap_secret").write_text(text)
        out = _run(program("nvme_controllers"), str(tmp_path))
        assert json.loads(out.stdout)["controllers"][0]["dhchap"] == want
        assert secret.encode() not in out.stdout


def test_nvme_dhchap(tmp_path: Path) -> None:
    """A controller's dhchap_secret is written when it differs (changed, then unchanged); one
    connected without a secret, or gone, is its line's error; the secret is never printed;
    bad arguments and a secret that is not DHHC-1 fail with what was wrong (exit 1)."""
    p = program("nvme_dhchap")
    old, new = "DHHC-1:00:" + "A" * 44 + ":", "DHHC-1:00:" + "B" * 44 + ":"
    for name, text in (("nvme0", old), ("nvme1", "none")):
        (tmp_path / "class" / "nvme" / name).mkdir(parents=True)
        (tmp_path / "class" / "nvme" / name / "dhchap_secret").write_text(text + "\n")
    args = ("--sysfs", str(tmp_path), "nvme0", "nvme1", "nvme7")
    out = _run(p, *args, stdin=new.encode() + b"\n")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[0] == "nvme0\tOK\tchanged"
    assert lines[1].startswith("nvme1\tERR\tconnected without a DH-CHAP secret")
    assert lines[2].startswith("nvme7\tERR\tno such controller")
    assert (tmp_path / "class" / "nvme" / "nvme0" / "dhchap_secret").read_text() == new
    again = _run(p, *args[:3], stdin=new.encode())
    assert again.stdout == b"nvme0\tOK\tunchanged\n"
    bad = [_run(p, "--sysfs", str(tmp_path), "x0", stdin=new.encode()),
           _run(p, "--sysfs", str(tmp_path), "nvme0", stdin=b"plain")]
    assert [r.returncode for r in bad] == [1, 1] and b"usage" in bad[0].stderr
    assert b"not a DHHC-1 secret" in bad[1].stderr
    for r in (out, again, *bad):
        assert new.encode() not in r.stdout + r.stderr and old.encode() not in r.stdout


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


def test_assign_uuids(tmp_path: Path) -> None:
    """What the program decides from `zfs get` (a stand-in `zfs` answering from a table and
    logging every `zfs set`, so no ZFS behaviour is claimed; the simulator and tests/unit/ops/
    test_identity.py run it against zfs): a UUID is set only on the volume with the guid the
    mirror saw and no local value; an inherited value does not count; a malformed line
    changes nothing and exits 2."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sets = tmp_path / "sets"
    table = ("tank/a b\tguid\t11\t-\n"
             "tank/a b\txfleet:uuid\t-\t-\n"
             "tank/had\tguid\t12\t-\n"
             "tank/had\txfleet:uuid\tu-had\tlocal\n"
             "tank/inh\tguid\t13\t-\n"
             "tank/inh\txfleet:uuid\tu-parent\tinherited from tank\n"
             "tank/new\tguid\t99\t-\n")
    _stub(bin_dir, "zfs", f'case "$1" in get) printf "{table}";; '
          f'set) printf "%s|" "$@" >> {sets}; echo >> {sets};; esac\nexit 0\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    p = program("assign_uuids")
    lines = "tank/a b\t11\tu1\ntank/had\t12\tu2\ntank/inh\t13\tu3\ntank/new\t14\tu4\n" \
        "tank/gone\t15\tu5\n"
    out = _run(p, "xfleet:uuid", stdin=lines.encode(), env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == [
        "tank/a b\tset\tu1", "tank/had\thad\tu-had", "tank/inh\tset\tu3",
        "tank/new\tgone\t", "tank/gone\tgone\t"]
    assert sets.read_text().splitlines() == ["set|xfleet:uuid=u1|tank/a b|",
                                             "set|xfleet:uuid=u3|tank/inh|"]
    sets.unlink()
    out = _run(p, "xfleet:uuid", stdin=b"tank/a\tnot-a-guid\tu1\n", env=env)
    assert out.returncode == 2 and b"malformed line 1" in out.stderr and not sets.exists()


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


def test_answers_reads_the_per_item_lines_of_the_batch_programs() -> None:
    text = ("nqn.a\tOK\t+1 -0\nnoise\nnqn.b\tERR\tno such subsystem\tat all\nnvme3\tOK\n"
            "nqn.c\tMAYBE\tx\n")
    assert programs.answers(text) == {"nqn.a": (True, "+1 -0"),
                                      "nqn.b": (False, "no such subsystem\tat all"),
                                      "nvme3": (True, "")}
