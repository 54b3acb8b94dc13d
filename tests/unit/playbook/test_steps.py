"""The step kinds meet the engine only through its registry: the engine and the other modules of
xfleet/playbook outside steps/ import no feature (nothing of xfleet.ops, nor the step modules),
and every registered step kind is documented in docs/playbooks.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

from xfleet import playbook

PLAYBOOK = ROOT / "xfleet" / "playbook"
DOCS = ROOT / "docs" / "playbooks.md"


def _imported(path: Path, root: Path = ROOT) -> set[str]:
    """Every module a file imports, and every name it imports from one (as module.name)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def test_the_engine_imports_no_feature() -> None:
    modules = [p for p in sorted(PLAYBOOK.rglob("*.py")) if "steps" not in p.parts]
    assert PLAYBOOK / "engine.py" in modules
    offenders = {}
    for path in modules:
        bad = sorted(m for m in _imported(path) if m == "xfleet.ops" or m.startswith("xfleet.ops.")
                     or (path.name != "__init__.py" and m.startswith("xfleet.playbook.steps")))
        if bad:
            offenders[path.relative_to(ROOT).as_posix()] = bad
    assert offenders == {}, "features meet the playbook in xfleet/playbook/steps/ only"


def test_the_checker_sees_imports_of_every_form(tmp_path: Path) -> None:
    pkg = tmp_path / "xfleet" / "playbook"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("import xfleet.ops.sync\nfrom xfleet import ops\n"
                              "from ..ops import moves\n")
    found = _imported(pkg / "x.py", tmp_path)
    assert {"xfleet.ops.sync", "xfleet.ops", "xfleet.ops.moves"} <= found


def test_every_step_kind_is_registered_and_documented() -> None:
    text = DOCS.read_text()
    section = text.split("\n## Step kinds\n", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^### `([a-z_]+)`$", section, re.M)
    assert sorted(documented) == sorted(playbook.KINDS), \
        "a step kind is a `### `kind`` section under '## Step kinds' in docs/playbooks.md"
    assert len(documented) == len(set(documented))
    hint = re.search(r"hint: did you mean 'snapshot'\? kinds: (.*)$", text, re.M)
    assert hint and hint.group(1) == ", ".join(sorted(playbook.KINDS))  # the example session
    assert all(k.doc for k in playbook.KINDS.values())  # the docstring says what it does
