"""Random and hostile values at every parser and validator a user reaches (issue #16):
a clear error (UsageError and its kinds, with a message) or a correct result, never a
traceback. Property-based (hypothesis): each property is tried on a few hundred generated
values, edge cases first (empty, huge, NaN/inf, control characters, trailing newlines)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from xfleet import playbook
from xfleet.core import names, zfs
from xfleet.core.errors import XfleetError
from xfleet.core.units import MAX_SIZE, parse_size
from xfleet.fleet import inventory
from xfleet.mirror import query
from xfleet.ops import initiator

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# what a user types: anything, with the characters that break naive parsers made likely
hostile_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="0123456789.eE+-KMGTPkmgtpiBb \t\n\x00nanif", max_size=40),
    st.sampled_from(["", "\n", "nan", "inf", "-inf", "1e999", "9" * 40, "-" + "9" * 40,
                     "8E", "9E", "0.5K", "1.5T\n", "10G ", "tank\n", "tank/a\n", "a\x00b"]),
)
hostile_number = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 2**63, 2**63 - 1, -(2**63) - 1, 1e308, float("nan")]),
)


def _clear(exc: XfleetError) -> None:
    assert exc.message and "Traceback" not in str(exc)


@SETTINGS
@given(hostile_text)
@example("9" * 40 + "P")
def test_sizes(text: str) -> None:
    try:
        n = parse_size(text)
    except XfleetError as exc:
        _clear(exc)
        return
    assert isinstance(n, int) and 0 <= n <= MAX_SIZE
    assert "\n" not in text and "\x00" not in text


@SETTINGS
@given(st.sampled_from(["used", "volsize", "createtxg", "compressratio", "name", "tenant",
                        "type", "origin", "nosuchcolumn", ""]),
       st.sampled_from([">", "<", "=", "!=", ">=", "~", ""]), hostile_text)
def test_where_expressions(column: str, op: str, value: str) -> None:
    try:
        cond = query.parse_where(f"{column}{op}{value}")
    except XfleetError as exc:
        _clear(exc)
        return
    v = cond.value
    if isinstance(v, int):
        assert -(2**63) <= v < 2**63
    if isinstance(v, float):
        assert math.isfinite(v)


@SETTINGS
@given(hostile_text)
@example("tank/a\n")
@example("tank/" + "a" * 300)
def test_dataset_and_pool_names(text: str) -> None:
    for check in (names.validate_dataset, names.validate_pool):
        try:
            out = check(text)
        except XfleetError as exc:
            _clear(exc)
            continue
        assert out == text and "\n" not in out and "\x00" not in out


@SETTINGS
@given(hostile_text)
@example("xfleet:tenant\n")
def test_user_properties(text: str) -> None:
    try:
        out = zfs.validate_user_property(text)
    except XfleetError as exc:
        _clear(exc)
        return
    assert ":" in out and "\n" not in out


@SETTINGS
@given(hostile_text, hostile_text, hostile_number)
@example("nqn.2026-01.io.xfleet:n1:tank.v\n", "10.0.0.1", 30)
@example("nqn.x", "10.0.0.1", float("nan"))
def test_nvme_connect_arguments(nqn: str, address: str, seconds: float) -> None:
    try:
        argv = initiator.connect_argv(address, 4420, nqn, ctrl_loss_tmo=seconds)
    except XfleetError as exc:
        _clear(exc)
        return
    assert all("\n" not in a for a in argv)


@SETTINGS
@given(st.sampled_from(["parallel", "price_per_gb_month", "space_refresh_interval",
                        "space_refresh_budget", "move_bwlimit"]), hostile_number)
def test_inventory_fleet_numbers(tmp_path_factory: pytest.TempPathFactory, key: str,
                                 value: float) -> None:
    _load_inventory(tmp_path_factory.mktemp("inv"), fleet_vars={key: value})


@SETTINGS
@given(st.sampled_from(["port", "connect_timeout", "command_timeout", "connect_retries",
                        "max_streams", "bwlimit"]), st.one_of(hostile_number, hostile_text))
def test_inventory_host_settings(tmp_path_factory: pytest.TempPathFactory, key: str,
                                 value: object) -> None:
    _load_inventory(tmp_path_factory.mktemp("inv"), host={key: value})


@SETTINGS
@given(st.one_of(hostile_text, st.just("")))
def test_inventory_host_names(tmp_path_factory: pytest.TempPathFactory, name: str) -> None:
    inv = _load_inventory(tmp_path_factory.mktemp("inv"), name=name)
    if inv is not None:
        assert name in inv.hosts and name.strip() == name and name


def _load_inventory(tmp: Path, *, name: str = "n1", fleet_vars: dict[str, object] | None = None,
                    host: dict[str, object] | None = None) -> inventory.Inventory | None:
    fleet_vars, host = fleet_vars or {}, host or {}
    doc = {"all": {"vars": {"mirror": "m.db", **fleet_vars},
                   "hosts": {name: {"kind": "ssh", "address": "10.0.0.1", **host}}}}
    path = tmp / "fleet.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        inv = inventory.load(path)
    except XfleetError as exc:
        _clear(exc)
        assert exc.where and exc.where.startswith(str(path)), exc
        return None
    for key, value in {**fleet_vars, **host}.items():
        if isinstance(value, float):
            assert math.isfinite(value), (key, value)
    return inv


@SETTINGS
@given(st.one_of(hostile_number, hostile_text), st.one_of(hostile_number, hostile_text))
def test_playbook_values(tmp_path_factory: pytest.TempPathFactory, concurrency: object,
                         max_rows: object) -> None:
    path = tmp_path_factory.mktemp("pb") / "p.yaml"
    doc = {"name": "hostile", "steps": [
        {"query": {"sql": "SELECT 1", "max_rows": max_rows}, "concurrency": concurrency},
        {"run": {"argv": ["echo", concurrency], "nodes": ["n1"]}}]}
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        playbook.load(path)
    except XfleetError as exc:
        _clear(exc)
