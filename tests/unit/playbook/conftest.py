"""The playbook tests' simulated fleet (tests/unit/playbook/plays.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unit.playbook.plays import Fleet, acme_fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return acme_fleet(tmp_path)
