"""Connections (xfleet/fleet/connections.py): one transport per node, the node kinds, and
`each` across nodes. Its use over real SSH is tested in tests/ssh/test_ssh.py."""

from __future__ import annotations

from xfleet.core.errors import UsageError
from xfleet.fleet.connections import NODE_KINDS, Connections
from xfleet.remote.host import Host
from xfleet.remote.local import LocalTransport


def test_each_returns_results_in_order_and_errors_per_node() -> None:
    hosts = {n: Host(n, kind="local") for n in ("a", "b", "c")}

    def work(node: str, transport: object) -> str:
        if node == "b":
            raise UsageError("b refuses")
        assert isinstance(transport, LocalTransport)
        return node.upper()

    with Connections(hosts) as conns:
        res = conns.each(["c", "a", "b", "a"], work, parallel=2)
    assert [(r.node, r.value, r.ok) for r in res] == [("c", "C", True), ("a", "A", True),
                                                     ("b", None, False)]
    assert res[2].error is not None and res[2].error.message == "b refuses"


def test_node_kinds_and_unknown_nodes() -> None:
    assert set(NODE_KINDS) == {"ssh", "local", "sim"}
    with Connections({"n1": Host("n1", kind="local")}) as conns:
        assert isinstance(conns.get("n1"), LocalTransport)
        try:
            conns.get("nope")
        except UsageError as exc:
            assert "no node named 'nope'" in exc.message
        else:
            raise AssertionError("an unknown node was opened")
