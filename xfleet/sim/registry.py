"""How a simulated node finds the code that answers a command: handlers registered by name.

A handler answers one zfs or zpool subcommand (`@command("zfs", "list")`), one remote program
of xfleet/remote/programs/ by its name (`@command(PROGRAM, "sample_blocks")`: the transport
recognises a program with `identify`), or one executable as a whole (`@command("sha256sum")`).
It gets the node, the arguments after the command's name and a Context, and returns the
output lines (an iterator: listings stream); it raises Fail with what the real command would
print on stderr and its exit status. xfleet/sim/commands/ holds the handlers, one module per
command or family; importing that package registers them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xfleet.sim.stream import Incoming

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport

PROGRAM = "program"  # the family of xfleet's remote programs, registered by program name


class Fail(Exception):
    """A command failure: what real zfs would print on stderr, and its exit status."""

    def __init__(self, stderr: str, code: int = 1):
        super().__init__(stderr)
        self.stderr = stderr if stderr.endswith("\n") else stderr + "\n"
        self.code = code


@dataclass
class Context:
    """What a running command reports besides stdout."""

    err: list[str] = field(default_factory=list)
    code: int = 0
    argv: list[str] = field(default_factory=list)
    timeout: float = 300.0
    stdin: bytes | None = None
    incoming: Incoming | None = None  # a started process's input (SimProcess)
    interrupted: bool = False  # the process was killed while its input was coming

    def input(self) -> Incoming:
        """What the command read on stdin (nothing: an empty input)."""
        if self.incoming is not None:
            return self.incoming
        return Incoming.of(self.stdin or b"")

    def fail(self, text: str, code: int = 1) -> None:
        self.err.append(text if text.endswith("\n") else text + "\n")
        self.code = code


Handler = Callable[["SimTransport", list[str], Context], Iterator[str]]

# (family, name) -> handler; name "" for an executable answered as a whole
COMMANDS: dict[tuple[str, str], Handler] = {}


def command(family: str, *names: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of `family NAME` for each of `names` (a
    subcommand and its aliases, or a program's name); without names, of the executable
    `family` itself, which gets all its arguments."""

    def register(fn: Handler) -> Handler:
        for name in names or ("",):
            if (family, name) in COMMANDS:
                raise RuntimeError(f"two handlers for {family} {name}".rstrip())  # a bug
            COMMANDS[(family, name)] = fn
        return fn

    return register


def handler(family: str, name: str = "") -> Handler | None:
    """The handler registered for `family name`, or None."""
    return COMMANDS.get((family, name))


def names(family: str) -> list[str]:
    """The names registered in `family` (subcommands, aliases included; program names)."""
    return sorted(name for fam, name in COMMANDS if fam == family and name)
