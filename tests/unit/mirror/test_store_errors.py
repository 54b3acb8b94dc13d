"""A mirror that cannot be used is one clear error, never a traceback (issue #16): not a
database, on a read-only filesystem (reading commands still work), on a full disk (the
SQLite error itself, not a failed ROLLBACK hiding it). The filesystems are real: a read-only
bind mount and a small tmpfs (the suite runs as root, as `make test` does)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import run_cli, write_sim_inventory


@contextmanager
def mounted(argv: list[str], where: Path) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run([*argv, str(where)], check=True, capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def _one_clear_line(res_err: str, what: str) -> None:
    assert "Traceback" not in res_err and "internal error" not in res_err, res_err
    assert what in res_err, res_err
    assert "hint:" in res_err


def test_a_file_that_is_not_a_mirror(tmp_path: Path) -> None:
    inv = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 1, "volumes": 5}})
    bogus = tmp_path / "notes.txt"
    bogus.write_text("root:x:0:0:root:/root:/bin/bash\n" * 200)
    for args in (["ls"], ["sql", "SELECT 1"], ["sync"], ["status"]):
        res = run_cli("-i", str(inv), "-m", str(bogus), *args)
        assert res.code == 1, (args, res.code, res.err)
        _one_clear_line(res.err, "not an xfleet mirror")
    assert bogus.read_text().startswith("root:x")  # untouched


def test_a_mirror_on_a_read_only_filesystem_is_read_not_written(tmp_path: Path) -> None:
    inv = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 1, "volumes": 20}})
    assert run_cli("-i", str(inv), "sync").code == 0
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "mirror.db").write_bytes((tmp_path / "mirror.db").read_bytes())
    with mounted(["mount", "--bind", str(ro)], ro):
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        db = str(ro / "mirror.db")
        for args in (["ls", "--json"], ["sql", "SELECT count(*) AS n FROM datasets", "--json"],
                     ["status", "--json"]):
            res = run_cli("-i", str(inv), "-m", db, *args)
            assert res.code == 0, (args, res.err)
            assert res.json(), args
        res = run_cli("-i", str(inv), "-m", db, "sync")
        assert res.code == 1
        _one_clear_line(res.err, "the mirror is read-only here")
        res = run_cli("-i", str(inv), "-m", str(ro / "sub" / "mirror.db"), "sync")
        assert res.code == 1
        _one_clear_line(res.err, "cannot create the mirror's directory")


def test_a_full_disk_is_reported_as_a_full_disk(tmp_path: Path) -> None:
    with mounted(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs"], tmp_path / "small"):
        inv = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 1, "volumes": 2000}})
        db = str(tmp_path / "small" / "mirror.db")
        res = run_cli("-i", str(inv), "-m", db, "sync", "--json")
        assert res.code == 1, res.err
        assert "cannot rollback" not in res.out + res.err
        doc = res.json()
        assert doc["ok"] is False
        assert ("disk is full" in doc["error"]["message"]
                or "No space left" in doc["error"]["message"]), doc
        assert "df -h" in doc["error"]["hint"]
        _one_clear_line(res.err, "error:")
