"""The CLI against a real OpenSSH server: unknown host keys are refused, the mirror is intact,
and `xfleet inventory trust` is the explicit opt-in."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import run_cli, write_sim_inventory
from sshd import SSHD, keygen, ssh_keygen_fingerprint

pytestmark = pytest.mark.ssh


def test_unknown_host_key_refused_mirror_intact_then_trusted(sshd: SSHD, tmp_path: Path) -> None:
    logins_before = sshd.logins()  # the server is shared by the session's SSH tests
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    env = {"HOME": str(home)}
    sim_inv = write_sim_inventory(tmp_path / "sim.yaml", {"n1": {"seed": 1, "volumes": 50},
                                                          "n2": {"seed": 2, "volumes": 50}})
    assert run_cli("-i", str(sim_inv), "sync", env=env).code == 0
    db = tmp_path / "mirror.db"
    conn = sqlite3.connect(db)
    n2_rows = conn.execute("SELECT * FROM datasets WHERE node='n2' ORDER BY name").fetchall()
    assert n2_rows
    # n2 is now a real SSH node whose host key nobody has trusted
    inv = tmp_path / "mixed.yaml"
    inv.write_text(
        "all:\n  vars:\n    mirror: mirror.db\n    state_dir: state\n  hosts:\n"
        "    n1:\n      kind: sim\n      sim: {seed: 1, volumes: 50}\n"
        f"    n2:\n      kind: ssh\n      address: 127.0.0.1\n      port: {sshd.port}\n"
        f"      user: {sshd.user}\n      identity_file: {sshd.client_key}\n"
        "      connect_retries: 1\n      connect_timeout: 5\n"
    )
    r = run_cli("-i", str(inv), "sync", "--json", env=env)
    assert r.code == 1 and "Traceback" not in r.err
    rep = {n["node"]: n for n in r.json()["nodes"]}
    assert rep["n1"]["ok"]
    assert "unknown host key" in rep["n2"]["error"]
    assert "xfleet inventory trust n2" in rep["n2"]["hint"]
    assert conn.execute("SELECT * FROM datasets WHERE node='n2' ORDER BY name").fetchall() == \
        n2_rows
    assert conn.execute("SELECT stale FROM nodes WHERE name='n2'").fetchone()[0] == 1
    assert sshd.logins() == logins_before  # refused before any authentication

    # trusting needs a confirmation: without a terminal and without --yes it refuses
    no = run_cli("-i", str(inv), "inventory", "trust", "n2", env=env)
    assert no.code == 2 and "confirmation" in no.err
    assert not (tmp_path / "state" / "known_hosts").exists()
    yes = run_cli("-i", str(inv), "inventory", "trust", "n2", "--yes", env=env)
    assert yes.code == 0, yes.err
    assert ssh_keygen_fingerprint(sshd.workdir / "ssh_host_ed25519_key.pub") in yes.out
    assert (tmp_path / "state" / "known_hosts").is_file()
    # now the connection is accepted; this host has no ZFS, which is the next (clear) error
    r = run_cli("-i", str(inv), "sync", "--node", "n2", "--json", env=env)
    rep = {n["node"]: n for n in r.json()["nodes"]}
    assert r.code == 1
    assert "host key" not in rep["n2"]["error"]
    assert "zpool" in rep["n2"]["error"]
    assert sshd.logins() > logins_before
    assert conn.execute("SELECT * FROM datasets WHERE node='n2' ORDER BY name").fetchall() == \
        n2_rows


def test_trust_fixes_a_node_whose_old_key_is_still_in_the_users_known_hosts(
        sshd: SSHD, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    env = {"HOME": str(home)}
    stale = keygen(tmp_path / "stale")  # the node's key before it was reinstalled
    (home / ".ssh" / "known_hosts").write_text(
        f"[127.0.0.1]:{sshd.port} {' '.join(Path(f'{stale}.pub').read_text().split()[:2])}\n")
    inv = tmp_path / "inv.yaml"
    node = (f"    n2:\n      kind: ssh\n      address: 127.0.0.1\n      port: {sshd.port}\n"
            f"      user: {sshd.user}\n      identity_file: {sshd.client_key}\n"
            "      connect_retries: 1\n      connect_timeout: 5\n")
    inv.write_text("all:\n  vars:\n    mirror: mirror.db\n    state_dir: state\n  hosts:\n"
                   + node)
    r = run_cli("-i", str(inv), "sync", "--json", env=env)
    err = r.json()["nodes"][0]
    assert r.code == 1 and "does not match" in err["error"] and "ssh-keygen -R" in err["hint"]
    yes = run_cli("-i", str(inv), "inventory", "trust", "n2", "--replace", "--yes", env=env)
    assert yes.code == 0 and "recorded in" in yes.out and "warning" not in yes.err, yes
    r = run_cli("-i", str(inv), "sync", "--json", env=env)
    err = r.json()["nodes"][0]
    assert "host key" not in err["error"] and "zpool" in err["error"], err  # connected

    # a known_hosts file named in the inventory outranks the trust store: trust says so
    known = tmp_path / "inventory_known_hosts"
    known.write_text((home / ".ssh" / "known_hosts").read_text())
    inv.write_text(inv.read_text() + f"      known_hosts: {known}\n")
    again = run_cli("-i", str(inv), "inventory", "trust", "n2", "--yes", env=env)
    assert again.code == 0 and "already trusted" in again.out
    assert "the inventory's known_hosts lists another key for n2" in again.err, again
