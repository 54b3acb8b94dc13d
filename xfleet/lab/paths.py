"""Where the lab keeps its cached image and its runtime state (XDG base directories)."""

from __future__ import annotations

import os
from collections.abc import Callable
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
