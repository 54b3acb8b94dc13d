"""The service's read connections (xfleet/serve/readers.py): one per thread, and a connection
that failed is replaced by the next read (a restarted server, a replaced file)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from xfleet import mirror
from xfleet.mirror.backend import DatabaseError, location
from xfleet.serve.readers import Readers


def test_one_connection_per_thread_and_a_failed_one_is_replaced(tmp_path: Path,
                                                                 mirror_at: str) -> None:
    mirror.connect(mirror_at).close()  # create it
    r = Readers(location(mirror_at))
    with r.read() as a:
        assert a.execute("SELECT count(*) FROM nodes").fetchone()[0] == 0
    with r.read() as b:
        assert b is a  # the same thread keeps its connection
    other: list[object] = []
    th = threading.Thread(target=lambda: other.append(r.read().__enter__()))
    th.start()
    th.join()
    assert other and other[0] is not a
    with pytest.raises((sqlite3.Error, DatabaseError)), r.read() as c:
        c.execute("SELECT no_such_column FROM nodes")
    assert r.errors == 1
    with r.read() as d:
        assert d is not a and d.execute("SELECT count(*) FROM pools").fetchone()[0] == 0
    r.close()
