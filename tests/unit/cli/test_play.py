"""`xfleet play` and `xfleet plays` (xfleet/cli/play.py) on the simulated fleet: a check, a run,
and its journal. The step kinds, validation and resume are tested in tests/unit/playbook/."""

from __future__ import annotations

from pathlib import Path

from .conftest import Cli

PLAYBOOK = """\
name: snapshot a tenant
vars:
  tenant: t0000
steps:
  - name: snapshot every volume of the tenant
    snapshot:
      select: {tenant: "{{ tenant }}", type: volume}
      name: before
"""


def test_check_then_run_then_the_journal(synced: Path, cli: Cli, tmp_path: Path) -> None:
    inv = str(synced)
    book = tmp_path / "snap.yaml"
    book.write_text(PLAYBOOK)
    check = cli("-i", inv, "play", str(book), "--check")
    assert check.code == 0, check.err
    assert ("step 1 (snapshot, line 6) snapshot every volume of the tenant: done, "
            "2 command(s)") in check.out
    assert "check: 1 step(s), 2 command(s); nothing was changed" in check.out
    assert cli("-i", inv, "ls", "--type", "snapshot", "*@before", "--count").out.strip() == "0"
    r = cli("-i", inv, "play", str(book), "--json")
    assert r.code == 0, r.err
    run = r.json()
    assert run["ok"] is True
    assert int(cli("-i", inv, "ls", "--type", "snapshot", "*@before", "--count").out) > 0
    runs = cli("-i", inv, "plays", "list", "--json").json()
    assert [(x["id"], x["name"], x["state"]) for x in runs] == [
        (run["run"], "snapshot a tenant", "done")]
    shown = cli("-i", inv, "plays", "show", str(run["run"]))
    assert shown.code == 0 and "snapshot every volume of the tenant" in shown.out
    bad = cli("-i", inv, "play", str(book), "--var", "no such=1")
    assert bad.code == 2 and "is not NAME=VALUE" in bad.err
