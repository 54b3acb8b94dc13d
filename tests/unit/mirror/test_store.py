"""Opening the mirror (xfleet/mirror/store.py): read-only access, clear errors, WAL readers."""

from pathlib import Path

import pytest

from xfleet import mirror
from xfleet.core.errors import MirrorError, UsageError
from xfleet.mirror.query import run_sql


def test_readonly_missing_mirror_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MirrorError) as exc:
        mirror.connect(tmp_path / "nope.db", readonly=True)
    assert "xfleet sync" in str(exc.value)
    assert not (tmp_path / "nope.db").exists()


def test_readonly_connection_refuses_writes(tmp_path: Path) -> None:
    mirror.connect(tmp_path / "m.db").close()
    ro = mirror.connect(tmp_path / "m.db", readonly=True)
    with pytest.raises(UsageError) as exc:
        run_sql(ro, "DELETE FROM datasets")
    assert "read-only" in str(exc.value)
    with pytest.raises(UsageError):
        run_sql(ro, "DROP TABLE datasets")
    assert ro.execute("SELECT count(*) FROM sqlite_master WHERE name='datasets'").fetchone()[0]


def test_reader_is_not_blocked_by_an_open_write_transaction(tmp_path: Path) -> None:
    p = tmp_path / "m.db"
    w = mirror.connect(p)
    w.execute("BEGIN IMMEDIATE")
    w.execute("INSERT INTO nodes (name, kind) VALUES ('n1', 'sim')")
    r = mirror.connect(p, readonly=True)
    r.execute("PRAGMA busy_timeout = 0")
    assert r.execute("SELECT count(*) FROM nodes").fetchone()[0] == 0  # sees the last commit
    w.execute("COMMIT")
    assert r.execute("SELECT count(*) FROM nodes").fetchone()[0] == 1


