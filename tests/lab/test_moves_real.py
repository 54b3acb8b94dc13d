"""Volume moves between the two lab nodes, on real OpenZFS over real SSH: the happy path and
the faults of issue 6 (a cut stream, xfleet killed, a name taken, the target out of space, the
source written while it is copied). Data is compared by hashing both volumes."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from .labkit import TENANT, Lab, log

pytestmark = pytest.mark.lab

SRC, DST = "lab1", "lab2"


def sha(lab: Lab, node: str, volume: str) -> str:
    dev = "/dev/zvol/" + volume
    lab.run(node, ["udevadm", "settle"])
    return lab.run(node, ["sha256sum", dev], timeout=600).stdout.split()[0]


def make_volume(lab: Lab, name: str, mb: int = 96, snapshots: int = 2) -> None:
    lab.run(SRC, ["zfs", "create", "-p", "-s", "-V", f"{mb}M", "-o", "compression=lz4",
                  "-o", f"{TENANT}=mover", name])
    lab.run(SRC, ["udevadm", "settle"])
    for i in range(snapshots):
        lab.run(SRC, ["sh", "-c", f"dd if=/dev/urandom of=/dev/zvol/{name} bs=1M "
                      f"count={min(8, mb // 4)} seek={i * min(8, mb // 4)} oflag=direct "
                      "conv=notrunc status=none"])
        lab.run(SRC, ["zfs", "snapshot", f"{name}@s{i}"])
    lab.run(SRC, ["sh", "-c", f"yes 'text line for compression {name}' | head -c "
                  f"{mb // 4 * 2**20} | dd of=/dev/zvol/{name} bs=1M seek={mb // 2} "
                  "oflag=direct conv=notrunc status=none"])


def sync(lab: Lab, db: Path) -> None:
    res = lab.xfleet("sync", "--json", mirror=db)
    assert res.code == 0, res.out + res.err


def move_row(db: Path, move_id: int) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return dict(conn.execute("SELECT * FROM moves WHERE id = ?", (move_id,)).fetchone())
    finally:
        conn.close()


def wait_for(pred: Any, what: str, timeout: float = 180) -> None:
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def db(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("moves") / "lab.db"
    sync(lab, path)
    return path


def test_move_copies_chain_properties_and_data_then_retires_the_source(
        lab: Lab, db: Path) -> None:
    vol = "tank/m/happy"
    make_volume(lab, vol)
    sync(lab, db)
    before = sha(lab, SRC, vol)
    dry = lab.xfleet("move", vol, "--to", DST, "--dry-run", mirror=db)
    assert dry.code == 0 and "zfs receive -s -u" in dry.out and "-L -c" in dry.out, dry.out
    res = lab.xfleet("move", vol, "--to", DST, "--json", mirror=db)
    assert res.code == 0, res.out + res.err
    m = res.json()
    assert m["state"] == "done" and m["verified"], m
    assert sha(lab, DST, vol) == before
    props = lab.run(DST, ["zfs", "get", "-H", "-o", "property,value",
                          f"compression,{TENANT},volmode,readonly", vol]).stdout
    assert "compression\tlz4" in props and f"{TENANT}\tmover" in props
    assert "volmode\tdefault" in props
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
    assert res.code != 0 and "confirmation" in res.err
    res = lab.xfleet("moves", "retire", str(m["id"]), "--destroy", "--yes", mirror=db)
    assert res.code == 0, res.err
    assert not lab.run(SRC, ["zfs", "list", retired], check=False).ok


def test_refusals_are_clear(lab: Lab, db: Path) -> None:
    vol = "tank/m/taken"
    make_volume(lab, vol, mb=16, snapshots=1)
    lab.run(DST, ["zfs", "create", "-p", "-s", "-V", "16M", vol])
    lab.run(SRC, ["zfs", "clone", f"{vol}@s0", "tank/m/taken-branch"])
    sync(lab, db)
    res = lab.xfleet("move", vol, "--to", DST, mirror=db)
    assert res.code == 1 and "several nodes" in res.err and "--from" in res.err
    res = lab.xfleet("move", vol, "--from", SRC, "--to", DST, mirror=db)
    assert res.code == 1 and "Traceback" not in res.err
    assert "clone" in res.err  # never orphan a clone
    lab.run(SRC, ["zfs", "destroy", "tank/m/taken-branch"])
    sync(lab, db)
    res = lab.xfleet("move", vol, "--from", SRC, "--to", DST, mirror=db)
    assert res.code == 1 and "already has a volume named" in res.err and "-F" in res.err


def test_a_cut_stream_resumes_from_the_receive_token(lab: Lab, db: Path) -> None:
    vol = "tank/m/cut"
    make_volume(lab, vol, mb=64, snapshots=0)
    lab.run(SRC, ["sh", "-c", f"dd if=/dev/urandom of=/dev/zvol/{vol} bs=1M count=48 "
                  "oflag=direct conv=notrunc status=none"])
    sync(lab, db)
    before = sha(lab, SRC, vol)
    proc = lab.popen_xfleet("move", vol, "--to", DST, "--bwlimit", "4M", "--json", mirror=db)
    try:
        wait_for(lambda: _bytes(db, vol) > 8 * 2**20, "the base copy to be under way")
        lab.run(DST, ["pkill", "-f", "zfs receive"])  # cut the stream on the receiving side
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
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
    make_volume(lab, vol, mb=64, snapshots=1)
    lab.run(SRC, ["sh", "-c", f"dd if=/dev/urandom of=/dev/zvol/{vol} bs=1M count=40 seek=16 "
                  "oflag=direct conv=notrunc status=none"])
    sync(lab, db)
    before = sha(lab, SRC, vol)
    proc = lab.popen_xfleet("move", vol, "--to", DST, "--bwlimit", "4M", "--json", mirror=db)
    wait_for(lambda: _bytes(db, vol) > 12 * 2**20, "the copy to be under way")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    move_id = _last_id(db, vol)
    assert move_row(db, move_id)["state"] in ("base", "catchup")
    time.sleep(2)  # the remote receive notices the closed connection and keeps its token
    res = lab.xfleet("moves", "resume", str(move_id), "--json", mirror=db, timeout=900)
    assert res.code == 0, res.out + res.err
    assert res.json()["state"] == "done"
    assert sha(lab, DST, vol) == before


def test_source_written_during_the_copy_is_carried_by_a_catchup_round(
        lab: Lab, db: Path) -> None:
    vol = "tank/m/busy"
    make_volume(lab, vol, mb=64, snapshots=0)
    lab.run(SRC, ["sh", "-c", f"dd if=/dev/urandom of=/dev/zvol/{vol} bs=1M count=40 "
                  "oflag=direct conv=notrunc status=none"])
    sync(lab, db)
    proc = lab.popen_xfleet("move", vol, "--to", DST, "--bwlimit", "6M", "--catchup-bytes",
                            "1M", "--json", mirror=db)
    try:
        wait_for(lambda: _bytes(db, vol) > 4 * 2**20, "the base copy to be under way")
        lab.run(SRC, ["sh", "-c", f"dd if=/dev/urandom of=/dev/zvol/{vol} bs=1M count=6 "
                      "seek=50 oflag=direct conv=notrunc status=none"])
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    m = json.loads(out)
    assert m["state"] == "done" and m["rounds"] >= 1, m
    retired = m["retired_as"]
    assert sha(lab, DST, vol) == sha(lab, SRC, retired)


def test_target_out_of_space_fails_cleanly_and_aborts(lab: Lab, db: Path) -> None:
    vol = "tank/m/big"
    make_volume(lab, vol, mb=256, snapshots=0)
    lab.run(SRC, ["sh", "-c", f"dd if=/dev/urandom of=/dev/zvol/{vol} bs=1M count=200 "
                  "oflag=direct conv=notrunc status=none"])
    sync(lab, db)  # the mirror still sees room on lab2 ...
    free = int(lab.run(DST, ["zfs", "get", "-Hp", "-o", "value", "available", "tank"]
                       ).stdout)
    eat = free - 120 * 2**20  # ... then lab2 fills up, leaving ~120 MiB
    lab.run(DST, ["zfs", "create", "-V", str(eat // 2**20) + "M", "tank/eater"])
    before = sha(lab, SRC, vol)
    res = lab.xfleet("move", vol, "--to", DST, "--json", mirror=db, timeout=900)
    assert res.code == 1
    m = res.json()
    assert m["state"] == "failed" and "out of space" in (m["error"] or ""), m
    res = lab.xfleet("moves", "abort", str(m["id"]), "--yes", mirror=db)
    assert res.code == 0, res.err
    assert not lab.run(DST, ["zfs", "list", vol], check=False).ok  # partial copy discarded
    assert sha(lab, SRC, vol) == before  # source untouched
    assert not [s for s in lab.run(SRC, ["zfs", "list", "-H", "-o", "name", "-t", "snapshot",
                                         vol]).stdout.split() if "xfleet-move" in s]
    assert move_row(db, m["id"])["state"] == "aborted"
    lab.run(DST, ["zfs", "destroy", "tank/eater"])
    log(f"out-of-space move {m['id']} aborted cleanly")
