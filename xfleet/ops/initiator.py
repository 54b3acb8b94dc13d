"""A database host's NVMe/TCP initiator, as xfleet needs to see it during target upgrades.

One remote command per initiator (`python3 -c nvme_controllers.py`, a fixed program) reads
every NVMe controller from sysfs (`/sys/class/nvme/nvme*`): subsystem NQN, transport, address,
state and the reconnect budget (ctrl_loss_tmo, reconnect_delay, fast_io_fail_tmo), and the
uuid/nguid of its namespaces (from the controller's subsystem, `/sys/class/nvme-subsystem/*`,
with native multipath; from the controller itself without). `parse_controllers` is a pure
function over that output. `budget_warnings` says which controllers would not ride out a
target restart of a given length. `connect`/`disconnect`/`disconnect_all` are fixed nvme-cli
argument lists for tests and lab tooling (docs/upgrades.md).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from xfleet.core.errors import UsageError, XfleetError
from xfleet.fleet.secrets import Secret
from xfleet.remote.programs import answers, program
from xfleet.remote.transport import Transport

# Linux's own values when the host is told nothing (nvme-cli defaults, kernel 6.1)
DEFAULT_RECONNECT_DELAY = 10.0
DEFAULT_CTRL_LOSS_TMO = 600.0
TRANSPORTS = ("tcp", "rdma", "fc", "loop")
# printable, no blanks, no ',' (the kernel's option separator); NVMe: at most 223 bytes
_NQN = re.compile(r"^nqn\.[\x21-\x2b\x2d-\x7e]{1,219}\Z")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?\Z")


class InitiatorError(XfleetError):
    """The initiator's answer could not be read, or an nvme-cli call was refused."""


@dataclass(frozen=True)
class Namespace:
    uuid: str  # lower case, "" if the target gave none
    nguid: str  # lower case, as sysfs prints it (dashed)
    device: str  # block device name, e.g. "nvme0n1"
    nsid: int | None = None


@dataclass(frozen=True)
class Controller:
    """One NVMe controller of the host (one connection to one subsystem on one target)."""

    name: str  # nvme0
    nqn: str  # subsysnqn
    transport: str  # tcp
    address: str | None  # traddr
    port: int | None  # trsvcid
    state: str  # live, connecting, resetting, deleting, new, dead
    ctrl_loss_tmo: float | None  # None: never gives up ("off", nvme connect -l -1)
    reconnect_delay: float | None  # None: not a fabrics controller
    fast_io_fail_tmo: float | None  # None: off (I/O waits for the reconnect)
    namespaces: tuple[Namespace, ...] = ()
    # connected with a DH-CHAP secret (None: the kernel has no DH-CHAP); never the secret
    authenticated: bool | None = None

    @property
    def live(self) -> bool:
        return self.state == "live"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "nqn": self.nqn, "transport": self.transport,
            "address": self.address, "port": self.port, "state": self.state,
            "ctrl_loss_tmo": self.ctrl_loss_tmo, "reconnect_delay": self.reconnect_delay,
            "fast_io_fail_tmo": self.fast_io_fail_tmo, "authenticated": self.authenticated,
            "namespaces": [{"uuid": n.uuid, "nguid": n.nguid, "device": n.device,
                            "nsid": n.nsid} for n in self.namespaces],
        }


# Runs on the initiator: xfleet/remote/programs/nvme_controllers.py.
LIST_PROGRAM = program("nvme_controllers")


def list_argv() -> list[str]:
    """The one command that lists every controller of an initiator."""
    return LIST_PROGRAM.argv()


# ---------------------------------------------------------------------------------------------
# parsers (pure)


def _seconds(value: Any, *, off_is_none: bool, what: str) -> float | None:
    """A sysfs timeout: "off" (or a negative number) means never -> None."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("off", ""):
        return None
    try:
        x = float(text)
    except ValueError:
        raise InitiatorError(f"{what}: not a number of seconds: {value!r}") from None
    if x < 0 and off_is_none:
        return None
    return x


def parse_address(text: str | None) -> tuple[str | None, int | None]:
    """sysfs `address` ("traddr=10.77.0.11,trsvcid=4420,src_addr=...") -> (traddr, port)."""
    if not text:
        return None, None
    fields = dict(p.split("=", 1) for p in text.strip().split(",") if "=" in p)
    port = fields.get("trsvcid")
    return fields.get("traddr"), int(port) if port and port.isdigit() else None


def parse_controllers(text: str) -> list[Controller]:
    """LIST_PROGRAM's output -> controllers sorted by name (nvme2 before nvme10)."""
    try:
        doc = json.loads(text)
        rows = doc["controllers"]
        if not isinstance(rows, list):
            raise TypeError("controllers is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise InitiatorError(f"unexpected controller listing: {exc}",
                             hint="expected the JSON printed by xfleet.ops.initiator.LIST_PROGRAM; "
                             "is python3 installed on the initiator?") from None
    out: list[Controller] = []
    for row in rows:
        name = str(row.get("name") or "?")
        where = f"controller {name}"
        address, port = parse_address(row.get("address"))
        nss = []
        for ns in row.get("namespaces") or []:
            nsid = ns.get("nsid")
            nss.append(Namespace(
                uuid=(ns.get("uuid") or "").strip().lower(),
                nguid=(ns.get("nguid") or "").strip().lower(),
                device=str(ns.get("device") or ""),
                nsid=int(nsid) if isinstance(nsid, str) and nsid.isdigit() else None,
            ))
        out.append(Controller(
            name=name,
            nqn=(row.get("subsysnqn") or "").strip(),
            transport=(row.get("transport") or "").strip(),
            address=address,
            port=port,
            state=(row.get("state") or "unknown").strip(),
            ctrl_loss_tmo=_seconds(row.get("ctrl_loss_tmo"), off_is_none=True,
                                   what=f"{where}: ctrl_loss_tmo"),
            reconnect_delay=_seconds(row.get("reconnect_delay"), off_is_none=True,
                                     what=f"{where}: reconnect_delay"),
            fast_io_fail_tmo=_seconds(row.get("fast_io_fail_tmo"), off_is_none=True,
                                      what=f"{where}: fast_io_fail_tmo"),
            namespaces=tuple(sorted(nss, key=lambda n: _natural(n.device))),
            authenticated={"set": True, "none": False}.get(str(row.get("dhchap"))),
        ))
    return sorted(out, key=lambda c: _natural(c.name))


def _natural(name: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def budget_warnings(
    controllers: Iterable[Controller], *, expected_outage: float, initiator: str = "",
) -> list[str]:
    """A warning for every controller that would not ride out a target outage of
    `expected_outage` seconds without the application seeing it.

    The host notices that the target is back only at its next reconnect attempt, so the outage
    it lives through is up to `expected_outage + reconnect_delay`. Past `ctrl_loss_tmo` it gives
    up and removes the namespace; past `fast_io_fail_tmo` queued I/O fails back to the
    application. A controller that is not live already is reported too.
    """
    if expected_outage < 0 or math.isnan(expected_outage):
        raise UsageError(f"expected_outage must be a number of seconds >= 0, "
                         f"got {expected_outage}")
    who = f"{initiator}: " if initiator else ""
    out: list[str] = []
    for c in controllers:
        delay = c.reconnect_delay if c.reconnect_delay is not None else DEFAULT_RECONNECT_DELAY
        lived = expected_outage + delay
        head = f"{who}{c.name} ({c.nqn}"
        head += f" at {c.address}:{c.port})" if c.address else ")"
        if not c.live:
            out.append(f"{head}: controller is {c.state}, not live, before the restart")
        if c.ctrl_loss_tmo is not None and c.ctrl_loss_tmo < lived:
            out.append(
                f"{head}: ctrl_loss_tmo={c.ctrl_loss_tmo:g}s < {lived:g}s (outage "
                f"{expected_outage:g}s + reconnect_delay {delay:g}s): the host gives up and "
                "drops the namespace; reconnect with a larger ctrl_loss_tmo (-1 = never)")
        if c.fast_io_fail_tmo is not None and c.fast_io_fail_tmo < lived:
            out.append(
                f"{head}: fast_io_fail_tmo={c.fast_io_fail_tmo:g}s < {lived:g}s (outage "
                f"{expected_outage:g}s + reconnect_delay {delay:g}s): I/O errors reach the "
                "application; reconnect with fast_io_fail_tmo off (-1) or larger")
    return out


# ---------------------------------------------------------------------------------------------
# remote calls (one command each)


def controllers(transport: Transport) -> list[Controller]:
    """Every NVMe controller of the initiator behind `transport` (one remote command)."""
    return parse_controllers(transport.run(list_argv()).stdout)


def check_nqn(nqn: str) -> str:
    """`nqn` if it is an NVMe qualified name (printable, no blank or comma), else UsageError."""
    if not _NQN.match(nqn):
        raise UsageError(f"not an NVMe qualified name: {nqn!r}",
                         hint="an NQN starts with 'nqn.' and has no blanks, e.g. "
                         "nqn.2026-01.io.xfleet:lab1:tank.vol")
    return nqn


def _check_address(address: str) -> str:
    try:
        ipaddress.ip_address(address)
        return address
    except ValueError:
        pass
    if not _HOSTNAME.match(address):
        raise UsageError(f"not an address: {address!r}", hint="an IP address or a host name")
    return address


def _seconds_arg(value: float | int, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or (value < 0 and value != -1) or value > 2**31:
        raise UsageError(f"{what} must be a number of seconds >= 0, or -1 (never), got {value!r}")
    return str(int(value))


# nvme-cli 2.3 (Debian 12) has no fast_io_fail_tmo option: with one, `connect` writes the
# options to the kernel's fabrics device itself (xfleet/remote/programs/nvme_fabrics_connect.py).
FABRICS_PROGRAM = program("nvme_fabrics_connect")


def connect_argv(
    address: str, port: int, nqn: str, *, ctrl_loss_tmo: float = -1,
    reconnect_delay: float = 1, fast_io_fail_tmo: float | None = None,
    secret_on_stdin: bool = False,
) -> list[str]:
    """`nvme connect` over TCP; ctrl_loss_tmo -1 = retry for ever, fast_io_fail_tmo None =
    off (the kernel default). With a fast_io_fail_tmo or a DH-CHAP secret (`secret_on_stdin`:
    the command reads it on stdin, never argv), the kernel's /dev/nvme-fabrics is written
    directly (FABRICS_PROGRAM), as nvme-cli 2.3 cannot set the one and would take the other
    on its command line."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise UsageError(f"port must be a TCP port number (1-65535), got {port!r}")
    if isinstance(reconnect_delay, bool) or not isinstance(reconnect_delay, (int, float)) or \
            reconnect_delay < 1:
        raise UsageError(f"reconnect_delay must be at least 1 second, got {reconnect_delay!r}")
    address, nqn = _check_address(address), check_nqn(nqn)
    loss = _seconds_arg(ctrl_loss_tmo, "ctrl_loss_tmo")
    if fast_io_fail_tmo is None and not secret_on_stdin:
        return ["nvme", "connect", "-t", "tcp", "-a", address, "-s", str(port), "-n", nqn,
                "-l", loss, "-c", str(int(reconnect_delay))]
    opts = (f"transport=tcp,traddr={address},trsvcid={port},nqn={nqn},ctrl_loss_tmo={loss},"
            f"reconnect_delay={int(reconnect_delay)}")
    if fast_io_fail_tmo is not None:
        opts += f",fast_io_fail_tmo={_seconds_arg(fast_io_fail_tmo, 'fast_io_fail_tmo')}"
    return FABRICS_PROGRAM.argv(opts, *(["--secret-stdin"] if secret_on_stdin else []))


def connect(
    transport: Transport, address: str, port: int, nqn: str, *, ctrl_loss_tmo: float = -1,
    reconnect_delay: float = 1, fast_io_fail_tmo: float | None = None,
    secret: Secret | None = None,
) -> None:
    """Connect the initiator to subsystem `nqn` at address:port (one command), with its
    DH-CHAP `secret` when given (docs/access.md)."""
    transport.run(connect_argv(address, port, nqn, ctrl_loss_tmo=ctrl_loss_tmo,
                               reconnect_delay=reconnect_delay,
                               fast_io_fail_tmo=fast_io_fail_tmo,
                               secret_on_stdin=secret is not None),
                  stdin=secret.reveal().encode() if secret is not None else None)


# gives connected controllers a new DH-CHAP secret (xfleet/remote/programs/nvme_dhchap.py)
DHCHAP_PROGRAM = program("nvme_dhchap")


@dataclass(frozen=True)
class Reauth:
    """One controller's answer to `reauthenticate`: ok with `changed`, or the error."""

    name: str
    ok: bool
    changed: bool = False
    error: str | None = None


def parse_reauth(text: str, names: Sequence[str]) -> list[Reauth]:
    """DHCHAP_PROGRAM's lines -> one Reauth per controller asked about, in `names` order (a
    controller it did not answer for is an error)."""
    got = answers(text)
    return [Reauth(n, True, changed=got[n][1] == "changed") if n in got and got[n][0] else
            Reauth(n, False, error=got[n][1] if n in got else
                   "the initiator did not answer for it") for n in names]


def reauthenticate(transport: Transport, names: Sequence[str], secret: Secret) -> list[Reauth]:
    """Give the connected controllers `names` the DH-CHAP `secret` (on stdin): each keeps it
    for its reconnects and re-authenticates with it now. One command."""
    if not names:
        return []
    res = transport.run(DHCHAP_PROGRAM.argv(*map(controller_name, names)),
                        stdin=secret.reveal().encode())
    return parse_reauth(res.stdout, names)


def disconnect(transport: Transport, nqn: str) -> None:
    """Disconnect every controller of subsystem `nqn` (one command)."""
    transport.run(["nvme", "disconnect", "-n", check_nqn(nqn)])


_CONTROLLER = re.compile(r"^nvme\d+\Z")


def controller_name(name: str) -> str:
    """`name` if it names an NVMe controller (`nvme3`), else a UsageError."""
    if not _CONTROLLER.match(name):
        raise UsageError(f"not an NVMe controller name: {name!r}", hint="e.g. nvme3")
    return name


def disconnect_controller(transport: Transport, name: str) -> None:
    """Disconnect one controller (one path, e.g. `nvme3`) of the initiator (one command)."""
    transport.run(["nvme", "disconnect", "-d", controller_name(name)])


def disconnect_all(transport: Transport) -> None:
    """Disconnect every NVMe-oF controller of the initiator (one command)."""
    transport.run(["nvme", "disconnect-all"])


def by_nqn(ctrls: Sequence[Controller]) -> dict[str, list[Controller]]:
    """Controllers grouped by subsystem NQN (several paths to one subsystem stay together)."""
    out: dict[str, list[Controller]] = {}
    for c in ctrls:
        out.setdefault(c.nqn, []).append(c)
    return out
