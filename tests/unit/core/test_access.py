"""The xfleet:hosts property's value: sorted host NQNs, `none` when closed, absent = open."""

from __future__ import annotations

from xfleet.core.access import CLOSED, hosts_value, parse_hosts_value


def test_hosts_value_round_trips() -> None:
    assert hosts_value(["nqn.b", "nqn.a", "nqn.b"]) == "nqn.a,nqn.b"
    assert hosts_value([]) == CLOSED == "none"
    assert parse_hosts_value("nqn.b,nqn.a,") == ("nqn.a", "nqn.b")
    assert parse_hosts_value(CLOSED) == ()
    assert parse_hosts_value("-") is None and parse_hosts_value("") is None
    assert parse_hosts_value(None) is None
