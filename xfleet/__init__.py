"""xfleet: operator toolkit for fleets of ZFS storage nodes.

The core (inventory, transport, zfs, mirror, sync, query, sim, lab) never imports click or
textual; the CLI (`xfleet.cli`) and the TUI are thin faces over these modules.
"""

__version__ = "0.1.0"
