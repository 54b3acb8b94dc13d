"""The root group and the entry point (xfleet/cli/main.py): every command module's commands are
added, and `xfleet`, `python -m xfleet` and `xfleet.cli.main` are the same program. How main()
ends on every exit path is tested in test_json_exit_paths.py."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT, run_cli

import xfleet.cli
from xfleet import __version__
from xfleet.cli.main import cli

TOP_LEVEL = {
    "inventory", "sync", "watch", "status", "move", "drain", "moves", "ls", "show", "stats",
    "sql", "tui", "demo", "lab", "compression", "report", "snapshot", "clone", "destroy",
    "set", "resize", "play", "plays", "upgrade", "rollouts", "target", "mirror", "serve",
    "snapshots", "replicate", "attach", "detach", "attachments", "initiators", "auth", "identity",
}


def test_the_root_group_has_every_command_group() -> None:
    assert set(cli.commands) == TOP_LEVEL
    r = run_cli("--help")
    assert r.code == 0
    section = r.out.split("Commands:", 1)[1].split("Examples:")[0]
    listed = set(re.findall(r"^  (\S+) ", section, re.M))
    assert listed == TOP_LEVEL


def test_the_entry_points_are_one_program() -> None:
    from xfleet.cli.main import main

    assert xfleet.cli.main is main and xfleet.cli.cli is cli  # [project.scripts] xfleet.cli:main
    r = run_cli("--version")
    assert r.code == 0 and r.out.strip() == f"xfleet, version {__version__}"
    p = subprocess.run([sys.executable, "-c", "from xfleet.cli import main; main()", "ls",
                        "--bogus"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "No such option '--bogus'" in p.stderr
