"""Snapshot policy files (xfleet/ops/snapshots/policy.py): the format, and file:line errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from xfleet.ops.snapshots.policy import SnapshotPolicyError, load_policies, parse_policies

GOOD = """\
policies:
  - name: db
    match: {labels: {zone: a}, name: "tank/t00*/*"}
    schedule: {every: 15m}
    timezone: Europe/Berlin
    keep: {frequently: 4, hourly: 24, daily: 7, at_least: 2}
  - name: rest
    schedule: {daily: "02:30"}
    keep: {daily: 7, weekly: 4}
"""


def test_a_policy_file_reads_as_written() -> None:
    ps = parse_policies(GOOD)
    db, rest = ps.policies
    assert (db.name, db.line, db.schedule.period, db.schedule.tz) == ("db", 2, 900,
                                                                      "Europe/Berlin")
    assert (db.keep.frequently, db.keep.hourly, db.keep.at_least) == (4, 24, 2)
    assert db.match == {"labels": {"zone": "a"}, "name": ["tank/t00*/*"]}
    assert rest.match == {} and rest.schedule.daily == (2, 30)
    assert db.snapshot_name(1772409600) == "xfleet_db_2026-03-02_00:00:00Z"
    assert ps.get("rest") is rest
    sql, params = ps.compile()
    assert sql.startswith("CASE WHEN") and params[-1] == "rest"


@pytest.mark.parametrize(("text", "line", "words"), [
    ("policies: []\n", 1, "non-empty list"),
    ("rules: []\n", 1, "'policies:' list"),
    ("policies:\n  - name: a b\n    schedule: {every: 1h}\n    keep: {hourly: 1}\n", 2,
     "policy name 'a b' is not valid"),
    ("policies:\n  - name: a\n    schedule: {every: 7m}\n    keep: {hourly: 1}\n", 3,
     "does not divide a day"),
    ("policies:\n  - name: a\n    schedule: {every: 1h}\n    keep: {hourly: -1}\n", 4,
     "must be a count"),
    ("policies:\n  - name: a\n    schedule: {every: 1h}\n    keep: {hourli: 1}\n", 4,
     "unknown keep key 'hourli'"),
    ("policies:\n  - name: a\n    schedule: {every: 1h}\n    keep: {at_least: 3}\n", 4,
     "keeps nothing"),
    ("policies:\n  - name: a\n    schedule: {every: 1h}\n    keep: {hourly: 1}\n"
     "    timezone: Mars/Base\n", 3, "unknown time zone"),
    ("policies:\n  - name: a\n    schedule: {every: 1h}\n    keep: {hourly: 1}\n"
     "  - name: b\n    schedule: {every: 1h}\n    keep: {hourly: 1}\n", 5, "can never match"),
    ("policies:\n  - name: a\n    scheduel: {every: 1h}\n", 3, "unknown key 'scheduel'"),
    ("policies:\n  - name: a\n    match: {colour: red}\n    schedule: {every: 1h}\n"
     "    keep: {hourly: 1}\n", 3, "policy 'a': unknown match key 'colour'"),
])
def test_mistakes_name_the_file_and_line(tmp_path: Path, text: str, line: int,
                                         words: str) -> None:
    path = tmp_path / "snapshots.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(SnapshotPolicyError) as exc:
        load_policies(path)
    assert exc.value.where == f"{path}:{line}", (exc.value.where, exc.value.message)
    assert words in exc.value.message


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SnapshotPolicyError, match="does not exist"):
        load_policies(tmp_path / "nope.yaml")
