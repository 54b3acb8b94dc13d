"""Every command a simulated node answers, one module per command or family: zfs_list.py
(`zfs list`), zfs_get.py, zfs_set.py (set, inherit), zfs_create.py (create, clone),
zfs_snapshot.py (snapshot, bookmark), zfs_destroy.py, zfs_rename.py (rename, promote),
zfs_send.py and zfs_receive.py (the data path: simulated streams, resume tokens), zfs_hold.py
(hold, release, holds), zpool.py (list, get, status), events.py (`zpool events`, `zpool
history`), version.py, target.py (the simulated target daemon) and programs.py (xfleet's remote
programs).

Each module registers its handlers by name in xfleet.sim.registry when it is imported, so
importing this package completes the table SimTransport dispatches through.
"""

from xfleet.sim.commands import (
    events,
    programs,
    target,
    version,
    zfs_create,
    zfs_destroy,
    zfs_get,
    zfs_hold,
    zfs_list,
    zfs_receive,
    zfs_rename,
    zfs_send,
    zfs_set,
    zfs_snapshot,
    zpool,
)
from xfleet.sim.registry import PROGRAM, names

MODULES = (events, programs, target, version, zfs_create, zfs_destroy, zfs_get, zfs_hold,
           zfs_list, zfs_receive, zfs_rename, zfs_send, zfs_set, zfs_snapshot, zpool)

# the remote programs (xfleet/remote/programs/) a simulated node answers; the others say why not
PROGRAMS = frozenset(names(PROGRAM))
