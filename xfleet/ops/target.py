"""The NVMe-oF target daemon of a storage node, through a small driver interface.

Two drivers: `NvmetDriver` (the Linux kernel target configured through configfs, with pinned
namespace identities) and `CommandDriver` (every operation is an argv list from the inventory,
for SPDK or in-house daemons). Every remote command is an argument list given to the node's
Transport; parsers are pure functions (docs/upgrades.md).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xfleet.core.errors import RemoteCommandError, UsageError, XfleetError
from xfleet.fleet.secrets import Secret
from xfleet.fleet.target_spec import (
    COMMAND_OPS,
    COMMAND_REQUIRED,
    COMMAND_VARS,
    NVMET_DEFAULTS,
    TargetSpec,
    nvmet_settings,
)
from xfleet.ops.initiator import check_nqn
from xfleet.remote.host import Host
from xfleet.remote.programs import answers, program
from xfleet.remote.transport import Transport


class TargetError(XfleetError):
    """The target daemon did not do what was asked (not ready, bad digest, bad output)."""


@dataclass(frozen=True)
class Export:
    """One exported namespace: subsystem NQN, namespace id, backing device and its identity;
    who may connect: any host (`allow_any_host`), else only the host NQNs in `hosts`."""

    nqn: str
    nsid: int
    device: str
    uuid: str
    nguid: str
    enabled: bool = True
    allow_any_host: bool = True
    hosts: tuple[str, ...] = ()

    @property
    def volume(self) -> str | None:
        """The zvol behind the namespace (`/dev/zvol/POOL/NAME`), None for another device."""
        return self.device.removeprefix(ZVOL_DIR) if self.device.startswith(ZVOL_DIR) else None

    def to_dict(self) -> dict[str, Any]:
        return {"nqn": self.nqn, "nsid": self.nsid, "device": self.device, "uuid": self.uuid,
                "nguid": self.nguid, "enabled": self.enabled,
                "allow_any_host": self.allow_any_host, "hosts": list(self.hosts)}


ZVOL_DIR = "/dev/zvol/"


@dataclass(frozen=True)
class HostsResult:
    """What one set_hosts command did: the subsystems it set, and per failed one its error."""

    done: tuple[str, ...]
    failed: dict[str, str]


@dataclass(frozen=True)
class Versions:
    installed: str | None
    running: str | None


# ---------------------------------------------------------------------------------------------
# parsers (pure)

def parse_export_line(line: str, n: int = 1) -> Export | None:
    """One line `NQN<TAB>NSID<TAB>DEVICE<TAB>UUID<TAB>NGUID<TAB>ENABLE<TAB>ALLOW_ANY<TAB>HOSTS`
    (LIST_PROGRAM's output; a command driver's listing may stop after ENABLE: such a target
    allows any host); None for a blank line; TargetError (naming line `n`) for anything else."""
    if not line.strip():
        return None
    parts = line.rstrip("\r\n").split("\t")
    if len(parts) not in (6, 8) or not parts[1].isdigit():
        raise TargetError(f"unexpected export line {n}: {line!r}",
                          hint="expected NQN, NSID, DEVICE, UUID, NGUID, ENABLE and optionally "
                          "ALLOW_ANY, HOSTS separated by tabs")
    allow_any, hosts = (parts[6].strip() != "0",
                        tuple(sorted(h for h in parts[7].strip().split(",") if h))) \
        if len(parts) == 8 else (True, ())
    return Export(parts[0], int(parts[1]), parts[2], _norm_id(parts[3]), _norm_id(parts[4]),
                  parts[5].strip() == "1", allow_any, hosts)


def parse_exports(text: str) -> list[Export]:
    """Every export of a listing, sorted by (nqn, nsid)."""
    out = [e for n, line in enumerate(text.splitlines(), 1)
           if (e := parse_export_line(line, n)) is not None]
    return sorted(out, key=lambda e: (e.nqn, e.nsid))


def _norm_id(text: str) -> str:
    return text.strip().lower()


def parse_version(text: str) -> str | None:
    """The first non-empty line (dpkg-query's ${Version}, a readiness file), or None."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return None


def parse_ready(text: str) -> dict[str, str]:
    """The readiness file: `key=value` lines (version=1.1, exports=2)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def parse_hosts_result(text: str) -> HostsResult:
    """set_hosts' output: `NQN<TAB>OK|ERR<TAB>MESSAGE` lines (other lines are ignored)."""
    got = answers(text)
    return HostsResult(tuple(k for k, (ok, _) in got.items() if ok),
                       {k: msg or "failed" for k, (ok, msg) in got.items() if not ok})


def hosts_input(hosts: Mapping[str, Sequence[str]]) -> bytes:
    """set_hosts' stdin: `NQN<TAB>HOSTS` lines, every NQN validated (no tab, comma or blank
    can split a line or a list)."""
    lines = []
    for nqn, allowed in sorted(hosts.items()):
        check_nqn(nqn)
        lines.append(f"{nqn}\t{','.join(check_nqn(h) for h in sorted(set(allowed)))}\n")
    return "".join(lines).encode()


AUTH_STATES = ("changed", "unchanged", "match", "differs", "none")


def parse_auth_result(text: str) -> dict[str, tuple[str | None, str | None]]:
    """AUTH_PROGRAM's lines -> {host NQN: (state, None) or (None, error)}."""
    return {nqn: (msg, None) if ok and msg in AUTH_STATES else
            (None, msg if not ok else f"unexpected answer OK {msg}")
            for nqn, (ok, msg) in answers(text).items()}


def auth_input(secrets: Mapping[str, Secret]) -> bytes:
    """The auth program's stdin: `HOSTNQN<TAB>SECRET` lines (the NQNs validated)."""
    return "".join(f"{check_nqn(h)}\t{s.reveal()}\n"
                   for h, s in sorted(secrets.items())).encode()


def parse_sha256sum(text: str) -> str | None:
    word = text.split()[0] if text.split() else ""
    return word.lower() if len(word) == 64 else None


# ---------------------------------------------------------------------------------------------
# drivers

class TargetDriver(ABC):
    """What xfleet needs from a node's NVMe-oF target daemon."""

    def __init__(self, node: str, transport: Transport):
        self.node = node
        self.t = transport

    @property
    def stage_dir(self) -> str:
        """Where staged packages go on the node (`stage_dir` setting)."""
        return str(NVMET_DEFAULTS["stage_dir"])

    def put(self, data: bytes, path: str) -> None:
        """Write `data` to `path` on the node (via a temporary name: never a half-written
        package under the final name). One command."""
        self.t.run(PUT_FILE.argv(path), stdin=data)

    def staged_digest(self, path: str) -> str | None:
        """sha256 of `path` on the node, None when it is not there (one command)."""
        res = self.t.run(["sha256sum", "--", path], check=False)
        return parse_sha256sum(res.stdout) if res.ok else None

    @abstractmethod
    def versions(self) -> Versions: ...

    @abstractmethod
    def exports_argv(self) -> list[str]:
        """The one command that lists every export (tab-separated lines)."""

    def iter_exports(self) -> Iterator[Export]:
        """Every export, streamed from one remote command (a node's 100k exports are never
        all held at once)."""
        out = self.t.stream(self.exports_argv())
        for n, line in enumerate(out, 1):
            e = parse_export_line(line, n)
            if e is not None:
                yield e
        if out.exit_status != 0:
            raise RemoteCommandError(self.node, out.argv, out.exit_status, out.stderr)

    def exports(self) -> list[Export]:
        """Every export, sorted by (nqn, nsid) (one command; for small nodes and tests)."""
        return sorted(self.iter_exports(), key=lambda e: (e.nqn, e.nsid))

    @abstractmethod
    def set_hosts_argv(self) -> list[str]:
        """The one command that sets allowed hosts, reading `NQN<TAB>HOSTS` lines on stdin."""

    def set_hosts(self, hosts: Mapping[str, Sequence[str]]) -> HostsResult:
        """Restrict each subsystem NQN of `hosts` to exactly its host NQNs (none: no host may
        connect), all in one remote command. A host removed from a subsystem is disconnected
        (nvmet: its port links are re-made; docs/access.md)."""
        if not hosts:
            return HostsResult((), {})
        res = self.t.run(self.set_hosts_argv(), stdin=hosts_input(hosts))
        got = parse_hosts_result(res.stdout)
        missing = set(hosts) - set(got.done) - set(got.failed)
        return HostsResult(got.done, {**got.failed, **{n: "the target did not report it"
                                                       for n in sorted(missing)}})

    def auth(self, mode: str, secrets: Mapping[str, Secret]
             ) -> dict[str, tuple[str | None, str | None]]:
        """DH-CHAP: `set` gives each host NQN its secret on the target (kept on the node for
        the target's next start), `check` compares; one command either way. {host NQN:
        (state, None) or (None, error)}, states as AUTH_STATES."""
        raise TargetError(f"{self.node}'s target driver has no DH-CHAP",
                          where=self.node, hint="DH-CHAP needs the kernel target "
                          "(target: {driver: nvmet}); docs/access.md")

    @abstractmethod
    def stage(self, version: str, path: str, sha256: str) -> None:
        """Make `version` (a package already at `path` on the node) ready to install: check its
        digest. Raise TargetError when it does not match."""

    @abstractmethod
    def restart(self, version: str | None = None, path: str | None = None) -> None:
        """Install `version` from its staged package at `path` (when given), restart."""

    @abstractmethod
    def is_ready(self) -> str | None:
        """The running version when the daemon reports ready, else None (one command)."""

    @abstractmethod
    def rollback(self, version: str, path: str) -> None:
        """Go back to `version` (its package at `path`) and restart."""

    def wait_ready(self, version: str, *, timeout: float = 60.0, interval: float = 1.0,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> str:
        """Poll readiness until the daemon reports `version`; TargetError after `timeout`."""
        deadline = clock() + timeout
        seen: str | None = None
        while True:
            seen = self.is_ready()
            if seen == version:
                return seen
            if clock() >= deadline:
                raise TargetError(
                    f"target on {self.node} not ready with version {version} after "
                    f"{timeout:.0f}s (reports {seen or 'not ready'})",
                    where=self.node,
                    hint="look at the daemon's log on the node; roll back to the previous "
                    "version if it does not come")
            sleep(interval)


# writes stdin to "$1" through "$1.part" (the directory is created; the rename is atomic)
PUT_FILE = program("put_file")  # xfleet/remote/programs/put_file.sh

# one remote command lists every export: walks configfs, prints tab-separated lines
LIST_PROGRAM = program("nvmet_exports")  # xfleet/remote/programs/nvmet_exports.py
# one remote command sets many subsystems' allowed hosts (xfleet/remote/programs/nvmet_hosts.py)
HOSTS_PROGRAM = program("nvmet_hosts")
# one remote command gives many hosts their DH-CHAP secrets (xfleet/remote/programs/nvmet_auth.py)
AUTH_PROGRAM = program("nvmet_auth")
NO_AUTH = 3  # its exit status on a kernel without DH-CHAP
NO_TARGET = 4  # ... and where the kernel target is not loaded
CONFIGFS = "/sys/kernel/config/nvmet"


class NvmetDriver(TargetDriver):
    """The Linux kernel NVMe/TCP target (configfs), run by a packaged systemd service that
    exports the node's zvols with pinned identities (the lab's `xfleet-lab-target`)."""

    def __init__(self, node: str, transport: Transport, settings: Mapping[str, Any] | None = None):
        super().__init__(node, transport)
        self.settings = nvmet_settings(dict(settings) if settings is not None else None)

    @property
    def stage_dir(self) -> str:
        return str(self.settings["stage_dir"])

    def versions(self) -> Versions:
        res = self.t.run(["dpkg-query", "-W", "-f", "${Version}", self.settings["package"]],
                         check=False)
        return Versions(parse_version(res.stdout) if res.ok else None, self.is_ready())

    def exports_argv(self) -> list[str]:
        return LIST_PROGRAM.argv(CONFIGFS)

    def set_hosts_argv(self) -> list[str]:
        return HOSTS_PROGRAM.argv(CONFIGFS)

    def auth(self, mode: str, secrets: Mapping[str, Secret]
             ) -> dict[str, tuple[str | None, str | None]]:
        if mode not in ("set", "check"):
            raise ValueError(f"auth mode {mode!r}")
        if not secrets:
            return {}
        res = self.t.run(AUTH_PROGRAM.argv(mode, CONFIGFS, str(self.settings["auth_dir"])),
                         stdin=auth_input(secrets), check=False)
        if res.exit_status == NO_AUTH:
            raise TargetError(f"{self.node}: {' '.join(res.stderr.split())}", where=self.node,
                              hint="DH-CHAP needs a kernel built with CONFIG_NVME_TARGET_AUTH "
                              "on the node (Debian 12: the bookworm-backports kernel)")
        if res.exit_status == NO_TARGET:
            raise TargetError(f"{self.node}: {' '.join(res.stderr.split())}", where=self.node,
                              hint=f"start the node's target service ({self.settings['service']}"
                              ") and run again; it gives the kept secrets to the kernel first")
        if not res.ok:
            raise RemoteCommandError(self.node, res.argv, res.exit_status, res.stderr)
        got = parse_auth_result(res.stdout)
        return {h: got.get(h, (None, "the target did not report it")) for h in secrets}

    def listen_address(self, host: Host) -> tuple[str, int] | None:
        """Where this node's kernel target listens: its `address` setting, else the node's
        private address, else its address (None when it has none)."""
        addr = self.settings.get("address") or host.private_address or host.address
        return (str(addr), int(self.settings["port"])) if addr else None

    def stage(self, version: str, path: str, sha256: str) -> None:
        got = self.staged_digest(path)
        if got != sha256.lower():
            raise TargetError(f"{path} on {self.node} has sha256 {got}, expected {sha256}",
                              where=self.node, hint="copy the package again")

    def restart(self, version: str | None = None, path: str | None = None) -> None:
        if path is not None:
            self.t.run(["dpkg", "-i", "--", path])
        self.t.run(["systemctl", "restart", self.settings["service"]])

    def is_ready(self) -> str | None:
        res = self.t.run(["cat", "--", self.settings["ready_file"]], check=False)
        return parse_ready(res.stdout).get("version") if res.ok else None

    def rollback(self, version: str, path: str) -> None:
        self.restart(version, path)


def command_argv(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Fill `{var}` in each argument (one argument stays one argument)."""
    try:
        return [a.format(**values) for a in template]
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(f"target command {list(template)}: bad variable {exc}",
                         hint=f"variables: {', '.join('{' + v + '}' for v in COMMAND_VARS)}"
                         ) from None


class CommandDriver(TargetDriver):
    """Every operation is an argv list from the inventory (`target: {driver: command, ...}`).

    `exports` must print the same tab-separated lines as the nvmet driver's listing; the
    versions and `ready` print the version on their first line."""

    def __init__(self, node: str, transport: Transport, commands: Mapping[str, Sequence[str]],
                 settings: Mapping[str, Any] | None = None):
        super().__init__(node, transport)
        self.settings = dict(settings or {})
        missing = [op for op in COMMAND_REQUIRED if op not in commands]
        if missing:
            raise UsageError(f"target command driver of {node}: no {', '.join(missing)} command",
                             hint=f"operations: {', '.join(COMMAND_OPS)}")
        self.commands = {k: tuple(v) for k, v in commands.items()}

    @property
    def stage_dir(self) -> str:
        return str(self.settings.get("stage_dir") or NVMET_DEFAULTS["stage_dir"])

    def argv(self, op: str, **values: str) -> list[str]:
        if op not in self.commands:
            raise UsageError(f"target command driver of {self.node} has no {op} command",
                             hint=f"add target.{op} to the inventory")
        return command_argv(self.commands[op], {"node": self.node, "version": "", "path": "",
                                                "sha256": "", **values})

    def versions(self) -> Versions:
        installed = None
        if "installed_version" in self.commands:
            installed = parse_version(self.t.run(self.argv("installed_version")).stdout)
        return Versions(installed, parse_version(self.t.run(self.argv("running_version")).stdout))

    def exports_argv(self) -> list[str]:
        return self.argv("exports")

    def set_hosts_argv(self) -> list[str]:
        return self.argv("set_hosts")

    def stage(self, version: str, path: str, sha256: str) -> None:
        self.t.run(self.argv("stage", version=version, path=path, sha256=sha256))

    def restart(self, version: str | None = None, path: str | None = None) -> None:
        self.t.run(self.argv("restart", version=version or "", path=path or ""))

    def is_ready(self) -> str | None:
        try:
            return parse_version(self.t.run(self.argv("ready")).stdout)
        except RemoteCommandError:
            return None

    def rollback(self, version: str, path: str) -> None:
        self.t.run(self.argv("rollback", version=version, path=path))


def driver_for(node: str, transport: Transport, spec: TargetSpec | None) -> TargetDriver:
    if spec is None:
        raise UsageError(f"{node} has no target in the inventory",
                         hint="add target: {driver: nvmet} (docs/upgrades.md)")
    if spec.driver == "nvmet":
        return NvmetDriver(node, transport, spec.settings)
    return CommandDriver(node, transport, spec.commands, spec.settings)
