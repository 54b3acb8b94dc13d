"""Fixtures of the CLI tests: a synced simulated fleet, and a digest of its mirror."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Result  # tests/conftest.py (tests/ is on sys.path)

from xfleet import mirror

Cli = Callable[..., Result]


def digest(db: str | Path) -> str:
    """The mirror's nodes, pools and datasets, hashed: equal digests, untouched mirror (an
    SQLite path or a PostgreSQL URL)."""
    conn = mirror.connect(db, readonly=True)
    h = hashlib.sha256()
    try:
        for table in ("nodes", "pools", "datasets"):
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
                h.update(repr(tuple(row)).encode())
    finally:
        conn.close()
    return h.hexdigest()


@pytest.fixture
def synced(sim_fleet: Path, cli: Cli) -> Path:
    """The two-node sim fleet of tests/conftest.py, synced (its mirror: mirror.db beside it)."""
    r = cli("-i", str(sim_fleet), "sync", "--json")
    assert r.code == 0, r.err
    return sim_fleet


@pytest.fixture
def synced_at(sim_fleet: Path, mirror_at: str, cli: Cli) -> tuple[Path, str]:
    """The same fleet synced into `mirror_at` (each engine): (the inventory, which names that
    mirror, and the mirror's path or URL)."""
    text = sim_fleet.read_text()
    assert "mirror: mirror.db" in text, text
    sim_fleet.write_text(text.replace("mirror: mirror.db", f"mirror: {json.dumps(mirror_at)}"))
    r = cli("-i", str(sim_fleet), "sync", "--json")
    assert r.code == 0, f"xfleet sync exited {r.code}\n{r.err}"
    return sim_fleet, mirror_at
