"""Fixtures of the CLI tests: a synced simulated fleet, and a digest of its mirror."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Result  # tests/conftest.py (tests/ is on sys.path)

Cli = Callable[..., Result]


def digest(db: Path) -> str:
    """The mirror's nodes, pools and datasets, hashed: equal digests, untouched mirror."""
    conn = sqlite3.connect(db)
    h = hashlib.sha256()
    for table in ("nodes", "pools", "datasets"):
        for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
            h.update(repr(row).encode())
    return h.hexdigest()


@pytest.fixture
def synced(sim_fleet: Path, cli: Cli) -> Path:
    """The two-node sim fleet of tests/conftest.py, synced (its mirror: mirror.db beside it)."""
    r = cli("-i", str(sim_fleet), "sync", "--json")
    assert r.code == 0, r.err
    return sim_fleet
