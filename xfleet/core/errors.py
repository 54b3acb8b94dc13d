"""Errors that reach the user: what was wrong, where, and what to do.

Every error a user can cause is an `XfleetError`; the CLI prints it without a traceback.
"""

from __future__ import annotations


class XfleetError(Exception):
    """A user-facing error: `message` (what), `where` (file:line, node...), `hint` (what to do)."""

    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class UsageError(XfleetError):
    """Bad input from the user (arguments, names, expressions)."""

    exit_code = 2


class InventoryError(XfleetError):
    """The inventory file is invalid; `where` is file:line."""

    exit_code = 2


class NameError_(UsageError):
    """A dataset or pool name that ZFS would not accept (or that is unsafe)."""


class TransportError(XfleetError):
    """A node could not be reached or a remote command could not be run."""


class ConnectError(TransportError):
    """Connection-level failure: the only kind of failure that is retried."""


class HostKeyError(TransportError):
    """The node's SSH host key is unknown or does not match the pinned one."""

    exit_code = 3


class CommandTimeout(TransportError):
    """A remote command produced no output within its timeout."""


class RemoteCommandError(TransportError):
    """A remote command ran and exited non-zero."""

    def __init__(self, node: str, argv: list[str], exit_status: int, stderr: str):
        super().__init__(
            f"{argv[0]} exited with status {exit_status}: {stderr_summary(stderr)}",
            where=node,
        )
        self.node = node
        self.argv = argv
        self.exit_status = exit_status
        self.stderr = stderr


def stderr_summary(stderr: str, lines: int = 4) -> str:
    """A command's error output in one line: its first `lines` lines (where ZFS says what
    failed and why; `cannot destroy 'x': volume has dependent clones`, then the clones), and
    how many more there were."""
    text = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if not text:
        return "no error output"
    more = f" (+{len(text) - lines} more lines)" if len(text) > lines else ""
    return " / ".join(text[:lines]) + more


class MirrorError(XfleetError):
    """The mirror database is missing, locked, or of an unknown schema."""
