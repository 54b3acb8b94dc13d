"""The xfleet dashboard (Textual). `run()` starts it; the app lives in xfleet.tui.app.

Importing this package does not import textual (so `xfleet.tui.operations` stays usable from
scripts); `run` imports the app when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xfleet.mirror.backend import Location

if TYPE_CHECKING:
    from xfleet.fleet.inventory import Inventory

__all__ = ["run"]


def run(mirror_path: Location, *, inventory: Inventory | None = None, write: bool = False) -> None:
    """Open the dashboard on `mirror_path` (read-only unless `write`)."""
    from xfleet.tui.app import run as _run

    _run(mirror_path, inventory=inventory, write=write)
