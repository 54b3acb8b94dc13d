"""The real OpenZFS lab: Debian 12 VMs under QEMU with OpenZFS 2.3 from bookworm-backports.

A pure library (no CLI code): `xfleet lab build|up|status|ssh|reset|down` are thin wrappers.
Every long call takes `progress: Callable[[str], None] | None` for human-readable progress.
"""

from xfleet.lab.errors import LabError
from xfleet.lab.image import build, cached_image
from xfleet.lab.state import LabState, NodeStatus
from xfleet.lab.vm import down, kill_node, reset, run, ssh_argv, status, up, write_inventory

__all__ = [
    "LabError",
    "LabState",
    "NodeStatus",
    "build",
    "cached_image",
    "down",
    "kill_node",
    "reset",
    "run",
    "ssh_argv",
    "status",
    "up",
    "write_inventory",
]
