"""The playbook tests' simulated fleet (tests/unit/playbook/plays.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unit.playbook.plays import Fleet, acme_fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return acme_fleet(tmp_path)


@pytest.fixture
def fleet_at(tmp_path: Path, mirror_at: str) -> Fleet:
    """The same fleet on each engine of the mirror (SQLite, PostgreSQL)."""
    return acme_fleet(tmp_path, mirror_at)
