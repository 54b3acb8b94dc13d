"""Volume moves between the two lab nodes, on real OpenZFS over real SSH: the happy path and
the faults of issue 6 (a cut stream, xfleet killed, a name taken, the target out of space, the
source written while it is copied). Data is compared by hashing both volumes."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for as shared_wait_for

from xfleet.core.identity import UUID_PROPERTY, valid_volume_uuid
from xfleet.ops import moves

from .labkit import TENANT, Lab, log

pytestmark = pytest.mark.lab

SRC, DST = "lab1", "lab2"


def sha(lab: Lab, node: str, volume: str) -> str:
    """The sha256 of zvol `volume` on `node` (after udev has settled: one round trip)."""
    return lab.run(node, ["sh", "-c", 'udevadm settle && sha256sum "/dev/zvol/$1"', "sh",
                          volume], timeout=600).stdout.split()[0]


# make_volume's remote half: one round trip per volume (each command costs ~0.3-0.8 s of
# SSH and guest CPU under TCG, so the 7-9 commands it used to be cost seconds per volume)
MAKE_VOLUME = """set -e
name=$1 mb=$2 snapshots=$3 tenant=$4
zfs create -p -s -V "${mb}M" -o compression=lz4 -o "$tenant=mover" "$name"
udevadm settle
chunk=$((mb / 4)); [ "$chunk" -gt 8 ] && chunk=8
i=0
while [ "$i" -lt "$snapshots" ]; do
  dd if=/dev/urandom of="/dev/zvol/$name" bs=1M count="$chunk" seek=$((i * chunk)) \
    oflag=direct conv=notrunc status=none
  zfs snapshot "$name@s$i"
  i=$((i + 1))
done
yes "text line for compression $name" | head -c $((mb / 4 * 1048576)) |
  dd of="/dev/zvol/$name" bs=1M seek=$((mb / 2)) oflag=direct conv=notrunc status=none
"""


def make_volume(lab: Lab, name: str, mb: int = 32, snapshots: int = 2) -> None:
    """A sparse lz4 volume of `mb` MiB: random data under each of `snapshots` snapshots and
    compressible text in its second half. Kept small: under TCG a lab node streams ~2 MB/s
    and hashes ~8 MB/s, so every MiB here costs the suite about a second per move."""
    lab.run(SRC, ["sh", "-c", MAKE_VOLUME, "sh", name, str(mb), str(snapshots), TENANT])


def sync(lab: Lab, db: Path) -> None:
    res = lab.xfleet("sync", "--json", mirror=db)
    assert res.code == 0, res.explain()


def move_row(db: Path, move_id: int) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return dict(conn.execute("SELECT * FROM moves WHERE id = ?", (move_id,)).fetchone())
    finally:
        conn.close()


def wait_for(pred: Callable[[], object], what: str, timeout: float = 180) -> None:
    """The suite's `wait_for`, polling the mirror and the nodes at a lab's pace."""
    shared_wait_for(pred, what, timeout=timeout, interval=0.2)


@pytest.fixture(scope="module")
def db(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("moves") / "lab.db"
    sync(lab, path)
    return path


def test_a_fresh_pool_reports_the_features_the_simulator_claims(lab: Lab) -> None:
    features = ",".join(f"feature@{f}" for f in moves.FEATURES)
    out = lab.run(DST, ["zpool", "get", "-H", "-o", "property,value", features, "tank"]).stdout
    fixture = Path(__file__).parents[1] / "fixtures" / "real" / "zpool_get_features.txt"
    assert out == fixture.read_text()


def inventory_with(lab: Lab, tmp: Path, node: str, **keys: str) -> Path:
    """A copy of the lab inventory with `keys` (YAML values) set on one host."""
    lines = lab.inventory.read_text().splitlines()
    start = lines.index(f"    {node}:") + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("      ")),
               len(lines))
    block = [ln for ln in lines[start:end] if ln.split(":")[0].strip() not in keys]
    block += [f"      {k}: {v}" for k, v in keys.items()]
    path = tmp / "inventory.yaml"
    path.write_text("\n".join(lines[:start] + block + lines[end:]) + "\n")
    return path


def test_move_copies_chain_properties_and_data_then_retires_the_source(
        lab: Lab, db: Path) -> None:
    vol = "tank/m/happy"
    make_volume(lab, vol)
    sync(lab, db)
    before = sha(lab, SRC, vol)
    dry = lab.xfleet("move", vol, "--to", DST, "--dry-run", mirror=db)
    assert dry.code == 0 and "zfs receive -s -u" in dry.out and "-L -c" in dry.out, dry.explain()
    res = lab.xfleet("move", vol, "--to", DST, "--json", mirror=db)
    assert res.code == 0, res.explain()
    m = res.json()
    assert m["state"] == "done" and m["verified"], m
    assert sha(lab, DST, vol) == before
    props = lab.run(DST, ["zfs", "get", "-H", "-o", "property,value",
                          f"compression,{TENANT},volmode,readonly", vol]).stdout
    assert "compression\tlz4" in props and f"{TENANT}\tmover" in props
    assert "volmode\tdefault" in props
    # the volume got its UUID when the move first touched it, and the copy has the same one
    # (received with -o): the NVMe identity derived from it is the same on both nodes
    got = {n: lab.run(n, ["zfs", "get", "-H", "-o", "value,source", UUID_PROPERTY, v]).stdout
           .split() for n, v in ((DST, vol), (SRC, m["retired_as"]))}
    assert valid_volume_uuid(got[DST][0]) and got[DST][0] == got[SRC][0], got
    assert got[SRC][1] == "local" and got[DST][1] in ("local", "received"), got
    snaps = lab.run(DST, ["zfs", "list", "-H", "-o", "name", "-t", "snapshot", vol]).stdout
    assert f"{vol}@s0" in snaps and f"{vol}@s1" in snaps  # the chain came along
    assert f"xfleet-move-{m['id']}-final" in snaps and "-0\n" not in snaps
    retired = m["retired_as"]
    assert lab.run(SRC, ["zfs", "get", "-H", "-o", "value", "readonly", retired]
                   ).stdout.strip() == "on"
    assert f"xfleet-move-{m['id']}" in lab.run(
        SRC, ["zfs", "holds", "-H", f"{retired}@xfleet-move-{m['id']}-final"]).stdout
    conn = sqlite3.connect(db)
    where = {r[0]: r[1] for r in conn.execute(
        "SELECT node, name FROM datasets WHERE name IN (?, ?)", (vol, retired))}
    assert where == {DST: vol, SRC: retired}, where
    show = lab.xfleet("moves", "show", str(m["id"]), mirror=db)
    assert "verified" in show.out and "done" in show.out
    # destroying the retired source needs --destroy and a confirmation
    res = lab.xfleet("moves", "retire", str(m["id"]), "--destroy", mirror=db)
    assert res.code != 0 and "confirmation" in res.err, res.explain()
    res = lab.xfleet("moves", "retire", str(m["id"]), "--destroy", "--yes", mirror=db)
    assert res.code == 0, res.explain()
    assert not lab.run(SRC, ["zfs", "list", retired], check=False).ok


def test_refusals_are_clear(lab: Lab, db: Path) -> None:
    vol = "tank/m/taken"
    make_volume(lab, vol, mb=16, snapshots=1)
    lab.run(DST, ["zfs", "create", "-p", "-s", "-V", "16M", vol])
    lab.run(SRC, ["zfs", "clone", f"{vol}@s0", "tank/m/taken-branch"])
    sync(lab, db)
    res = lab.xfleet("move", vol, "--to", DST, mirror=db)
    assert res.code == 1 and "several nodes" in res.err and "--from" in res.err, res.explain()
    res = lab.xfleet("move", vol, "--from", SRC, "--to", DST, mirror=db)
    assert res.code == 1 and "Traceback" not in res.err, res.explain()
    assert "clone" in res.err  # never orphan a clone
    lab.run(SRC, ["zfs", "destroy", "tank/m/taken-branch"])
    sync(lab, db)
    res = lab.xfleet("move", vol, "--from", SRC, "--to", DST, mirror=db)
    assert res.code == 1 and "already has a volume named" in res.err and "-F" in res.err


def test_a_cut_stream_resumes_from_the_receive_token(lab: Lab, db: Path) -> None:
    vol = "tank/m/cut"
    make_volume(lab, vol, mb=16, snapshots=0)
    lab.write_random(SRC, vol, 8)
    sync(lab, db)
    before = sha(lab, SRC, vol)
    with lab.running_xfleet("move", vol, "--to", DST, "--bwlimit", "1M", "--json",
                            mirror=db) as proc:
        wait_for(lambda: _bytes(db, vol) > 3 * 2**20, "the base copy to be under way")
        lab.run(DST, ["pkill", "-f", "zfs receive"])  # cut the stream on the receiving side
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    m = json.loads(out)
    assert m["state"] == "done"
    log_text = lab.xfleet("moves", "show", str(m["id"]), mirror=db).out
    assert "resuming" in log_text, log_text
    assert sha(lab, DST, vol) == before


def _bytes(db: Path, volume: str) -> int:
    """Bytes sent so far by the newest move of `volume`."""
    conn = sqlite3.connect(db)
    try:
        r = conn.execute("SELECT bytes_done FROM moves WHERE volume = ? ORDER BY id DESC "
                         "LIMIT 1", (volume,)).fetchone()
        return int(r[0]) if r else 0
    finally:
        conn.close()


def _last_id(db: Path, volume: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT max(id) FROM moves WHERE volume = ?",
                                (volume,)).fetchone()[0])
    finally:
        conn.close()


def test_xfleet_killed_mid_copy_resumes(lab: Lab, db: Path) -> None:
    vol = "tank/m/killed"
    make_volume(lab, vol, mb=16, snapshots=1)
    lab.write_random(SRC, vol, 8, seek_mb=4)
    sync(lab, db)
    before = sha(lab, SRC, vol)
    with lab.running_xfleet("move", vol, "--to", DST, "--bwlimit", "1M", "--json",
                            mirror=db) as proc:
        wait_for(lambda: _bytes(db, vol) > 5 * 2**20, "the copy to be under way")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    move_id = _last_id(db, vol)
    assert move_row(db, move_id)["state"] in ("base", "catchup")
    wait_for(lambda: not lab.run(DST, ["pgrep", "-f", f"zfs receive .*{vol}"],
                                 check=False).stdout.strip(),
             "the target's receive to notice the closed connection (it keeps its token)")
    res = lab.xfleet("moves", "resume", str(move_id), "--json", mirror=db, timeout=900)
    assert res.code == 0, res.explain()
    assert res.json()["state"] == "done"
    assert sha(lab, DST, vol) == before


def test_source_written_during_the_copy_is_carried_by_a_catchup_round(
        lab: Lab, db: Path) -> None:
    vol = "tank/m/busy"
    make_volume(lab, vol, mb=16, snapshots=0)
    lab.write_random(SRC, vol, 8)
    sync(lab, db)
    with lab.running_xfleet("move", vol, "--to", DST, "--bwlimit", "1M", "--catchup-bytes",
                            "1M", "--json", mirror=db) as proc:
        wait_for(lambda: _bytes(db, vol) > 3 * 2**20, "the base copy to be under way")
        lab.write_random(SRC, vol, 2, seek_mb=10)
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    m = json.loads(out)
    assert m["state"] == "done" and m["rounds"] >= 1, m
    retired = m["retired_as"]
    assert sha(lab, DST, vol) == sha(lab, SRC, retired)


def test_target_out_of_space_fails_cleanly_and_aborts(lab: Lab, db: Path) -> None:
    vol = "tank/m/big"
    make_volume(lab, vol, mb=64, snapshots=0)
    lab.write_random(SRC, vol, 48)
    sync(lab, db)  # the mirror still sees room on lab2 ...
    free = int(lab.run(DST, ["zfs", "get", "-Hp", "-o", "value", "available", "tank"]
                       ).stdout)
    # ... then lab2 fills up, leaving ~32 MiB (the copy needs 48): a filesystem's
    # refreservation takes exactly what it says (a thick zvol's adds its metadata, ~1.5 %)
    eat = free - 32 * 2**20
    lab.run(DST, ["zfs", "create", "-o", f"refreservation={eat // 2**20}M", "tank/eater"])
    before = sha(lab, SRC, vol)
    res = lab.xfleet("move", vol, "--to", DST, "--json", mirror=db, timeout=900)
    assert res.code == 1, res.explain()
    m = res.json()
    assert m["state"] == "failed" and "out of space" in m["error"]["message"], m
    res = lab.xfleet("moves", "abort", str(m["id"]), "--yes", mirror=db)
    assert res.code == 0, res.explain()
    assert not lab.run(DST, ["zfs", "list", vol], check=False).ok  # partial copy discarded
    assert sha(lab, SRC, vol) == before  # source untouched
    assert not [s for s in lab.run(SRC, ["zfs", "list", "-H", "-o", "name", "-t", "snapshot",
                                         vol]).stdout.split() if "xfleet-move" in s]
    assert move_row(db, m["id"])["state"] == "aborted"
    lab.run(DST, ["zfs", "destroy", "tank/eater"])
    log(f"out-of-space move {m['id']} aborted cleanly")


def test_an_encrypted_volume_moves_raw_and_its_copy_opens_with_the_same_key(
        lab: Lab, db: Path) -> None:
    vol = "tank/m/secret"
    key = "5f" * 32  # a test key, written to the same file on both nodes
    for node in (SRC, DST):
        lab.run(node, ["sh", "-c", "umask 077; cat > /root/move-test.key"], input=key)
    lab.run(SRC, ["zfs", "create", "-p", "-s", "-V", "24M", "-o", "encryption=on", "-o",
                  "keyformat=hex", "-o", "keylocation=file:///root/move-test.key", vol])
    lab.run(SRC, ["udevadm", "settle"])
    lab.write_random(SRC, vol, 8)
    sync(lab, db)
    before = sha(lab, SRC, vol)
    dry = lab.xfleet("move", vol, "--to", DST, "--dry-run", mirror=db)
    assert dry.code == 0 and "zfs send -w" in dry.out and "-c" not in dry.out.split(
        "commands:")[1], dry.out
    assert "keylocation=file:///root/move-test.key" in dry.out
    res = lab.xfleet("move", vol, "--to", DST, "--json", mirror=db, timeout=900)
    assert res.code == 0, res.explain()
    m = res.json()
    assert m["state"] == "done" and m["send_flags"] == ["-w"], m
    assert "hash(es) equal" in m["verified"], m  # the copy's key was loaded: content checked
    props = lab.run(DST, ["zfs", "get", "-H", "-o", "property,value",
                          "encryption,keystatus,encryptionroot", vol]).stdout
    assert "encryption\taes-256-gcm" in props and "keystatus\tavailable" in props, props
    assert sha(lab, DST, vol) == before
    assert key not in (res.out + res.err + lab.xfleet("moves", "show", str(m["id"]),
                                                         mirror=db).out)


def test_a_target_pool_without_a_needed_feature_is_refused_before_any_byte(
        lab: Lab, db: Path, tmp_path: Path) -> None:
    lab.run(DST, ["truncate", "-s", "256M", "/var/tmp/oldpool.img"])
    lab.run(DST, ["zpool", "create", "-o", "feature@zstd_compress=disabled", "oldpool",
                  "/var/tmp/oldpool.img"])  # a pool without zstd: like one from an old ZFS
    try:
        inv = inventory_with(lab, tmp_path, DST, pools="[tank, oldpool]")
        vol = "tank/m/zstd"
        lab.run(SRC, ["zfs", "create", "-p", "-s", "-V", "16M", "-o", "compression=zstd", vol])
        res = lab.xfleet("sync", "--json", inventory=inv, mirror=db)
        assert res.code == 0, res.explain()
        res = lab.xfleet("move", vol, "--to", f"{DST}/oldpool", "--dry-run", inventory=inv,
                         mirror=db)
        assert res.code != 0 and "needs feature zstd_compress (disabled)" in res.err, res.explain()
        assert "Traceback" not in res.err
        res = lab.xfleet("move", vol, "--to", f"{DST}/oldpool", "--json", inventory=inv,
                         mirror=db)
        assert res.code == 1 and "zstd_compress" in res.json()["error"]["message"], res.explain()
        assert not lab.run(DST, ["zfs", "list", "oldpool/m/zstd"], check=False).ok
        # with a compression the target has, the same move goes through (sent without -c)
        ok = lab.xfleet("moves", "abort", str(res.json()["id"]), "--yes", inventory=inv,
                        mirror=db)
        assert ok.code == 0, ok.explain()
        res = lab.xfleet("move", vol, "--to", f"{DST}/oldpool", "--compression", "lz4",
                         "--json", inventory=inv, mirror=db)
        assert res.code == 0, res.explain()
        assert res.json()["send_flags"] == ["-L"]
    finally:
        lab.run(DST, ["zpool", "destroy", "oldpool"], check=False)
        lab.run(DST, ["rm", "-f", "/var/tmp/oldpool.img"])
        res = lab.xfleet("sync", "--full", "--node", DST, "--json", mirror=db)
        assert res.code == 0, res.explain()


def test_pause_resume_and_a_target_changed_meanwhile_is_never_rolled_back(
        lab: Lab, db: Path) -> None:
    vol = "tank/m/paused"
    make_volume(lab, vol, mb=16, snapshots=0)
    lab.write_random(SRC, vol, 8)
    sync(lab, db)
    with lab.running_xfleet("move", vol, "--to", DST, "--bwlimit", "1M", "--catchup-bytes",
                            "1M", "--json", mirror=db) as proc:
        wait_for(lambda: _bytes(db, vol) > 3 * 2**20, "the base copy to be under way")
        move_id = _last_id(db, vol)
        row = move_row(db, move_id)
        assert row["rate"] and row["rate"] > 0 and row["bytes_total"], row  # rate, for the ETA
        lab.write_random(SRC, vol, 2, seek_mb=10)
        wait_for(lambda: move_row(db, move_id)["state"] == "catchup", "a catch-up round")
        res = lab.xfleet("moves", "pause", str(move_id), "--json", mirror=db)
        assert res.code == 0, res.explain()
        assert res.json()[0]["state"] == "paused"
        out, err = proc.communicate(timeout=120)  # the running process stops on the request
    assert json.loads(out)["state"] == "paused", out + err
    # somebody writes the copy on the target meanwhile
    lab.run(DST, ["zfs", "set", "volmode=dev", vol])
    lab.run(DST, ["udevadm", "settle"])
    wait_for(lambda: lab.run(DST, ["test", "-e", f"/dev/zvol/{vol}"], check=False).ok,
             "the target's device")
    lab.run(DST, ["sh", "-c", f"printf intruder | dd of=/dev/zvol/{vol} bs=512 seek=1 "
                  "oflag=direct conv=notrunc status=none"])
    res = lab.xfleet("moves", "resume", str(move_id), "--json", mirror=db)
    assert res.code == 1, res.explain()
    m = res.json()
    assert m["state"] == "failed" and "was changed on the target" in m["error"]["message"], m
    assert "no receive -F" in m["error"]["message"]
    head = lab.run(DST, ["sh", "-c", f"dd if=/dev/zvol/{vol} bs=512 skip=1 count=1 "
                         "iflag=direct status=none | head -c 8"]).stdout
    assert head == "intruder"  # not rolled back by xfleet
    # the operator rolls it back; resume finishes the move with equal data
    snaps = lab.run(DST, ["zfs", "list", "-H", "-o", "name", "-s", "createtxg", "-t",
                          "snapshot", vol]).stdout.split()
    lab.run(DST, ["zfs", "rollback", snaps[-1]])
    res = lab.xfleet("moves", "resume", str(move_id), "--json", mirror=db)
    assert res.code == 0, res.explain()
    m = res.json()
    assert m["state"] == "done"
    assert sha(lab, DST, vol) == sha(lab, SRC, m["retired_as"])
    log_text = lab.xfleet("moves", "show", str(move_id), mirror=db).out
    assert "paused by request" in log_text and "resuming in catchup" in log_text


def test_direct_streaming_needs_node_to_node_trust_and_then_moves_the_data(
        lab: Lab, db: Path) -> None:
    vol = "tank/m/direct"
    make_volume(lab, vol, mb=16, snapshots=1)
    sync(lab, db)
    before = sha(lab, SRC, vol)
    address = next(line.split(":", 1)[1].strip() for line in lab.inventory.read_text()
                   .split(f"    {DST}:")[1].splitlines() if "private_address:" in line)
    lab.run(SRC, ["rm", "-f", "/root/.ssh/known_hosts"])
    # no trust between the nodes yet: lab1 does not know lab2's host key, and says so
    res = lab.xfleet("move", vol, "--to", DST, "--direct", "--json", mirror=db)
    assert res.code == 1, res.explain()
    m = res.json()
    assert m["state"] == "failed" and "cannot stream to" in m["error"]["message"], m
    assert "Host key verification failed" in m["error"]["message"]
    assert "without --direct" in m["error"]["message"]
    # the operator sets up trust: a key on lab1, lab2's own host key pinned on lab1
    lab.run(SRC, ["sh", "-c", "test -f /root/.ssh/id_ed25519 || ssh-keygen -q -t ed25519 "
                  "-N '' -f /root/.ssh/id_ed25519"])
    pub = lab.run(SRC, ["cat", "/root/.ssh/id_ed25519.pub"]).stdout
    lab.run(DST, ["sh", "-c", "mkdir -p /root/.ssh && cat >> /root/.ssh/authorized_keys"],
            input=pub)
    hostkey = lab.run(DST, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout.split()
    lab.run(SRC, ["sh", "-c", "cat > /root/.ssh/known_hosts"],
            input=f"{address} {hostkey[0]} {hostkey[1]}\n")
    res = lab.xfleet("moves", "resume", str(m["id"]), "--json", mirror=db, timeout=900)
    assert res.code == 0, res.explain()
    m = res.json()
    # progress from send -v: of the resumed transfer, which may be the rest of a stream the
    # first attempt began (a fresh-clone run saw 740 KiB of a 4 MiB move), so not its size
    assert m["state"] == "done" and 0 < m["bytes_done"] <= m["bytes_total"], m
    assert sha(lab, DST, vol) == before
    log_text = lab.xfleet("moves", "show", str(m["id"]), mirror=db).out
    assert f"directly {SRC} -> {DST}" in log_text


def test_the_target_power_cycled_mid_copy_is_resumed_from_its_on_disk_token(
        lab: Lab, db: Path) -> None:
    """The target loses power mid-copy (after its last txg) and comes back: the move prints
    its JSON whatever happens, and the copy resumes from the receive token on disk."""
    vol = "tank/m/reboot"
    make_volume(lab, vol, mb=16, snapshots=0)
    lab.write_random(SRC, vol, 10)
    sync(lab, db)
    before = sha(lab, SRC, vol)
    with lab.running_xfleet("move", vol, "--to", DST, "--bwlimit", "1M", "--json",
                            mirror=db) as proc:
        wait_for(lambda: _bytes(db, vol) > 4 * 2**20, "the base copy to be under way")
        lab.run(DST, ["zpool", "sync", "tank"])  # the partial receive is on disk
        lab.power_cycle(DST)  # and imports the pool again
        out, err = proc.communicate(timeout=900)
    assert out.strip(), f"xfleet move printed nothing (exit {proc.returncode}):\n{err[-3000:]}"
    m = json.loads(out)
    if m["state"] != "done":  # the node came back after the move gave up: resume it
        assert m["state"] == "failed", m
        res = lab.xfleet("moves", "resume", str(m["id"]), "--json", mirror=db, timeout=900)
        assert res.code == 0, res.explain()
        m = res.json()
    assert m["state"] == "done", m
    assert sha(lab, DST, vol) == before
    log_text = lab.xfleet("moves", "show", str(m["id"]), mirror=db).out
    assert "from the receive token" in log_text, log_text  # the partial copy survived
