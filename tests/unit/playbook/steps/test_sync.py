"""The `sync` and `query` step kinds: a query's rows are registered and bounded by max_rows, a
sync names unknown nodes in --check too."""

from __future__ import annotations

from pathlib import Path

from unit.playbook.plays import Fleet, play_file, write
from xfleet import mirror, playbook


def test_a_query_registers_its_rows_and_is_bounded(fleet: Fleet, tmp_path: Path) -> None:
    inv, _, _ = fleet
    text = ("- query: {{sql: \"SELECT name FROM datasets WHERE tenant = 'acme' ORDER BY name\""
            "{max_rows}}}\n  register: vols\n"
            "- assert: {{that: \"{{{{ vols }}}} = 3 AND {{{{ vols.0.name }}}} = "
            "'tank/acme/cache'\"}}\n")
    report = play_file(inv, write(tmp_path, text.format(max_rows="")))
    assert report.ok, report.to_dict()
    assert playbook.show(mirror.connect(inv.mirror), report.run_id or 0)["steps"][0]["items"] == 1
    bounded = play_file(inv, write(tmp_path, text.format(max_rows=", max_rows: 2")))
    assert bounded.state == "failed"
    assert "query: more than 2 rows" in (bounded.steps[0].error or "")


def test_a_sync_step_refuses_an_unknown_node_in_check_mode_too(fleet: Fleet,
                                                               tmp_path: Path) -> None:
    inv, _, _ = fleet
    path = write(tmp_path, "- sync: {nodes: [n1, n9]}\n")
    for check in (True, False):
        report = play_file(inv, path, check=check)
        assert report.state == "failed" and "n9" in (report.steps[0].error or "")
    ok = play_file(inv, write(tmp_path, "- sync: {nodes: [n1], full: true}\n"), check=True)
    assert ok.ok and ok.steps[0].notes == ["sync n1 (full)"]
