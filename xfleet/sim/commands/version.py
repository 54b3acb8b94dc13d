"""`zfs version` and `zpool version`: the OpenZFS release the simulated nodes claim to run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from xfleet.sim.registry import Context, command
from xfleet.sim.settings import ZFS_KMOD_VERSION, ZFS_VERSION

if TYPE_CHECKING:
    from xfleet.sim.transport import SimTransport


@command("zfs", "version")
@command("zpool", "version")
def version(sim: SimTransport, args: list[str], ctx: Context) -> Iterator[str]:
    return iter([ZFS_VERSION, ZFS_KMOD_VERSION])
