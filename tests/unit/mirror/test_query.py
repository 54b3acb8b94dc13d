"""Filter expressions and selections compile to the SQL the mirror's indexes answer."""

import pytest

from xfleet.core.errors import UsageError
from xfleet.mirror.query import Condition, Selection, parse_where


@pytest.mark.parametrize(
    ("expr", "cond"),
    [
        ("used>10G", Condition("used", ">", 10 * 2**30)),
        ("used >= 1.5T", Condition("used", ">=", int(1.5 * 2**40))),
        ("compression=off", Condition("compression", "=", "off")),
        ("compressratio<1.2", Condition("compressratio", "<", 1.2)),
        ("compressratio<1.2x", Condition("compressratio", "<", 1.2)),
        ("origin=none", Condition("origin", "=", None)),
        ("origin!=-", Condition("origin", "!=", None)),
        ("name~*db*", Condition("name", "~", "*db*")),
        ("xfleet:tenant=t0001", Condition("tenant", "=", "t0001")),
        ("type=vol", Condition("type", "=", "volume")),
        ("createtxg>100", Condition("createtxg", ">", 100)),
    ],
)
def test_parse_where(expr: str, cond: Condition) -> None:
    assert parse_where(expr) == cond


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("usd>10G", "did you mean 'used'"),
        ("used>>10G", "not a valid value"),
        ("used>ten", "not a valid value"),
        ("used~10G", "text columns"),
        ("just words", "cannot read the condition"),
        ("createtxg>1.5", "not a valid value"),
    ],
)
def test_parse_where_errors(expr: str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_where(expr)
    assert message in str(exc.value)


def test_null_comparison_needs_equality() -> None:
    with pytest.raises(UsageError):
        parse_where("used>none").sql()


def test_selection_sql_binds_values_never_inlines_them() -> None:
    sel = Selection(nodes=["n1"], types=["volume"], where=["used>10G"],
                    pattern="x'; DROP TABLE datasets; --", sort="-used", limit=50)
    sql, params = sel.sql()
    assert "DROP" not in sql
    assert params == ["n1", "volume", "x'; DROP TABLE datasets; --", 10 * 2**30]
    assert sql.endswith("ORDER BY used DESC LIMIT 50")


def test_selection_types_and_clones() -> None:
    where, params = Selection(types=["clone"]).compile()
    assert where == "origin IS NOT NULL" and params == []
    where, params = Selection(types=["snap", "clone"]).compile()
    assert where == "(type = ? OR origin IS NOT NULL)" and params == ["snapshot"]
    with pytest.raises(UsageError):
        Selection(types=["zvolume"]).compile()


def test_selection_origin_of_dataset_is_a_range() -> None:
    where, params = Selection(origin="tank/a").compile()
    assert where == "origin >= ? AND origin < ?"
    assert params == ["tank/a@", "tank/aA"]


def test_sort_specs() -> None:
    assert Selection(sort="used").order_by() == "used ASC"
    assert Selection(sort="used", desc=True).order_by() == "used DESC"
    assert Selection(sort="-used").order_by() == "used DESC"
    assert Selection(sort="name:desc").order_by() == "name DESC"
    with pytest.raises(UsageError):
        Selection(sort="size").order_by()


def test_label_filter_needs_key_value() -> None:
    with pytest.raises(UsageError):
        Selection(labels=["zone"]).compile()
    where, params = Selection(labels=["zone=a"]).compile()
    assert "json_extract" in where and params == ['$."zone"', "a"]
