"""Every command of the CLI, found by walking the click tree from the root group, has a help
text with an example: `xfleet CMD --help` is the first documentation an operator reads."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest
from conftest import run_cli

from xfleet.cli import cli


def commands(cmd: click.Command = cli, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    """(path, command) for every command and group under `cmd`, groups included."""
    if path:
        yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from commands(sub, (*path, name))


def rendered_help(path: tuple[str, ...]) -> str:
    """The text `xfleet PATH --help` prints (rendered by click, as a user sees it)."""
    ctx = click.Context(cli, info_name="xfleet")
    cmd: click.Command = cli
    for name in path:
        assert isinstance(cmd, click.Group)
        sub = cmd.get_command(ctx, name)
        assert sub is not None, path
        ctx = click.Context(sub, info_name=name, parent=ctx)
        cmd = sub
    return cmd.get_help(ctx)


ALL = sorted(path for path, _ in commands())


def test_the_walk_finds_every_command() -> None:
    assert len(ALL) > 50
    assert ("rollouts", "pause") in ALL and ("report", "compression") in ALL
    assert ("inventory",) in ALL and ("lab", "ssh") in ALL


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) for p in ALL])
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    text = rendered_help(path)
    cmd = dict(commands())[path]
    assert (cmd.help or "").strip(), f"xfleet {' '.join(path)} has no help text"
    assert cmd.get_short_help_str().strip(), f"xfleet {' '.join(path)}: empty summary line"
    assert "Example" in text, f"xfleet {' '.join(path)} --help shows no example"
    example = text.split("Example", 1)[1]
    assert re.search(rf"xfleet( -[im] \S+)* {path[0]}\b", example), \
        f"xfleet {' '.join(path)} --help: its example does not run xfleet {path[0]}"


def test_the_command_line_prints_the_help() -> None:
    r = run_cli("rollouts", "stop", "--help")
    assert r.code == 0 and "Stop a rollout for good" in r.out and "Example" in r.out
    r = run_cli("rollouts", "--help")
    assert r.code == 0 and "pause   Pause a rollout after the nodes being upgraded" in r.out
