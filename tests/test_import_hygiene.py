"""The core never imports click or textual: the CLI and TUI are thin faces over it."""

import subprocess
import sys
from pathlib import Path

CORE = ["inventory", "transport", "zfs", "events", "mirror", "sync", "watch", "moves", "relay",
        "query", "names", "units", "errors", "sim", "paging", "compression", "estimate",
        "report", "lifecycle", "playbook", "yamlsrc", "target", "rollout", "claims",
        "initiator"]


def test_core_does_not_import_click_or_textual() -> None:
    code = (
        "import sys\n"
        + "".join(f"import xfleet.{m}\n" for m in CORE)
        + "import xfleet.lab\nimport xfleet.tui\nimport xfleet.tui.operations\n"
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'textual'))\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core modules pulled in: {out.stdout.strip()}"


def test_core_sources_have_no_ui_imports() -> None:
    root = Path(__file__).resolve().parent.parent / "xfleet"
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("cli", "tui")) or rel == "__main__.py":
            continue
        text = path.read_text()
        for word in ("import click", "from click", "import textual", "from textual"):
            if word in text:
                offenders.append(f"{rel}: {word}")
    assert offenders == []
