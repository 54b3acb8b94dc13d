"""`xfleet lab build|up|status|ssh|reset|down`: thin wrappers over xfleet.lab, the lab of real
OpenZFS nodes in qemu VMs (docs/lab.md).

xfleet.lab is imported inside the commands, so that `xfleet --help` stays fast."""

from __future__ import annotations

import os
from pathlib import Path

import click

from xfleet.cli.output import echo_json, emit, json_option, say


@click.group("lab")
def lab_group() -> None:
    """A lab of real OpenZFS storage nodes (qemu VMs) to test and rehearse against.

    \b
    Example:
      xfleet lab build && xfleet lab up --nodes 2
      xfleet -i inventory/lab.yaml sync && xfleet -i inventory/lab.yaml ls
      xfleet lab down
    """


@lab_group.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if the cached image exists.")
def lab_build(force: bool) -> None:
    """Build (or reuse) the cached Debian 12 + OpenZFS 2.3 image.

    \b
    Example:
      xfleet lab build
    """
    from xfleet import lab

    click.echo(str(lab.build(force=force, progress=say)))


@lab_group.command("up")
@click.option("--nodes", "-n", default=2, show_default=True, type=click.IntRange(1, 8),
              help="How many storage nodes.")
@click.option("--inventory-out", default="inventory/lab.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the lab inventory.")
@click.option("--fresh", is_flag=True, help="Start from clean disks.")
@click.option("--clients", default=0, show_default=True, type=click.IntRange(0, 2),
              help="How many client VMs (NVMe/TCP initiators client1.., no pool); running "
              "clients are kept.")
@click.option("--cold", is_flag=True,
              help="Boot every VM from the image, not from its saved boot (and save it anew).")
def lab_up(nodes: int, inventory_out: str, fresh: bool, clients: int, cold: bool) -> None:
    """Boot the lab nodes and write their inventory (with pinned host keys).

    A VM that booted once is saved when it is ready; the next `up` restores it in seconds
    (docs/lab.md, "Saved boots").

    \b
    Example:
      xfleet lab up --nodes 2
      xfleet lab up --nodes 2 --clients 1   # also client1, under 'initiators:'
      xfleet lab up --fresh --cold          # clean disks, booted from the image
    """
    from xfleet import lab

    lab.build(progress=say)
    state = lab.up(nodes=nodes, inventory_path=Path(inventory_out), fresh=fresh,
                   clients=clients, progress=say, cold=cold)
    click.echo(f"{len(state.storage_nodes)} lab nodes and {len(state.clients)} client(s) up; "
               f"inventory written to {inventory_out}")
    click.echo(f"next: xfleet -i {inventory_out} sync && xfleet -i {inventory_out} ls")


@lab_group.command("status")
@json_option
def lab_status(as_json: bool) -> None:
    """Show the lab VMs (storage nodes and clients): running, SSH port, ZFS answering.

    \b
    Example:
      xfleet lab status --json
    """
    from dataclasses import asdict  # lazy, like the others: keeps --help fast

    from xfleet import lab

    rows = [asdict(s) for s in lab.status()]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no lab nodes (run 'xfleet lab up')")
        return
    emit(list(rows[0].keys()), rows, "table")


@lab_group.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def lab_ssh(node: str, command: tuple[str, ...]) -> None:
    """Open a shell on a lab node (or run COMMAND there).

    \b
    Example:
      xfleet lab ssh lab1 zfs list
    """
    from xfleet import lab
    from xfleet.remote.transport import quote_command

    argv = lab.ssh_argv(node)
    if command:
        argv.append(quote_command(list(command)))
    os.execvp(argv[0], argv)


@lab_group.command("reset")
def lab_reset() -> None:
    """Recreate the pools of the running lab nodes (seconds, no reboot).

    \b
    Example:
      xfleet lab reset
    """
    from xfleet import lab

    lab.reset(progress=say)
    click.echo("pools recreated")


@lab_group.command("down")
def lab_down() -> None:
    """Stop the lab's own VMs (by their pid files).

    \b
    Example:
      xfleet lab down
    """
    from xfleet import lab

    stopped = lab.down(progress=say)
    click.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
