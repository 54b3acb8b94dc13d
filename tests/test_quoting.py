"""Every remote command is an argument list quoted in one place: transport.quote_command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "xfleet"
DISPLAY_ONLY = {"lab/capture.py"}  # prints argv in fixture headers; never executes them


def test_only_transport_turns_argument_lists_into_shell_lines() -> None:
    offenders = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        if rel != "transport.py" and rel not in DISPLAY_ONLY and (
            "shlex.join(" in text or "shlex.quote(" in text
        ):
            offenders.append(rel)
        if "shell=True" in text or "os.system(" in text:
            offenders.append(f"{rel}: runs a shell line")
    assert offenders == []


def test_no_insecure_ssh_option_anywhere() -> None:
    for path in ROOT.rglob("*.py"):
        text = path.read_text()
        assert "StrictHostKeyChecking=no" not in text, path
        assert "AutoAddPolicy" not in text, path
