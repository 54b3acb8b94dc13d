"""Rules of the code's shape that a linter does not check (the layers are import-linter's
contracts in pyproject.toml, run by `make lint`; docs/architecture.md)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib

from conftest import ROOT

PACKAGE = ROOT / "xfleet"
FACES = ("cli", "tui", "serve")  # the faces: the CLI, the dashboard, the HTTP service


def _modules() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        if "programs" in rel.parts or rel.name == "__main__":
            continue  # remote programs run on nodes; __main__ runs the CLI
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out.append(".".join(parts))
    return out


def test_nothing_below_the_faces_loads_click_textual_or_rich_at_run_time() -> None:
    """import-linter sees import statements; this sees what importing really loads."""
    below = [m for m in _modules() if m.split(".")[1:2] not in ([f] for f in FACES)]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in below)
            + "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('click', 'textual', 'rich'))\nprint(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"modules below the faces loaded: {out.stdout.strip()}"


def test_no_function_level_import_outside_the_faces_without_a_reason() -> None:
    """An import inside a function hides a dependency (or an import cycle): outside the faces
    each one says why on its line (e.g. `# lazy: ...`)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.split("/")[0] in FACES or "programs/" in rel:
            continue
        lines = path.read_text().split("\n")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import | ast.ImportFrom) and \
                        "#" not in lines[sub.lineno - 1]:
                    offenders.append(f"xfleet/{rel}:{sub.lineno}: {lines[sub.lineno - 1].strip()}")
    assert offenders == []


def test_every_declared_dependency_is_imported() -> None:
    """A dependency nothing imports is removed from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    import_name = {"PyYAML": "yaml"}
    sources = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    unused = []
    for req in project["dependencies"]:
        dist = re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0]
        mod = import_name.get(dist, dist.replace("-", "_")).lower()
        if not re.search(rf"^\s*(import|from) {re.escape(mod)}\b", sources, re.M):
            unused.append(dist)
    assert unused == []


def test_only_the_transport_turns_argument_lists_into_shell_lines() -> None:
    """Every remote command is an argument list quoted in one place: quote_command."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        text = path.read_text()
        if rel != "remote/transport.py" and ("shlex.join(" in text or "shlex.quote(" in text):
            offenders.append(rel)
        if "shell=True" in text or "os.system(" in text:
            offenders.append(f"{rel}: runs a shell line")
    assert offenders == []


def test_no_insecure_ssh_option_anywhere() -> None:
    for path in PACKAGE.rglob("*"):
        if path.suffix in (".py", ".sh", ".bash"):
            text = path.read_text()
            assert "StrictHostKeyChecking=no" not in text, path
            assert "AutoAddPolicy" not in text, path
