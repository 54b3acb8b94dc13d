"""Commands with binary stdin/stdout on a simulated node (xfleet/sim/process.py): a relay
streams `zfs send` from one node into `zfs receive` on another, counting every byte; a
receive killed mid-stream keeps what it got (with -s); a closed transport ends a process like
a dropped connection; a node without a data path refuses."""

from __future__ import annotations

import pytest

from xfleet.core.errors import UsageError
from xfleet.remote.relay import TokenBucket, relay
from xfleet.remote.transport import ProcessGone
from xfleet.sim import SimTransport

from .simkit import ok, sim


def _pair() -> tuple[SimTransport, SimTransport]:
    a, b = sim(0, node="n1", seed=1), sim(0, node="n2", seed=2)
    ok(a, "zfs", "create", "-s", "-V", "1G", "tank/v")
    a.write("tank/v", 3 << 20)
    ok(a, "zfs", "snapshot", "tank/v@s")
    return a, b


def test_a_relay_moves_the_whole_stream_and_both_ends_succeed() -> None:
    a, b = _pair()
    size = int(ok(a, "zfs", "send", "-n", "-P", "tank/v@s").split("size\t")[1])
    before = (a.commands, b.commands)
    seen: list[int] = []
    res = relay(a, ["zfs", "send", "tank/v@s"], b, ["zfs", "receive", "tank/v"],
                progress=seen.append, limits=[TokenBucket(1 << 40)])
    assert res.ok and res.bytes == size == sum(seen), res
    assert (a.commands - before[0], b.commands - before[1]) == (1, 1)  # a process is counted
    guid = ok(a, "zfs", "get", "-H", "-o", "value", "guid", "tank/v@s")
    assert ok(b, "zfs", "get", "-H", "-o", "value", "guid", "tank/v@s") == guid


def test_a_receive_killed_mid_stream_keeps_a_partial_receive() -> None:
    a, b = _pair()
    send = a.start(["zfs", "send", "tank/v@s"])
    recv = b.start(["zfs", "receive", "-s", "tank/v"])
    recv.write(send.read(1 << 20))
    recv.write(send.read(1 << 20))
    recv.kill()
    send.kill()
    assert recv.wait() == -1 and send.wait() == -1
    with pytest.raises(ProcessGone):
        recv.write(b"more")
    token = ok(b, "zfs", "get", "-H", "-o", "value", "receive_resume_token", "tank/v").strip()
    assert token.startswith("1-")
    res = relay(a, ["zfs", "send", "-t", token], b, ["zfs", "receive", "-s", "tank/v"])
    assert res.ok, res
    assert ok(b, "zfs", "list", "-H", "-o", "name", "-t", "snapshot", "tank/v") == "tank/v@s\n"


def test_output_that_is_not_a_stream_is_read_too() -> None:
    a, _ = _pair()
    p = a.start(["zfs", "list", "-H", "-o", "name", "tank/v"])
    assert p.read(3) == b"tan" and p.poll() is None  # the rest is still in the pipe
    assert p.read() == b"k/v\n" and p.read() == b"" and p.wait() == 0
    bad = a.start(["zfs", "send", "tank/v@nope"])
    assert bad.read() == b"" and bad.wait() == 1
    assert bad.stderr() == "cannot open 'tank/v@nope': dataset does not exist\n"


def test_a_closed_transport_ends_its_processes() -> None:
    a, b = _pair()
    send = a.start(["zfs", "send", "tank/v@s"])
    assert send.read(10)
    a.close()
    assert send.read(10) == b"" and send.wait() == -1


def test_a_node_without_a_data_path_refuses_to_start() -> None:
    t = sim(3, data_path=False)
    with pytest.raises(UsageError, match="the simulator has no data path"):
        t.start(["zfs", "receive", "tank/v"])
    assert t.commands == 0
