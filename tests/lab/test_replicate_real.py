"""Standing replicas on real OpenZFS over real SSH (docs/replicate.md): what the simulator cannot
prove. A replica follows writes within its RPO with the source's own snapshot guids, its cursor
held and bookmarked on the source; a stream whose xfleet was killed mid-way resumes from the
real receive token; and `promote --source-lost`, after the primary's node is stopped, gives the
data back on the other node with the source's hash. The volume's name has a space and a colon
(argument lists quoted once, in one place; the zvol's device name as udev makes it)."""

from __future__ import annotations

import shlex
import signal
import sqlite3
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for as shared_wait_for

from xfleet.lab import kill_node, ssh_argv

from .labkit import Lab, figure

pytestmark = pytest.mark.lab

SRC, DST = "lab1", "lab2"
VOL = "tank/r/pg main:1"
POLICY = textwrap.dedent(f"""\
    policies:
      - name: db
        match: {{node: {SRC}, name: "tank/r/*"}}
        schedule: {{every: 15m}}
        keep: {{hourly: 24, at_least: 2}}
        replicate:
          - {{node: {DST}, pool: tank, rpo: 1h}}
    """)


def wait_for(pred: Callable[[], object], what: str, timeout: float = 180) -> None:
    shared_wait_for(pred, what, timeout=timeout, interval=0.2)


def sha(lab: Lab, node: str, volume: str) -> str:
    """The sha256 of zvol `volume` on `node` (udev names a zvol's device with '+' for ' ')."""
    dev = "/dev/zvol/" + volume.replace(" ", "+")
    return lab.run(node, ["sh", "-c", 'udevadm settle && sha256sum "$1"', "sh", dev],
                   timeout=600).stdout.split()[0]


def props(lab: Lab, node: str, names: list[str], what: str) -> dict[tuple[str, str], str]:
    out = lab.run(node, ["zfs", "get", "-H", "-p", "-o", "name,property,value", what, *names],
                  check=False).stdout
    return {(n, p): v for n, p, v in (line.split("\t") for line in out.splitlines())}


def replica(db: Path) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM replicas WHERE volume = ?", (VOL,)).fetchone()
        assert row is not None, "no replica row"
        return dict(row)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def setup(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("replicate")
    policy = tmp / "snapshots.yaml"
    policy.write_text(POLICY)
    db = tmp / "lab.db"
    # udev makes the device after `zfs create` returns: settle before writing to it
    lab.run(SRC, ["sh", "-c", 'zfs create -p -s -V 24M -o compression=lz4 "$1" && '
                  'udevadm settle && test -e "/dev/zvol/$2"', "sh", VOL, VOL.replace(" ", "+")])
    lab.write_random(SRC, VOL.replace(" ", "+"), 6)
    res = lab.xfleet("sync", "--json", mirror=db)
    assert res.code == 0, res.explain()
    return policy, db


def test_a_replica_follows_writes_and_a_killed_stream_resumes_from_its_token(
        lab: Lab, setup: tuple[Path, Path]) -> None:
    policy, db = setup
    res = lab.xfleet("snapshots", "run", "--policy", str(policy), "--yes", "--json", mirror=db)
    assert res.code == 0, res.explain()
    first = lab.run(SRC, ["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-d", "1", VOL]
                    ).stdout.split("\n")[0].split("@", 1)[1]
    assert first.startswith("xfleet_db_"), first

    res = lab.xfleet("replicate", "run", "--policy", str(policy), "--json", mirror=db)
    assert res.code == 0, res.explain()
    doc = res.json()
    assert [(s["volume"], s["how"], s["snapshot"]) for s in doc["sent"]] == \
        [(VOL, "full", first)], doc
    _against_the_plain_pipe(lab, f"{VOL}@{first}", doc["sent"][0])
    src = props(lab, SRC, [f"{VOL}@{first}"], "guid,userrefs")
    dst = props(lab, DST, [VOL, f"{VOL}@{first}"], "guid,volmode,xfleet:replica-of")
    assert dst[(f"{VOL}@{first}", "guid")] == src[(f"{VOL}@{first}", "guid")]
    assert dst[(VOL, "volmode")] == "none"  # no device on the copy
    assert dst[(VOL, "xfleet:replica-of")] == f"{SRC}:{VOL}"
    tag = f"xfleet-replica-{DST}"
    holds = lab.run(SRC, ["zfs", "holds", "-H", f"{VOL}@{first}"]).stdout
    assert f"\t{tag}\t" in holds, holds
    marks = lab.run(SRC, ["zfs", "list", "-H", "-o", "name", "-t", "bookmark", "-r", VOL]
                    ).stdout
    assert marks.splitlines() == [f"{VOL}#{tag}_{first}"], marks
    status = lab.xfleet("replicate", "status", "--json", mirror=db)
    assert status.code == 0, status.explain()
    (group,) = status.json()["policies"]
    assert group["over_rpo"] == 0 and group["max_lag"] < 3600, group

    # nothing written since: the round sends nothing
    res = lab.xfleet("replicate", "run", "--policy", str(policy), "--json", mirror=db)
    assert res.code == 0 and res.json()["sent"] == [], res.explain()

    # 10 MiB written and snapshotted: an incremental, cut by killing xfleet mid-way
    lab.write_random(SRC, VOL.replace(" ", "+"), 10, seek_mb=8)
    lab.run(SRC, ["zfs", "snapshot", f"{VOL}@second"])
    res = lab.xfleet("sync", "--json", mirror=db)
    assert res.code == 0, res.explain()
    with lab.running_xfleet("replicate", "run", "--policy", str(policy), "--bwlimit", "1M",
                            "--json", mirror=db) as proc:
        wait_for(lambda: replica(db)["state"] == "sending", "the incremental to start")
        wait_for(lambda: lab.run(DST, ["pgrep", "-f", "zfs receive"], check=False).ok,
                 "the receive to run on the target")
        # some of the ~10 MiB stream landed (at 1 MiB/s): the receive has read 3 MiB
        wait_for(lambda: proc.poll() is None and _received(lab) > 3 << 20,
                 "3 MiB read by the target's receive", timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    wait_for(lambda: not lab.run(DST, ["pgrep", "-f", "zfs receive"], check=False).ok,
             "the target's receive to end on the closed connection (keeping its token)")
    token = props(lab, DST, [VOL], "receive_resume_token")[(VOL, "receive_resume_token")]
    assert token not in ("", "-"), "no resume token after the cut stream"
    assert replica(db)["cursor"] == first  # not advanced by a stream that did not finish

    res = lab.xfleet("replicate", "run", "--policy", str(policy), "--json", mirror=db,
                     timeout=900)
    assert res.code == 0, res.explain()
    (sent,) = res.json()["sent"]
    assert sent["how"] == "resumed" and sent["snapshot"] == "second", sent
    src = props(lab, SRC, [f"{VOL}@second", f"{VOL}@{first}"], "guid,userrefs")
    dst = props(lab, DST, [f"{VOL}@second", VOL], "guid,receive_resume_token")
    assert dst[(f"{VOL}@second", "guid")] == src[(f"{VOL}@second", "guid")]
    assert dst[(VOL, "receive_resume_token")] == "-"
    assert src[(f"{VOL}@{first}", "userrefs")] == "0"  # the old cursor, released
    assert src[(f"{VOL}@second", "userrefs")] == "1"  # the new cursor, held
    r = replica(db)
    assert r["cursor"] == "second" and r["state"] == "idle", r
    figure(f"replicate: resumed incremental {sent['bytes']:,} bytes in {sent['seconds']} s")


def _against_the_plain_pipe(lab: Lab, snap: str, sent: dict[str, Any]) -> None:
    """The same full stream as a plain `ssh SRC zfs send | ssh DST zfs receive` pipe from this
    host (what a hand-written script does): the copy gets the same guid; both times go to the
    lab's figures side by side."""
    plain = "tank/r/plain"
    send = ssh_argv(SRC, state_dir=lab.state_dir) + [shlex.join(["zfs", "send", "-L", "-c",
                                                                  snap])]
    recv = ssh_argv(DST, state_dir=lab.state_dir) + [shlex.join(["zfs", "receive", "-u",
                                                                  plain])]
    t0 = time.monotonic()
    src = subprocess.Popen(send, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dst = subprocess.run(recv, stdin=src.stdout, capture_output=True, timeout=600, check=False)
    assert src.stdout is not None
    src.stdout.close()
    src_err = src.communicate(timeout=60)[1]
    seconds = time.monotonic() - t0
    assert src.returncode == 0 and dst.returncode == 0, (src_err, dst.stderr)
    short = snap.split("@", 1)[1]
    got = props(lab, DST, [f"{plain}@{short}", f"{VOL}@{short}"], "guid")
    assert got[(f"{plain}@{short}", "guid")] == got[(f"{VOL}@{short}", "guid")]
    lab.run(DST, ["zfs", "destroy", "-r", plain])
    figure(f"replicate: first full send {sent['bytes']:,} bytes in {sent['seconds']} s "
           f"(relayed by xfleet) vs {seconds:.2f} s for a plain ssh | ssh pipe")


def _received(lab: Lab) -> int:
    """Bytes the target's running `zfs receive` has read from its stdin (/proc/PID/io)."""
    out = lab.run(DST, ["sh", "-c", "for p in $(pgrep -f 'zfs receive'); do "
                        "awk '/^rchar/ {print $2}' /proc/$p/io; done"], check=False).stdout
    return max((int(x) for x in out.split() if x.isdigit()), default=0)


def test_promote_after_the_primary_node_is_stopped_gives_the_data_back(
        lab: Lab, setup: tuple[Path, Path]) -> None:
    policy, db = setup
    r = replica(db)
    assert r["cursor"] == "second", "runs after the replica test"
    want = sha(lab, SRC, VOL)  # nothing written since @second: the volume is @second's data
    assert kill_node(SRC, state_dir=lab.state_dir, keep_data=True), f"{SRC} not running"
    try:
        refused = lab.xfleet("replicate", "promote", f"{SRC}:{VOL}", "--source-lost",
                             mirror=db)
        assert refused.code != 0 and "without confirmation" in refused.err, refused.explain()
        res = lab.xfleet("replicate", "promote", f"{SRC}:{VOL}", "--source-lost", "--yes",
                         "--json", mirror=db)
        assert res.code == 0, res.explain()
        assert res.json()["mode"] == "source lost"
        dst = props(lab, DST, [VOL], "volmode,xfleet:replica-of")
        assert dst[(VOL, "volmode")] != "none" and dst[(VOL, "xfleet:replica-of")] == "-", dst
        assert sha(lab, DST, VOL) == want
        assert replica(db)["state"] == "promoted"
    finally:
        lab.ensure_up()  # lab1 back with its own data disk, for the modules after this one
