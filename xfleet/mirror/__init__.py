"""The mirror: every zvol, snapshot and clone of every node, in SQLite.

`xfleet.mirror` is the store's API (connect, transactions, the sync writers); the package also
holds the claims (xfleet/mirror/claims.py), the query language (query.py) and keyset paging
(paging.py). docs/mirror.md describes every table and column."""

from xfleet.mirror.store import (
    DATASET_TABLE_COLUMNS as DATASET_TABLE_COLUMNS,
)
from xfleet.mirror.store import (
    KEEP_RUNS as KEEP_RUNS,
)
from xfleet.mirror.store import (
    ROWS_PER_TRANSACTION as ROWS_PER_TRANSACTION,
)
from xfleet.mirror.store import (
    SCHEMA_VERSION as SCHEMA_VERSION,
)
from xfleet.mirror.store import (
    WRITE_PATIENCE as WRITE_PATIENCE,
)
from xfleet.mirror.store import (
    Checkpoint as Checkpoint,
)
from xfleet.mirror.store import (
    PoolCheckpoint as PoolCheckpoint,
)
from xfleet.mirror.store import (
    apply_pool_deltas as apply_pool_deltas,
)
from xfleet.mirror.store import (
    begin as begin,
)
from xfleet.mirror.store import (
    checkpoint as checkpoint,
)
from xfleet.mirror.store import (
    clones_under as clones_under,
)
from xfleet.mirror.store import (
    connect as connect,
)
from xfleet.mirror.store import (
    delete_pool_rows as delete_pool_rows,
)
from xfleet.mirror.store import (
    delete_trees as delete_trees,
)
from xfleet.mirror.store import (
    delete_unlisted as delete_unlisted,
)
from xfleet.mirror.store import (
    explain as explain,
)
from xfleet.mirror.store import (
    fail_run as fail_run,
)
from xfleet.mirror.store import (
    finish_incremental as finish_incremental,
)
from xfleet.mirror.store import (
    finish_run as finish_run,
)
from xfleet.mirror.store import (
    migrate as migrate,
)
from xfleet.mirror.store import (
    record_gap as record_gap,
)
from xfleet.mirror.store import (
    rollback as rollback,
)
from xfleet.mirror.store import (
    save_checkpoint as save_checkpoint,
)
from xfleet.mirror.store import (
    start_run as start_run,
)
from xfleet.mirror.store import (
    summarize_pools as summarize_pools,
)
from xfleet.mirror.store import (
    track_pool_deltas as track_pool_deltas,
)
from xfleet.mirror.store import (
    transaction as transaction,
)
from xfleet.mirror.store import (
    tree_ranges as tree_ranges,
)
from xfleet.mirror.store import (
    upsert_node as upsert_node,
)
from xfleet.mirror.store import (
    write_datasets as write_datasets,
)
from xfleet.mirror.store import (
    write_datasets_chunked as write_datasets_chunked,
)
from xfleet.mirror.store import (
    write_pools as write_pools,
)
