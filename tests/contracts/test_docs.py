"""Everything a user can name is documented: every CLI command (in docs/ or the README, as a
session line `xfleet ...`), every inventory setting (docs/inventory.md) and every source of
the dashboard's operations view (docs/tui.md). Playbook step kinds: tests/unit/playbook/
test_steps.py; mirror tables and columns: tests/unit/mirror/test_schema.py."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
from conftest import ROOT

from xfleet.cli.main import cli
from xfleet.fleet import inventory
from xfleet.tui import operations


def _commands(group: click.Group, path: list[str]) -> Iterator[list[str]]:
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, [*path, name])
        else:
            yield [*path, name]


def _docs() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))) + \
        (ROOT / "README.md").read_text()


def test_every_cli_command_appears_in_the_docs() -> None:
    docs = _docs()
    missing = []
    for path in _commands(cli, []):
        # global options may stand between `xfleet` and the command (xfleet -i demo.yaml ls)
        pattern = r"xfleet(?:\s+-[im]\s+\S+)*\s+" + r"\s+".join(map(re.escape, path)) + r"\b"
        if not re.search(pattern, docs):
            missing.append("xfleet " + " ".join(path))
    assert len(list(_commands(cli, []))) > 40
    assert missing == []


def test_every_inventory_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "inventory.md").read_text()
    keys = [*inventory.HOST_KEYS, *inventory.FLEET_KEYS, *inventory.GROUP_KEYS]
    assert [k for k in keys if f"`{k}`" not in doc] == []


def test_every_operations_source_of_the_dashboard_is_documented() -> None:
    doc = (ROOT / "docs" / "tui.md").read_text()
    assert operations.sources()
    assert [s for s in operations.sources() if s not in doc] == []
