"""The programs xfleet runs on nodes, each a real file in this folder, sent as text.

A node gets no xfleet install: a program runs as `python3 -c TEXT ARGS...` (`*.py`, standard
library only, the node's python3), `sh -c TEXT NAME ARGS...` (`*.sh`) or `bash -c ...`
(`*.bash`). Its arguments are always separate argv items, never interpolated into the text.
Each file is linted here and unit-tested on its own (tests/unit/remote/test_programs.py); the
simulator recognises a program by its name (`identify`), not by importing the feature using it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
_INTERPRETERS = {".py": "python3", ".sh": "sh", ".bash": "bash"}


@dataclass(frozen=True)
class Program:
    """One remote program: `name` is its file name without the suffix (e.g. "sample_blocks")."""

    name: str
    interpreter: str  # python3, sh or bash
    text: str

    def argv(self, *args: str) -> list[str]:
        """The argument list that runs this program on a node with `args`. For the shells, the
        program's name is $0 (what their error messages start with)."""
        if self.interpreter == "python3":
            return ["python3", "-c", self.text, *args]
        return [self.interpreter, "-c", self.text, self.name, *args]


@functools.cache
def _all() -> dict[str, Program]:
    out: dict[str, Program] = {}
    for path in sorted(HERE.iterdir()):
        interp = _INTERPRETERS.get(path.suffix)
        if interp is None or path.name.startswith("_"):
            continue
        out[path.stem] = Program(path.stem, interp, path.read_text())
    return out


def program(name: str) -> Program:
    """The program `name` (its file's stem); KeyError for an unknown one (a bug, not input)."""
    return _all()[name]


def names() -> list[str]:
    return sorted(_all())


def identify(argv: Sequence[str]) -> tuple[Program, list[str]] | None:
    """(program, its arguments) if `argv` runs one of these programs, else None."""
    if len(argv) < 3 or argv[1] != "-c":
        return None
    for p in _all().values():
        if argv[0] == p.interpreter and argv[2] == p.text:
            rest = list(argv[3:])
            return p, (rest if p.interpreter == "python3" else rest[1:])
    return None


def answers(text: str) -> dict[str, tuple[bool, str]]:
    """The per-item answer lines of the programs that act on many items in one command
    (nvmet_hosts, nvmet_auth, nvme_dhchap): `KEY<TAB>OK|ERR<TAB>MESSAGE` -> {KEY: (ok,
    MESSAGE)}, in their order; any other line is ignored (the MESSAGE may hold tabs)."""
    out: dict[str, tuple[bool, str]] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition("\t")
        status, _, message = rest.partition("\t")
        if sep and status in ("OK", "ERR"):
            out[key] = (status == "OK", message.strip())
    return out
