"""What a playbook is once loaded (its steps, each with its line) and the error an invalid
playbook or a failed step raises. The bottom of xfleet.playbook: the engine (engine.py), the
templates (template.py) and the run journal (journal.py) build on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xfleet.core.errors import UsageError
from xfleet.core.yamlsrc import Val


class PlaybookError(UsageError):
    """An invalid playbook (where: file:line) or a step that failed."""


@dataclass
class Step:
    idx: int
    kind: str
    line: int
    args: Any  # Val tree (lines kept) of the kind's arguments
    name: str | None = None
    when: Val | None = None
    for_each: Val | None = None
    loop_var: str = "row"
    concurrency: int = 1
    register: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.kind


@dataclass
class Playbook:
    path: Path
    name: str
    vars: dict[str, Any]
    steps: list[Step]
    digest: str

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"


def typename(v: Any) -> str:
    """How a value's type is named in messages: `a list`, `a mapping`, `nothing`."""
    if v is None:
        return "nothing"
    return {list: "a list", dict: "a mapping", str: "a string", int: "a number",
            float: "a number", bool: "true/false"}.get(type(v), type(v).__name__)

