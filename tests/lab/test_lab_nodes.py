"""The lab itself: status, pinned SSH, the private node-to-node link, reset."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from xfleet.lab import kill_node, reset, ssh_argv, status
from xfleet.lab.qemu import pid_of

from .labkit import Lab, log

pytestmark = pytest.mark.lab


def test_status_reports_both_nodes_with_openzfs_2_3(lab: Lab) -> None:
    rows = {s.name: s for s in status(state_dir=lab.state_dir)}
    assert set(rows) == {"lab1", "lab2"}
    for s in rows.values():
        assert s.running and s.reachable, s
        assert s.pools == {"tank": "ONLINE"}
        assert s.zfs_version and s.zfs_version.startswith("zfs-2.3."), s.zfs_version


def test_ssh_argv_uses_the_pinned_key(lab: Lab, tmp_path: Path) -> None:
    argv = ssh_argv("lab1", state_dir=lab.state_dir)
    out = subprocess.run([*argv, "hostname"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "lab1", out.stderr

    # the same argv with a known_hosts file holding another key for lab1 is refused
    other = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    fake = tmp_path / "known_hosts"
    fake.write_text("lab1 " + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
    bad = [a.replace(str(lab.state.known_hosts), str(fake)) for a in argv]
    assert bad != argv
    out = subprocess.run([*bad, "hostname"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 255
    assert "host key" in out.stderr.lower() or "HOST IDENTIFICATION" in out.stderr


def test_private_link_between_nodes(lab: Lab) -> None:
    assert "10.77.0.11/24" in lab.run("lab1", ["ip", "-br", "addr", "show", "br0"]).stdout
    # ping until one answer (at most 60 s): the peer may still be bringing its link up
    lab.run("lab1", ["ping", "-c", "1", "-w", "60", "10.77.0.12"])
    lab.run("lab2", ["ping", "-c", "1", "-w", "60", "10.77.0.11"])


def test_reset_empties_the_pools_even_when_something_holds_them_busy(lab: Lab) -> None:
    lab.run("lab1", ["zfs", "create", "-s", "-V", "8M", "tank/to be gone"])
    # a process holding a zvol open keeps the pool busy: `zpool destroy -f` (or export) alone
    # would wait in the kernel until it lets go
    lab.run("lab2", ["zfs", "create", "-s", "-V", "8M", "tank/held"])
    lab.run("lab2", ["udevadm", "settle"])
    lab.run("lab2", ["sh", "-c", "nohup sh -c 'exec 3</dev/zvol/tank/held; exec sleep 600' "
                     ">/dev/null 2>&1 &"])
    lab.run("lab2", ["sh", "-c", "for i in $(seq 300); do find /proc/[0-9]*/fd -lname "
                     "'/dev/zd*' 2>/dev/null | grep -q . && exit 0; sleep 0.1; done; "
                     "echo 'no process holds a zvol open' >&2; exit 1"])
    t = time.monotonic()
    reset(state_dir=lab.state_dir)
    log(f"reset of both nodes, one held busy: {time.monotonic() - t:.1f}s")
    for node in ("lab1", "lab2"):
        names = lab.run(node, ["zfs", "list", "-H", "-o", "name", "-t", "all"]).stdout.split("\n")
        assert [n for n in names if n] == ["tank"]
        events = lab.run(node, ["zpool", "events", "-H", "-v"]).stdout
        assert "to be gone" not in events and "held" not in events  # the queue was cleared
    holders = lab.run("lab2", ["pgrep", "-f", "sleep 600"], check=False)
    assert not holders.stdout.strip(), f"the zvol holder survived the reset: {holders}"


def test_a_killed_node_comes_back_from_its_saved_boot(lab: Lab) -> None:
    # the session's first `up` either restored lab2 or booted it cold and saved it: after a
    # hard kill (disks discarded) the next `up` restores it in seconds, with its clock set to
    # now, its pinned host key, its pool, and its private link to lab1
    old_pid = pid_of(lab.state.node("lab2").dir(lab.state_dir))
    assert kill_node("lab2", state_dir=lab.state_dir)
    t = time.monotonic()
    lab.ensure_up()
    log(f"lab2 back in {time.monotonic() - t:.1f}s")
    rows = {s.name: s for s in status(state_dir=lab.state_dir)}
    st = rows["lab2"]
    assert st.running and st.reachable and st.pools == {"tank": "ONLINE"}, st
    assert st.boot_note and "restored from the boot saved" in st.boot_note, st
    assert pid_of(lab.state.node("lab2").dir(lab.state_dir)) not in (None, old_pid)
    guest = float(lab.run("lab2", ["date", "+%s.%N"]).stdout)
    assert abs(guest - time.time()) < 10, f"lab2's clock is {guest - time.time():+.0f}s off"
    assert lab.run("lab2", ["zfs", "list", "-H", "-o", "name"]).stdout.split() == ["tank"]
    lab.run("lab2", ["ping", "-c", "1", "-w", "60", "10.77.0.11"])


def test_a_power_cycled_node_comes_back_with_its_own_pool(lab: Lab) -> None:
    # a saved boot holds no data disk: after a power cut lab2 is restored with its own disk,
    # and its pool (same guid, synced data) is imported, never replaced by a new one, even
    # though the restored kernel had seen a blank disk there
    lab.run("lab2", ["sh", "-c", "zfs create -o xfleet:kept=yes tank/kept && zpool sync tank"])
    guid = lab.run("lab2", ["zpool", "get", "-Hp", "-o", "value", "guid", "tank"]).stdout
    t = time.monotonic()
    lab.power_cycle("lab2")
    log(f"lab2 power-cycled in {time.monotonic() - t:.1f}s")
    assert lab.run("lab2", ["zpool", "get", "-Hp", "-o", "value", "guid", "tank"]
                   ).stdout == guid
    # imported, not created (the restored kernel's random state is the saved one, so its
    # load_guid can repeat: the event says what happened)
    events = lab.run("lab2", ["zpool", "events", "-H"]).stdout
    assert "sysevent.fs.zfs.pool_import" in events and "pool_create" not in events, events
    assert lab.run("lab2", ["zfs", "get", "-H", "-o", "value", "xfleet:kept", "tank/kept"]
                   ).stdout.strip() == "yes"


def test_a_power_cycled_hub_restarts_its_peers_and_the_private_link_works(lab: Lab) -> None:
    # lab2 connects to lab1's private link once, when it starts: power-cycling lab1 (the hub)
    # restarts lab2 with it, or the link would stay dead
    lab2_pid = pid_of(lab.state.node("lab2").dir(lab.state_dir))
    lab.power_cycle("lab1")
    assert pid_of(lab.state.node("lab2").dir(lab.state_dir)) not in (None, lab2_pid)
    lab.run("lab1", ["ping", "-c", "1", "-w", "60", "10.77.0.12"])
    lab.run("lab2", ["ping", "-c", "1", "-w", "60", "10.77.0.11"])


def test_a_guest_hung_in_early_boot_is_booted_again_by_the_watchdog(
        lab: Lab, client: str) -> None:
    # the session booted the client with its first boot stalled (QEMU -S: not one byte on the
    # console, as the TCG hang looked): the watchdog killed it and the second boot came up
    rows = {s.name: s for s in status(state_dir=lab.state_dir)}
    st = rows[client]
    assert st.running and st.reachable, st
    assert st.boot_attempt == 2, st
    assert st.boot_note and "boot 1: no console output within" in st.boot_note, st
