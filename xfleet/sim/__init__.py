"""A simulated ZFS storage node (`kind: sim`): the zfs/zpool commands xfleet sends, answered
from a deterministic fleet of tenants, zvols, snapshots and clones, plus an overlay of changes.

A tour, in the order a command travels:

- transport.py: SimTransport, the Transport of a simulated node: dispatch through the registry
  (registry.py) to a handler in commands/ (one module per command or family), streaming,
  locking, atomic mutations, reboots;
- settings.py: SimSettings (the inventory's `sim:` mapping) and what the nodes claim to run;
- generator.py: the compiled per-tenant generator, the hot path of every listing, and
  base.py: the base fleet it generates (tenants, volumes, snapshots, clones, never stored);
- overlay.py: what mutations changed (records and hidden names, in SQLite with a state
  directory), journal.py: pool history and the kernel event queue, transaction.py: one
  mutation's working copy and what it logs as OpenZFS logs it;
- view.py: base + overlay for one command, with the space figures zfs derives;
- the data path: stream.py (what `zfs send` writes and `zfs receive` reads, resume tokens),
  process.py (commands with binary stdin/stdout, for a relay), content.py (what a volume
  holds: a content identity, written by `SimTransport.write`, hashed by the verification);
- properties.py, names.py, options.py, formats.py, space.py: zfs's properties, dataset names,
  command-line parsing, output formats and space accounting.

Output follows OpenZFS 2.3 `-H -p` conventions; see docs/sim.md for settings and limits.
"""

from xfleet.sim.commands import PROGRAMS as PROGRAMS
from xfleet.sim.commands.target import TARGET as TARGET
from xfleet.sim.generator import FAST_COLUMNS as FAST_COLUMNS
from xfleet.sim.generator import FIELDS as FIELDS
from xfleet.sim.settings import DEFAULT_NOW as DEFAULT_NOW
from xfleet.sim.settings import SETTINGS_DOC as SETTINGS_DOC
from xfleet.sim.settings import ZFS_KMOD_VERSION as ZFS_KMOD_VERSION
from xfleet.sim.settings import ZFS_VERSION as ZFS_VERSION
from xfleet.sim.settings import SimSettings as SimSettings
from xfleet.sim.transport import SimTransport as SimTransport
