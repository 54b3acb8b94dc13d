"""The simulated target daemon (`xfleet-sim-target` behind the `command` driver): versions,
packages put with put_file.sh and checked with sha256sum, restarts, and the exports of every
volume with pinned identities and their allowed hosts (set-hosts; a restart re-applies the
zvols' xfleet:hosts), and the zvol_hosts program. xfleet's side of it is tested in
unit/ops/rollout/ and unit/ops/access/."""

from __future__ import annotations

import hashlib
from pathlib import Path

from xfleet.core.identity import UUID_PROPERTY, pinned_identity, volume_identity
from xfleet.remote.programs import program
from xfleet.sim import TARGET, SimTransport

from ..simkit import ok, run, sim

H1 = "nqn.2014-08.org.nvmexpress:uuid:11111111-1111-1111-1111-111111111111"
H2 = "nqn.2014-08.org.nvmexpress:uuid:22222222-2222-2222-2222-222222222222"


def put(t: SimTransport, path: str, data: bytes) -> None:
    r = t.run(program("put_file").argv(path), stdin=data, check=False)
    assert (r.exit_status, r.stdout, r.stderr) == (0, "", "")


def test_packages_stage_and_restart_the_daemon(tmp_path: Path) -> None:
    t = sim(30, state_dir=tmp_path)
    assert [ok(t, *TARGET[k]) for k in ("installed_version", "running_version", "ready")] == \
        ["1.0\n"] * 3
    put(t, "/var/tmp/t.deb", b"package")
    digest = hashlib.sha256(b"package").hexdigest()
    assert ok(t, "sha256sum", "/var/tmp/t.deb") == f"{digest}  /var/tmp/t.deb\n"
    assert run(t, "sha256sum", "/nope") == (1, "", "sha256sum: /nope: No such file or directory\n")
    assert run(t, "xfleet-sim-target", "stage", "/var/tmp/t.deb", "0" * 64) == \
        (1, "", "stage: /var/tmp/t.deb: digest mismatch\n")
    ok(t, "xfleet-sim-target", "stage", "/var/tmp/t.deb", digest)
    assert run(t, "xfleet-sim-target", "restart", "/missing.deb", "2.0")[0] == 2
    ok(t, "xfleet-sim-target", "restart", "/var/tmp/t.deb", "2.0-broken")
    assert ok(t, "xfleet-sim-target", "installed") == "2.0-broken\n"
    assert ok(t, "xfleet-sim-target", "running") == ""  # a broken version never starts
    assert run(t, "xfleet-sim-target", "ready") == (1, "", "not ready\n")
    ok(t, "xfleet-sim-target", "restart", "/var/tmp/t.deb", "2.0")
    other = sim(30, state_dir=tmp_path)  # the daemon's state is the node's, not the transport's
    assert ok(other, "xfleet-sim-target", "running") == "2.0\n"
    assert ok(sim(30), "xfleet-sim-target", "running") == "1.0\n"  # another node, in memory
    assert run(t, "xfleet-sim-target", "bogus")[0] == 2


def test_exports_list_every_volume_with_its_pinned_identity() -> None:
    t = sim(40)
    vols = [line.split("\t") for line in
            ok(t, "zfs", "list", "-Hp", "-t", "volume", "-o", "name,guid").splitlines()]
    rows = [line.split("\t") for line in ok(t, *TARGET["exports"]).splitlines()]
    assert len(rows) == len(vols) == 40
    for (name, guid), row in zip(vols, rows, strict=True):
        u, g = pinned_identity("n1", guid)
        assert row == [f"nqn.2026-01.io.xfleet.sim:n1:{name.replace('/', '.')}", "1",
                       f"/dev/zvol/{name}", u, g, "1", "1", ""]  # open to any host
    ok(t, "zfs", "rename", vols[0][0], "tank/renamed")  # a rename keeps the identity
    renamed = next(r for r in (line.split("\t") for line in
                               ok(t, *TARGET["exports"]).splitlines()) if r[2].endswith("renamed"))
    assert renamed[3:5] == list(pinned_identity("n1", vols[0][1]))



def test_a_volume_with_its_own_uuid_is_exported_under_the_identity_derived_from_it() -> None:
    """Set or received, the UUID gives the NQN PREFIX:vol:UUID and the namespace ids of
    volume_identity, the same on any node; inherited from a filesystem, it is no identity."""
    own = "5f1c2a7e-9d3b-4e8a-b6c1-0a2b3c4d5e6f"
    rows = {}
    for node in ("n1", "n2"):
        t = sim(10, node=node)
        ok(t, "zfs", "create", "-o", f"{UUID_PROPERTY}=0f0e0d0c-0b0a-4909-8807-060504030201",
           "tank/grp")
        ok(t, "zfs", "create", "-s", "-V", "1G", "-o", f"{UUID_PROPERTY}={own}", "tank/grp/db")
        ok(t, "zfs", "create", "-s", "-V", "1G", "tank/grp/inherits")
        rows[node] = {r[2]: r for r in (line.split("\t") for line in
                                         ok(t, *TARGET["exports"]).splitlines())}
    u, g = volume_identity(own)
    assert rows["n1"]["/dev/zvol/tank/grp/db"][:5] == rows["n2"]["/dev/zvol/tank/grp/db"][:5] \
        == [f"nqn.2026-01.io.xfleet.sim:vol:{own}", "1", "/dev/zvol/tank/grp/db", u, g]
    assert rows["n1"]["/dev/zvol/tank/grp/inherits"][0] == \
        "nqn.2026-01.io.xfleet.sim:n1:tank.grp.inherits"

def _listing(t: SimTransport) -> dict[str, tuple[str, str, str]]:
    """{volume: (nqn, ALLOW_ANY, HOSTS)} of the daemon's listing."""
    out = {}
    for line in ok(t, *TARGET["exports"]).splitlines():
        row = line.split("\t")
        out[row[2].removeprefix("/dev/zvol/")] = (row[0], row[6], row[7])
    return out


def test_set_hosts_restricts_subsystems_and_persists_with_the_node(tmp_path: Path) -> None:
    t = sim(5, state_dir=tmp_path)
    before = _listing(t)
    (a, (nqn_a, _, _)), (b, (nqn_b, _, _)) = list(before.items())[:2]
    assert {v[1:] for v in before.values()} == {("1", "")}  # every export open
    r = t.run(TARGET["set_hosts"], stdin=f"{nqn_a}\t{H2},{H1}\n{nqn_b}\t\n"
              "nqn.x:nope\tnqn.y\n".encode())
    assert r.stdout.splitlines() == [f"{nqn_a}\tOK\t", f"{nqn_b}\tOK\t",
                                     "nqn.x:nope\tERR\tno such subsystem"]
    after = _listing(sim(5, state_dir=tmp_path))  # the node's state, not the transport's
    assert after[a] == (nqn_a, "0", f"{H1},{H2}") and after[b] == (nqn_b, "0", "")
    assert sum(v[1] == "1" for v in after.values()) == 3
    bad = t.run(TARGET["set_hosts"], stdin=b"no tab here\n", check=False)
    assert (bad.exit_status, bad.stderr) == (
        2, "set-hosts: line 1: expected NQN<TAB>HOSTS, got 'no tab here'\n")


def test_a_restart_applies_the_zvols_hosts_property(tmp_path: Path) -> None:
    """Like the lab's daemon: `xfleet:hosts` set -> exactly those hosts (`none`: no host);
    absent -> open; a restriction the property does not hold is gone after a restart."""
    t = sim(4, state_dir=tmp_path)
    vols = list(_listing(t))
    r = t.run(program("zvol_hosts").argv("xfleet:hosts"),
              stdin=f"{vols[0]}\t{H1}\n{vols[1]}\tnone\ntank/gone\tnone\n".encode())
    assert r.stdout.splitlines() == [
        "ERR\ttank/gone\tcannot open 'tank/gone': dataset does not exist", "OK\t2"]
    assert ok(t, "zfs", "get", "-H", "-o", "value", "xfleet:hosts", vols[0], vols[1]) == \
        f"{H1}\nnone\n"
    nqn2 = _listing(t)[vols[2]][0]
    t.run(TARGET["set_hosts"], stdin=f"{nqn2}\t{H2}\n".encode())
    assert _listing(t)[vols[2]][1:] == ("0", H2)
    ok(t, "xfleet-sim-target", "restart", "", "")
    got = _listing(t)
    assert [got[v][1:] for v in vols] == [("0", H1), ("0", ""), ("1", ""), ("1", "")]
    assert run(t, *program("zvol_hosts").argv())[0] == 1
    assert run(t, *program("zvol_hosts").argv("xfleet:hosts"))[0] == 0  # nothing to do
