"""Where the lab keeps its cached image and its runtime state (XDG base directories)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

Progress = Callable[[str], None] | None


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/xfleet/lab` (default `~/.cache/xfleet/lab`): images, by recipe hash."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xfleet" / "lab"


def state_root() -> Path:
    """`$XDG_STATE_HOME/xfleet/lab` (default `~/.local/state/xfleet/lab`): running lab state."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "xfleet" / "lab"


def emit(progress: Progress, message: str) -> None:
    if progress is not None:
        progress(message)


@contextmanager
def locked(directory: Path, what: str, progress: Progress = None) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (e.g. so that two builds, or a build and a test
    session, never share a work dir). Waits for the other holder, saying so."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            emit(progress, f"waiting for another {what} in {directory} ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
