"""Full sync: list every dataset of every node and mirror it.

Per node, five remote commands whatever the number of datasets: `zpool list`, `zpool events`,
one `zfs list -Hp -t all -o ...` of the native columns whose output is streamed, and, at the
same time, one `zfs get -j` of the user properties set on the node's datasets (JSON, since a
user property's value may hold any character; see xfleet.core.zfs), then one `zpool status -j`
of the pools' health (full.read_health). Nodes are listed in parallel (bounded).
Each node's listing is spooled to a temporary file beside the mirror (disk, not memory) with
no lock held, then applied in short transactions of mirror.ROWS_PER_TRANSACTION rows; rows
that disappeared are removed only when the node's listing completed. No node's remote listing
waits on another, and no other writer waits longer than one chunk. A node that fails keeps its
last-known rows, marked stale, with the error recorded.
"""

from xfleet.ops.sync.full import (
    FETCH_BATCH,
    MISSING,
    Job,
    NodeSync,
    Progress,
    PropsOf,
    SyncReport,
    dataset_rows,
    full_node,
    get_values,
    pools_and_load_guids,
    queued_events,
    read_values,
    resume_values,
    spool_file,
)
from xfleet.ops.sync.incremental import (
    RECONCILE_TREE_THRESHOLD,
    apply_events,
    incremental_node,
    new_events,
    refetch,
)
from xfleet.ops.sync.run import (
    sync,
)

__all__ = [
    "FETCH_BATCH",
    "Job",
    "MISSING",
    "NodeSync",
    "Progress",
    "PropsOf",
    "RECONCILE_TREE_THRESHOLD",
    "SyncReport",
    "apply_events",
    "dataset_rows",
    "full_node",
    "get_values",
    "incremental_node",
    "new_events",
    "pools_and_load_guids",
    "queued_events",
    "read_values",
    "refetch",
    "resume_values",
    "spool_file",
    "sync",
]
