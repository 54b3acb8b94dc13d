"""SSH to lab nodes with the lab's own key and pinned host keys (never trust-on-first-use).

Remote commands are argument lists; `remote_command` hands them to
`xfleet.remote.transport.quote_command`, the one place where they become a shell line for the node's
login shell.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xfleet.lab.errors import LabError
from xfleet.remote.transport import CommandResult, quote_command


@dataclass(frozen=True)
class Endpoint:
    """How to reach one lab node from the host."""

    name: str
    port: int
    identity_file: Path
    known_hosts: Path
    control_dir: Path | None = None
    address: str = "127.0.0.1"
    user: str = "root"


Result = CommandResult  # the lab's commands report like every other transport's


def remote_command(argv: Sequence[str]) -> str:
    """A remote argument list as a shell command line, quoted by xfleet's one quoting place."""
    if isinstance(argv, str) or not argv:
        raise LabError("a remote command must be a non-empty list of arguments")
    return quote_command(argv)


def ssh_base(ep: Endpoint, *, multiplex: bool = False, connect_timeout: int = 10) -> list[str]:
    """`ssh` options for a lab node: lab key only, pinned host key, strict checking."""
    argv = [
        "ssh",
        "-i",
        str(ep.identity_file),
        "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={ep.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"HostKeyAlias={ep.name}",
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={connect_timeout}",
        "-o", "LogLevel=ERROR",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=6",
        "-p", str(ep.port),
    ]
    if multiplex and ep.control_dir is not None:
        argv += [
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={ep.control_dir}/cm-{ep.name}",
            "-o", "ControlPersist=120",
        ]
    argv.append(f"{ep.user}@{ep.address}")
    return argv


def run(
    ep: Endpoint,
    argv: Sequence[str],
    *,
    input: str | bytes | None = None,
    timeout: float = 600,
    check: bool = True,
    connect_timeout: int = 10,
) -> Result:
    """Run `argv` on the node; raise LabError if it fails and `check` is set."""
    cmd = [*ssh_base(ep, multiplex=True, connect_timeout=connect_timeout), "--",
           remote_command(argv)]
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.run(
            cmd,
            input=data,
            stdin=None if data is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(
            f"{ep.name}: `{remote_command(argv)[:200]}` did not finish within {timeout:.0f}s",
            hint="the node may be overloaded (TCG is slow) or hung; see its console.log",
        ) from exc
    res = Result(
        list(argv),
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )
    if check and not res.ok:
        detail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "no error output"
        console = f"\nlast console lines of {ep.name}:\n{console_tail(ep)}"
        if res.exit_status == 255:
            raise LabError(
                f"{ep.name}: ssh to 127.0.0.1:{ep.port} failed: {detail}",
                hint=f"is the lab up? `xfleet lab status`{console}",
            )
        raise LabError(
            f"{ep.name}: `{remote_command(argv)[:200]}` exited with {res.exit_status}: {detail}",
            hint=f"stderr:\n{res.stderr.strip()[-2000:]}{console}",
        )
    return res


def console_tail(ep: Endpoint, lines: int = 15) -> str:
    """The last lines of the node's serial console (its `console.log` in the lab's state
    dir), for error messages: what the guest itself said (kernel oopses, hung tasks, OOM)."""
    if ep.control_dir is None:
        return "(unknown state dir)"
    try:
        text = (ep.control_dir / "nodes" / ep.name / "console.log").read_text(errors="replace")
    except OSError:
        return "(no console log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty console log)"


def close_master(ep: Endpoint) -> None:
    """Stop the multiplexing master for this node, if one is running."""
    if ep.control_dir is None or not (ep.control_dir / f"cm-{ep.name}").exists():
        return
    subprocess.run(
        [*ssh_base(ep, multiplex=True)[:-1], "-O", "exit", f"{ep.user}@{ep.address}"],
        capture_output=True,
        timeout=10,
        check=False,
    )
