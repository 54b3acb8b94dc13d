"""The simulated target daemon (`xfleet-sim-target` behind the `command` driver): versions,
packages put with put_file.sh and checked with sha256sum, restarts, and the exports of every
volume with pinned identities. xfleet's side of it is tested in unit/ops/rollout/."""

from __future__ import annotations

import hashlib
from pathlib import Path

from xfleet.core.identity import pinned_identity
from xfleet.remote.programs import program
from xfleet.sim import TARGET, SimTransport

from ..simkit import ok, run, sim


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
                       f"/dev/zvol/{name}", u, g, "1"]
    ok(t, "zfs", "rename", vols[0][0], "tank/renamed")  # a rename keeps the identity
    renamed = next(r for r in (line.split("\t") for line in
                               ok(t, *TARGET["exports"]).splitlines()) if r[2].endswith("renamed"))
    assert renamed[3:5] == list(pinned_identity("n1", vols[0][1]))
