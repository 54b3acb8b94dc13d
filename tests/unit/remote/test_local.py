"""LocalTransport (commands on this machine) and the argv -> shell line boundary."""

from __future__ import annotations

import random
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from conftest import finishes, wait_for
from sshd import process_running

from xfleet.core.errors import CommandTimeout, RemoteCommandError, TransportError, UsageError
from xfleet.fleet.connections import Connections, open_transport
from xfleet.remote.host import Host
from xfleet.remote.local import LocalTransport
from xfleet.remote.transport import Transport, quote_command


def wait_until_gone(pattern: str) -> None:
    wait_for(lambda: not process_running(pattern), f"no process running {pattern!r}")


def unique_sleep() -> str:
    """A `sleep` argument no other process has, so a /proc scan finds only ours."""
    return f"30.{random.randrange(10**8):08d}"


def test_lines_stream_before_the_command_ends(tmp_path: Path) -> None:
    # The command cannot end before the test lets it (`go`), and the test never does: so the
    # first line arrived before the end, and close() stopped the command instead of waiting.
    t = LocalTransport("here")
    go, arg = tmp_path / "go", unique_sleep()
    stream = t.lines(["sh", "-c", f"echo first; while [ ! -e {go} ]; do sleep {arg}; done"])
    try:
        assert finishes(lambda: next(stream), "the first line") == "first"
        finishes(stream.close, "close() of a stream whose command goes on")
        wait_until_gone(f"sleep {arg}")
    finally:
        go.touch()


def test_big_output_streams_in_order() -> None:
    t = LocalTransport("here")
    count = 0
    for i, line in enumerate(t.lines(["seq", "1", "200000"]), start=1):
        assert line == str(i)
        count += 1
    assert count == 200000


def test_no_final_newline_and_invalid_utf8() -> None:
    assert list(LocalTransport("here").lines(["printf", "a\\nb\\377c"])) == ["a", "b\ufffdc"]


def test_exit_status_and_stderr() -> None:
    t = LocalTransport("here")
    with pytest.raises(RemoteCommandError) as exc:
        t.run(["sh", "-c", "echo 'no such pool: tonk' >&2; exit 2"])
    assert exc.value.exit_status == 2
    assert exc.value.stderr == "no such pool: tonk\n"
    assert str(exc.value).startswith("here: sh exited with status 2: no such pool: tonk")

    result = t.run(["sh", "-c", "echo out; exit 5"], check=False)
    assert (result.exit_status, result.stdout, result.ok) == (5, "out\n", False)

    stream = t.lines(["sh", "-c", "echo one; exit 1"])
    assert next(stream) == "one"
    with pytest.raises(RemoteCommandError):
        next(stream)


def test_missing_program() -> None:
    with pytest.raises(TransportError, match="command not found: no-such-program-xfleet"):
        LocalTransport("here").run(["no-such-program-xfleet"])


def test_stdin() -> None:
    t = LocalTransport("here")
    assert t.run(["wc", "-c"], stdin=b"z" * 1_000_000).stdout.strip() == "1000000"
    data = b"".join(b"%d\n" % i for i in range(300_000))  # more than any pipe buffer, both ways
    out = list(t.lines(["cat"], stdin=data))
    assert len(out) == 300_000 and out[-1] == "299999"


def test_timeout_stops_the_whole_command() -> None:
    arg = unique_sleep()
    t = LocalTransport("here")
    # the timeout, not the end of the 30 s sleep (then `never` would be the output), ended it
    with pytest.raises(CommandTimeout, match="no output from sh for 0.5s"):
        t.run(["sh", "-c", f"sleep {arg}; echo never"], timeout=0.5)
    wait_until_gone(f"sleep {arg}")  # the shell's child too


def test_timeout_counts_silence_not_total_time() -> None:
    t = LocalTransport("here")
    start = time.monotonic()
    out = t.run(["sh", "-c", "for i in 1 2 3 4 5; do echo $i; sleep 0.2; done"], timeout=0.8)
    assert time.monotonic() - start > 0.9  # longer than the timeout in total
    assert out.stdout == "1\n2\n3\n4\n5\n"


def test_closing_early_stops_the_whole_command() -> None:
    arg = unique_sleep()
    stream = LocalTransport("here").lines(["sh", "-c", f"echo go; sleep {arg}; echo never"])
    assert next(stream) == "go"
    assert process_running(f"sleep {arg}")
    stream.close()
    wait_until_gone(f"sleep {arg}")


def test_commands_are_counted_and_recorded() -> None:
    t = LocalTransport("here")
    t.run(["true"])
    list(t.lines(["echo", "x"]))
    assert t.commands == 2
    assert t.history == [["true"], ["echo", "x"]]


@pytest.mark.parametrize("bad", ["ls -l", [], ["zfs", None], ["echo", "a\x00b"]])
def test_bad_argv_is_refused_at_once(bad: object) -> None:
    t = LocalTransport("here")
    with pytest.raises(UsageError):
        t.lines(bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        quote_command(bad)  # type: ignore[arg-type]
    assert t.commands == 0


HOSTILE = ["a b", "it's", '"q"', "$(id)", "`id`", "; id", "&& id", "| id", "> f", "*", "~",
           "$HOME", "\\", "-n", "", "a\tb", "#x", "!!", "\u00e9t\u00e9", "a\nb"]


def test_quote_command_round_trips_through_a_shell(tmp_path: Path) -> None:
    line = quote_command(["printf", "%s\\0", *HOSTILE])
    assert shlex.split(line)[2:] == HOSTILE
    out = subprocess.run(["sh", "-c", line], capture_output=True, cwd=tmp_path, check=True)
    assert out.stdout.decode().split("\0")[:-1] == HOSTILE
    assert list(tmp_path.iterdir()) == []  # '> f' did not redirect anything


def test_open_transport_local_and_connections() -> None:
    hosts = {f"l{i}": Host(f"l{i}", kind="local", command_timeout=5.0) for i in range(3)}
    t = open_transport(hosts["l0"])
    assert isinstance(t, LocalTransport) and t.command_timeout == 5.0

    def work(node: str, tr: Transport) -> str:
        return tr.run(["echo", node]).stdout.strip()

    with Connections(hosts) as conns:
        results = conns.each(["l2", "l0", "l1", "l0"], work, parallel=2)
        assert conns.get("l0") is conns.get("l0")  # one transport per node, reused
    assert [(r.node, r.value) for r in results] == [("l2", "l2"), ("l0", "l0"), ("l1", "l1")]
    with pytest.raises(UsageError, match="no node named 'l9'"):
        Connections(hosts).get("l9")
