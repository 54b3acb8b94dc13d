"""The `replicate:` key of snapshot policies (xfleet/ops/snapshots/policy.py; standing replicas,
docs/replicate.md): what it reads as, and each mistake named by file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from xfleet.ops.snapshots.policy import SnapshotPolicyError, load_policies, parse_policies

HEAD = "policies:\n  - name: app\n    schedule: {every: 15m}\n    keep: {hourly: 24}\n"


def test_replicate_targets_read_as_written() -> None:
    ps = parse_policies(HEAD + "    match: {node: n1}\n    replicate:\n"
                        "      - {node: n2, pool: tank, rpo: 1h}\n"
                        "      - {node: n3, pool: big, rpo: 2h, root: big/backup/n1}\n"
                        "  - name: rest\n    schedule: {every: 1h}\n    keep: {hourly: 1}\n")
    app, rest = ps.policies
    a, b = app.replicate
    assert (a.node, a.pool, a.rpo, a.root, a.line) == ("n2", "tank", 3600, None, 7)
    assert (b.node, b.pool, b.rpo, b.root, b.line) == ("n3", "big", 7200, "big/backup/n1", 8)
    assert a.target_volume("tank/t1/vol") == "tank/t1/vol"
    assert b.target_volume("tank/t1/vol") == "big/backup/n1/t1/vol"
    assert rest.replicate == []
    assert app.to_dict()["replicate"][1] == {"node": "n3", "pool": "big", "rpo": 7200,
                                             "root": "big/backup/n1"}


@pytest.mark.parametrize(("tail", "line", "words"), [
    ("    replicate: []\n", 5, "replicate is empty"),
    ("    replicate: [n2]\n", 5, "a replicate target is a mapping"),
    ("    replicate: [{node: n2, pool: tank, rpo: 1h, colour: red}]\n", 5,
     "unknown replicate key 'colour'"),
    ("    replicate: [{nodes: n2, pool: tank, rpo: 1h}]\n", 5, "unknown replicate key 'nodes'"),
    ("    replicate: [{pool: tank, rpo: 1h}]\n", 5, "replicate target has no 'node'"),
    ("    replicate:\n      - {node: n2, rpo: 1h}\n", 6, "replicate target has no 'pool'"),
    ("    replicate:\n      - {node: n2, pool: tank}\n", 6, "replicate target has no 'rpo'"),
    ("    replicate: [{node: 2, pool: tank, rpo: 1h}]\n", 5, "replicate node must be a name"),
    ("    replicate: [{node: n2, pool: tank, rpo: soon}]\n", 5, "rpo"),
    ("    replicate: [{node: n2, pool: tank/backup, rpo: 1h}]\n", 5,
     "replicate pool 'tank/backup' is a dataset, not a pool"),
    ("    replicate: [{node: n2, pool: 'tank@x', rpo: 1h}]\n", 5, "tank@x"),
    ("    replicate: [{node: n2, pool: tank, rpo: 1h, root: big/backup}]\n", 5,
     "replicate root 'big/backup' is not in pool 'tank'"),
    ("    replicate: [{node: n2, pool: tank, rpo: 5m}]\n", 5,
     "rpo 5m is shorter than the schedule's period (15 min)"),
    ("    replicate:\n      - {node: n2, pool: tank, rpo: 1h}\n"
     "      - {node: n2, pool: big, rpo: 2h}\n", 7, "replicates to 'n2' twice"),
])
def test_replicate_mistakes_name_the_file_and_line(tmp_path: Path, tail: str, line: int,
                                                   words: str) -> None:
    path = tmp_path / "snapshots.yaml"
    path.write_text(HEAD + tail)
    with pytest.raises(SnapshotPolicyError) as exc:
        load_policies(path)
    assert exc.value.where == f"{path}:{line}", (exc.value.where, exc.value.message)
    assert words in exc.value.message and "'app'" in exc.value.message, exc.value.message


def test_an_unknown_replicate_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = tmp_path / "snapshots.yaml"
    path.write_text(HEAD + "    replicate: [{node: n2, pool: tank, rop: 1h}]\n")
    with pytest.raises(SnapshotPolicyError) as exc:
        load_policies(path)
    assert "unknown replicate key 'rop'" in exc.value.message
    assert "rpo" in (exc.value.hint or "")
