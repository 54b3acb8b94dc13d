"""Connections (xfleet/fleet/connections.py): one transport per node, the node kinds, and
`each` across nodes. Its use over real SSH is tested in tests/ssh/test_ssh.py."""

from __future__ import annotations

import subprocess
import sys

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


# A process's SIGINT may be delivered to any of its threads. One caught by a worker must still
# stop `each` at once: the main thread's wait for the workers must wake up to run the handler.
CTRL_C_IN_A_WORKER = """
import signal, sys, threading
from xfleet.fleet.connections import Connections
from xfleet.remote.host import Host
signal.signal(signal.SIGINT, signal.default_int_handler)
started, release, finished = threading.Event(), threading.Event(), threading.Event()
worker = []
def work(node, transport):
    worker.append(threading.get_ident())
    started.set()
    release.wait(20)  # a node still listing (minutes at 100k datasets)
    finished.set()
    return node
def ctrl_c():
    started.wait(60)
    signal.pthread_kill(worker[0], signal.SIGINT)  # the signal lands in the worker thread
threading.Thread(target=ctrl_c, daemon=True).start()
with Connections({"n1": Host("n1", kind="local")}) as conns:
    try:
        conns.each(["n1"], work)
    except KeyboardInterrupt:
        print("interrupted while the node still worked:", not finished.is_set())
        release.set()
        sys.exit(130)
print("not interrupted")
"""


def test_ctrl_c_caught_by_a_worker_thread_stops_each_before_the_node_finishes() -> None:
    res = subprocess.run([sys.executable, "-c", CTRL_C_IN_A_WORKER], capture_output=True,
                         text=True, timeout=300, check=False)
    assert res.returncode == 130, (res.returncode, res.stdout, res.stderr[-2000:])
    assert res.stdout.strip() == "interrupted while the node still worked: True", res.stdout
