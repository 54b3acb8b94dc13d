"""What every command shares (xfleet/cli/output.py): the context's errors for a missing mirror
or inventory, and the output helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xfleet.cli import output
from xfleet.core.errors import UsageError

from .conftest import Cli


def test_missing_mirror_and_inventory_errors(cli: Cli, tmp_path: Path) -> None:
    for cmd in ("ls", "stats", "tui"):
        r = cli("-m", str(tmp_path / "none.db"), cmd)
        assert r.code == 1 and "xfleet sync" in r.err and "Traceback" not in r.err, cmd
    r = cli("ls", cwd=tmp_path)
    assert r.code == 2 and "--inventory" in r.err


def test_emit_writes_json_csv_and_tables(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"name": "tank/a", "used": 3 * 2**30, "origin": None},
            {"name": "tank/[/]b", "used": 0, "origin": "tank/a@s"}]
    assert output.emit([], iter(rows), "json") == 2
    assert json.loads(capsys.readouterr().out) == rows
    assert output.emit([], iter([]), "json") == 0
    assert capsys.readouterr().out == "[]\n"
    output.emit(["name", "origin"], rows, "csv")
    assert capsys.readouterr().out == "name,origin\ntank/a,\ntank/[/]b,tank/a@s\n"
    output.emit(["name", "used", "origin"], rows, "table", footer="2 rows")
    table = capsys.readouterr().out
    assert "NAME" in table and "3.00G" in table and "tank/[/]b" in table  # a value, not markup
    assert table.rstrip().endswith("2 rows")


def test_one_error_object_for_every_failure() -> None:
    doc = output.failed_doc({"ok": True, "id": 3, "error": "journaled text"}, "it failed",
                            where="n1", hint="xfleet moves resume 3")
    assert doc == {"ok": False, "id": 3, "error": {"message": "it failed", "where": "n1",
                                                    "hint": "xfleet moves resume 3"}}
    assert output.output_format(False, True) == "csv"
    with pytest.raises(UsageError, match="exclude each other"):
        output.output_format(True, True)
    assert output.format_value("compressratio", 1.5) == "1.50x"
    assert output.format_value("used", None) == "-"
