"""Two operators on two machines, one shared mirror (xfleet/mirror/claims.py, jobs.py): they
race for the same rollout, move and drain; exactly one wins each time and the other's refusal
names the winner; a winner killed on its machine is taken over only once its lease expired.

"Another machine" is a UTS namespace with its own host name (`unshare -u`, the suite runs as
root): to the processes it is a different host, so the pid of the other cannot be checked and
the lease (XFLEET_LEASE) decides, as between two laptops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, wait_for, write_sim_inventory

from unit.ops.rollout.conftest import SKIP, make_packages, setup_nodes
from xfleet import mirror
from xfleet.mirror import claims, jobs
from xfleet.ops.rollout import ROLLOUTS, RolloutError

LEASE = 5.0  # seconds: the operators' processes beat every LEASE / 4


def on_host(host: str, argv: list[str]) -> list[str]:
    """`argv` run on "another machine": a UTS namespace whose host name is `host`."""
    return ["unshare", "-u", "--", "sh", "-c", 'hostname "$0" && exec "$@"', host, *argv]


def env_of(operator: str) -> dict[str, str]:
    return {**os.environ, "XFLEET_OPERATOR": operator, "XFLEET_LEASE": str(LEASE),
            "COLUMNS": "200"}


def start(operator: str, host: str, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(on_host(host, [sys.executable, "-m", "xfleet", *argv]),
                            env=env_of(operator), cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run(operator: str, host: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(on_host(host, [sys.executable, "-m", "xfleet", *argv]),
                          env=env_of(operator), cwd=ROOT, text=True, capture_output=True,
                          check=False, timeout=120)


def row(where: str, sql: str, args: tuple[Any, ...] = ()) -> Any:
    conn = mirror.connect(where, readonly=True)
    try:
        return conn.execute(sql, args).fetchone()
    finally:
        conn.close()


def stop(*procs: subprocess.Popen[str]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=30)


def test_a_rollout_two_operators_race_for_and_the_lease_that_decides_the_takeover(
        tmp_path: Path, mirror_at: str) -> None:
    inv = setup_nodes(tmp_path, ["n1", "n2"])
    doc = json.loads(inv.read_text())
    doc["all"]["vars"]["mirror"] = mirror_at
    inv.write_text(json.dumps(doc))
    pk = make_packages(tmp_path)
    skip = [a for c in SKIP for a in ("--skip-check", c)]
    upgrade = ["--inventory", str(inv), "upgrade", "target", "1.1", "--package",
               f"1.1={pk['1.1'].file}", "--rollback-package", f"1.0={pk['1.0'].file}", *skip,
               "--soak", "600", "--yes"]  # the winner soaks after n1: it holds the rollout
    procs = {"alice": start("alice", "box-a", upgrade), "bob": start("bob", "box-b", upgrade)}
    try:
        loser = wait_for(lambda: next((n for n, p in procs.items() if p.poll() is not None),
                                      None), "one of the two upgrades to be refused")
        assert loser is not None
        winner = "bob" if loser == "alice" else "alice"
        out, err = procs[loser].communicate(timeout=30)
        assert procs[loser].returncode != 0, (out, err)
        assert "rollout 1 is not finished" in err and f"started by {winner}" in err, err
        assert procs[winner].poll() is None, procs[winner].communicate(timeout=30)
        # exactly one rollout, the winner's, held by the winner's process on its machine
        assert row(mirror_at, "SELECT count(*) FROM rollouts")[0] == 1
        wait_for(lambda: row(mirror_at, "SELECT held_by FROM rollouts")[0] == winner,
                 f"{winner} to hold rollout 1")
        host = {"alice": "box-a", "bob": "box-b"}
        refused = run(loser, host[loser], ["--inventory", str(inv), "rollouts", "resume", "1"])
        assert refused.returncode != 0, refused.stdout
        assert (f"rollout 1 is being run by {winner} (process {procs[winner].pid} on "
                f"{host[winner]}) since") in refused.stderr, refused.stderr

        procs[winner].send_signal(signal.SIGKILL)  # the winner's machine dies mid-rollout
        procs[winner].communicate(timeout=30)
        last_beat = float(row(mirror_at, "SELECT heartbeat FROM rollouts")[0])
        # at once, from a third machine (this one): still held, the lease has not expired
        conn = mirror.connect(mirror_at)
        try:
            with pytest.raises(RolloutError) as exc:
                jobs.claim(conn, ROLLOUTS, 1)
        finally:
            conn.close()
        assert f"being run by {winner}" in str(exc.value)
        # the loser resumes until it takes over: never before the lease expired
        took: float | None = None
        while took is None:
            p = start(loser, host[loser], ["--inventory", str(inv), "rollouts", "resume", "1"])
            procs[f"{loser}-resume"] = p
            wait_for(lambda: p.poll() is not None or row(  # noqa: B023 - this attempt's p
                mirror_at, "SELECT held_by FROM rollouts")[0] == loser,
                     "the resume to be refused or to take over")
            if p.poll() is None:
                took = time.time()
                break
            _, err = p.communicate(timeout=30)
            assert f"being run by {winner}" in err, err
        assert took >= last_beat + LEASE, (took, last_beat)
        held = row(mirror_at, "SELECT held_by, operator FROM rollouts")
        assert tuple(held) == (loser, winner)  # who runs it now; who started it
    finally:
        stop(*procs.values())


@pytest.fixture
def synced(tmp_path: Path, mirror_at: str) -> Path:
    # n2 takes no stream: the winner's move stops in its base copy, so the volume is still
    # n1's when the loser plans (a move run to its end would have moved it away)
    inv = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 1, "volumes": 30},
                                                        "n2": {"seed": 2, "volumes": 10,
                                                               "data_path": "false"}})
    inv.write_text(inv.read_text().replace("mirror: mirror.db", f"mirror: '{mirror_at}'"))
    res = subprocess.run([sys.executable, "-m", "xfleet", "--inventory", str(inv), "sync"],
                         cwd=ROOT, capture_output=True, text=True, check=False, timeout=120)
    assert res.returncode == 0, res.stderr
    return inv


def movable(where: str) -> str:
    """A volume of n1 that n2 has no namesake of and none of whose snapshots has a clone (a
    move refuses those)."""
    return str(row(where, "SELECT d.name FROM datasets d WHERE d.node = 'n1' AND d.type = "
                   "'volume' AND NOT EXISTS (SELECT 1 FROM datasets c WHERE c.origin >= "
                   "d.name || '@' AND c.origin < d.name || 'A') AND NOT EXISTS (SELECT 1 FROM "
                   "datasets o WHERE o.node = 'n2' AND o.name = d.name) ORDER BY d.name")[0])


def test_two_operators_moving_the_same_volume_exactly_one_plans_it(
        synced: Path, mirror_at: str) -> None:
    vol = movable(mirror_at)
    argv = ["--inventory", str(synced), "move", vol, "--from", "n1", "--to", "n2"]
    procs = {"alice": start("alice", "box-a", argv), "bob": start("bob", "box-b", argv)}
    outs = {n: p.communicate(timeout=120) for n, p in procs.items()}
    moves_of = row(mirror_at, "SELECT count(*), min(operator) FROM moves WHERE volume = ?",
                   (vol,))
    assert moves_of[0] == 1, outs
    winner = moves_of[1]
    loser = "bob" if winner == "alice" else "alice"
    assert f"{vol} already has move 1" in outs[loser][1], outs[loser]
    assert f"started by {winner}" in outs[loser][1], outs[loser]
    assert "already has move" not in outs[winner][1], outs[winner]


def test_two_operators_draining_the_same_node_exactly_one_drain_gets_its_volumes(
        synced: Path, mirror_at: str) -> None:
    argv = ["--inventory", str(synced), "drain", "n1", "--to", "n2", "--yes"]
    procs = {"alice": start("alice", "box-a", argv), "bob": start("bob", "box-b", argv)}
    outs = {n: p.communicate(timeout=300) for n, p in procs.items()}
    per_volume = row(mirror_at, "SELECT count(*), count(DISTINCT volume), count(DISTINCT "
                     "operator), min(operator) FROM moves")
    assert per_volume[0] > 0 and per_volume[0] == per_volume[1], outs  # one move per volume
    assert per_volume[2] == 1, outs  # all of them one operator's: the drain was all or none
    winner = per_volume[3]
    loser = "bob" if winner == "alice" else "alice"
    assert "already has move" in outs[loser][1] and f"started by {winner}" in outs[loser][1], \
        outs[loser]


def test_the_operator_is_the_environments_identity_else_user_at_host(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XFLEET_OPERATOR", "alice")
    assert claims.operator() == "alice"
    monkeypatch.delenv("XFLEET_OPERATOR")
    assert claims.operator().endswith("@" + os.uname().nodename)
    claims.set_reason("  INC-42 rebalance ")
    try:
        assert claims.reason() == "INC-42 rebalance"
    finally:
        claims.set_reason(None)
