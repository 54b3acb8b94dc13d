"""The example playbooks on real OpenZFS: branch a tenant volume, the nightly snapshot, and
drain a node (real moves between the two lab nodes), each checked first with --check."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from .labkit import ROOT, TENANT, Lab

pytestmark = pytest.mark.lab

PLAYBOOKS = ROOT / "playbooks"


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return [tuple(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def db(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lab.run("lab1", ["zfs", "create", "-p", "tank/acme"])
    for v in ("db", "cache"):
        lab.run("lab1", ["zfs", "create", "-s", "-V", "32M", "-o", f"{TENANT}=acme",
                         f"tank/acme/{v}"])
    lab.run("lab2", ["zfs", "create", "-p", "tank/d"])
    for i in range(2):
        name = f"tank/d/v{i}"
        lab.run("lab2", ["zfs", "create", "-s", "-V", "16M", "-o", f"{TENANT}=drain", name])
        lab.run("lab2", ["udevadm", "settle"])
        lab.write_random("lab2", name, 2)
    path = tmp_path_factory.mktemp("plays") / "lab.db"
    res = lab.xfleet("sync", "--json", mirror=path)
    assert res.code == 0, res.explain()
    return path


def test_branch_playbook(lab: Lab, db: Path) -> None:
    args = ("play", str(PLAYBOOKS / "branch-tenant.yaml"), "--var", "volume=tank/acme/db",
            "--var", "branch=qa")
    check = lab.xfleet(*args, "--check", mirror=db)
    assert check.code == 0, check.explain()
    assert "lab1: zfs snapshot tank/acme/db@branch-qa" in check.out
    assert not lab.run("lab1", ["zfs", "list", "tank/acme/db@branch-qa"], check=False).ok
    res = lab.xfleet(*args, "--json", mirror=db)
    assert res.code == 0, res.explain()
    assert res.json()["state"] == "done"
    out = lab.run("lab1", ["zfs", "get", "-H", "-o", "value", "origin,xfleet:env",
                           "tank/acme/db-qa"]).stdout.split()
    assert out == ["tank/acme/db@branch-qa", "test"]


def test_nightly_snapshot_playbook(lab: Lab, db: Path) -> None:
    report = db.parent / "nightly-compression.html"  # not the repository's working tree
    args = ("play", str(PLAYBOOKS / "nightly-snapshot.yaml"), "--var", "tenant=acme",
            "--var", f"report={report}")
    check = lab.xfleet(*args, "--check", mirror=db)
    assert check.code == 0, check.explain()
    assert "zfs snapshot tank/acme/cache@nightly-" in check.out
    res = lab.xfleet(*args, "--json", mirror=db)
    assert res.code == 0, res.explain()
    snaps = lab.run("lab1", ["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r",
                             "tank/acme"]).stdout.split()
    assert sum("@nightly-" in s for s in snaps) == 2  # db and cache; the branch is no tenant's
    assert "<html" in report.read_text().lower()  # the compression report, where it was asked


def test_drain_playbook_moves_every_volume(lab: Lab, db: Path) -> None:
    args = ("play", str(PLAYBOOKS / "drain-node.yaml"), "--var", "node=lab2")
    check = lab.xfleet(*args, "--check", mirror=db)
    assert check.code == 0, check.explain()
    assert "move tank/d/v0 (lab2) -> lab1:tank/d/v0" in check.out
    res = lab.xfleet(*args, "--json", mirror=db, timeout=1800)
    assert res.code == 0, res.explain()
    assert res.json()["state"] == "done"
    on1 = lab.run("lab1", ["zfs", "list", "-H", "-o", "name", "-t", "volume", "-r", "tank/d"]
                  ).stdout.split()
    assert {"tank/d/v0", "tank/d/v1"} <= set(on1)
    assert rows(db, "SELECT count(*) FROM datasets WHERE node = 'lab2' AND type = 'volume' "
                "AND name NOT LIKE '%.xfleet-moved-%'") == [(0,)]
    assert rows(db, "SELECT count(*) FROM moves WHERE state = 'done'") == [(2,)]
