"""Templates, variables and conditions: a one-template string keeps its value's type, SQL
binds values as parameters, conditions evaluate on the mirror."""

from __future__ import annotations

import sqlite3

import pytest

from xfleet import playbook


def test_templates_keep_types_and_bind_sql() -> None:
    v = {"rows": [{"name": "tank/a", "n": 3}], "s": "x'; DROP TABLE datasets; --"}
    assert playbook.render("{{ rows }}", v) == v["rows"]
    assert playbook.render("{{ rows.0.name }}@snap", v) == "tank/a@snap"
    sql, params = playbook.bind("SELECT * FROM datasets WHERE name = {{ s }}", v)
    assert sql == "SELECT * FROM datasets WHERE name = ?" and params == [v["s"]]
    with pytest.raises(playbook.PlaybookError, match="'nope' is not in the value"):
        playbook.render("{{ rows.0.nope }}", v)



def test_a_condition_binds_its_values_and_names_a_bad_expression() -> None:
    conn = sqlite3.connect(":memory:")
    v = {"rows": [1, 2, 3], "s": "x' OR 1 = 1 --"}
    assert playbook.condition(conn, "{{ rows }} = 3", v, "pb.yaml:1")  # a list: its length
    assert not playbook.condition(conn, "{{ s }} = 'x'", v, "pb.yaml:1")  # bound, not pasted
    with pytest.raises(playbook.PlaybookError, match="cannot evaluate") as exc:
        playbook.condition(conn, "{{ rows }} >", v, "pb.yaml:7")
    assert exc.value.where == "pb.yaml:7"
