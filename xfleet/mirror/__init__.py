"""The mirror: every zvol, snapshot and clone of every node, in SQLite or PostgreSQL.

`xfleet.mirror` is the mirror's API: opening it and its transactions (store.py), its schema
(schema.py) and the sync writers (ingest.py), on either engine (backend.py, postgres.py).
The package also holds the claims (claims.py), journaled jobs (jobs.py), the query language
(query.py), keyset paging (paging.py) and change notices for readers (changes.py).
docs/mirror.md describes every table and column.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xfleet.mirror.ingest import (
        KEEP_RUNS,
        Checkpoint,
        PoolCheckpoint,
        apply_pool_deltas,
        checkpoint,
        clones_under,
        delete_pool_rows,
        delete_trees,
        delete_unlisted,
        fail_run,
        finish_incremental,
        finish_run,
        record_gap,
        save_checkpoint,
        start_run,
        summarize_pools,
        track_pool_deltas,
        tree_ranges,
        upsert_node,
        write_datasets,
        write_datasets_chunked,
        write_health,
        write_pools,
    )
    from xfleet.mirror.schema import (
        DATASET_TABLE_COLUMNS,
        MIGRATIONS,
        SCHEMA_VERSION,
        split_sql,
    )
    from xfleet.mirror.store import (
        ROWS_PER_TRANSACTION,
        WRITE_PATIENCE,
        begin,
        connect,
        explain,
        has_table,
        inserted_id,
        is_postgres,
        migrate,
        rollback,
        schema_version,
        transaction,
    )

_WHERE = {
    "Checkpoint": "xfleet.mirror.ingest",
    "DATASET_TABLE_COLUMNS": "xfleet.mirror.schema",
    "KEEP_RUNS": "xfleet.mirror.ingest",
    "MIGRATIONS": "xfleet.mirror.schema",
    "PoolCheckpoint": "xfleet.mirror.ingest",
    "ROWS_PER_TRANSACTION": "xfleet.mirror.store",
    "SCHEMA_VERSION": "xfleet.mirror.schema",
    "WRITE_PATIENCE": "xfleet.mirror.store",
    "apply_pool_deltas": "xfleet.mirror.ingest",
    "begin": "xfleet.mirror.store",
    "checkpoint": "xfleet.mirror.ingest",
    "clones_under": "xfleet.mirror.ingest",
    "connect": "xfleet.mirror.store",
    "delete_pool_rows": "xfleet.mirror.ingest",
    "delete_trees": "xfleet.mirror.ingest",
    "delete_unlisted": "xfleet.mirror.ingest",
    "explain": "xfleet.mirror.store",
    "fail_run": "xfleet.mirror.ingest",
    "finish_incremental": "xfleet.mirror.ingest",
    "finish_run": "xfleet.mirror.ingest",
    "has_table": "xfleet.mirror.store",
    "inserted_id": "xfleet.mirror.store",
    "is_postgres": "xfleet.mirror.store",
    "migrate": "xfleet.mirror.store",
    "record_gap": "xfleet.mirror.ingest",
    "rollback": "xfleet.mirror.store",
    "save_checkpoint": "xfleet.mirror.ingest",
    "schema_version": "xfleet.mirror.store",
    "split_sql": "xfleet.mirror.schema",
    "start_run": "xfleet.mirror.ingest",
    "summarize_pools": "xfleet.mirror.ingest",
    "track_pool_deltas": "xfleet.mirror.ingest",
    "transaction": "xfleet.mirror.store",
    "tree_ranges": "xfleet.mirror.ingest",
    "upsert_node": "xfleet.mirror.ingest",
    "write_datasets": "xfleet.mirror.ingest",
    "write_datasets_chunked": "xfleet.mirror.ingest",
    "write_health": "xfleet.mirror.ingest",
    "write_pools": "xfleet.mirror.ingest",
}


if not TYPE_CHECKING:  # (mypy reads the imports above: a typo stays an error)

    def __getattr__(name: str) -> Any:
        module = _WHERE.get(name)
        if module is None:
            raise AttributeError(f"module 'xfleet.mirror' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value


__all__ = [
    "Checkpoint",
    "DATASET_TABLE_COLUMNS",
    "KEEP_RUNS",
    "MIGRATIONS",
    "PoolCheckpoint",
    "ROWS_PER_TRANSACTION",
    "SCHEMA_VERSION",
    "WRITE_PATIENCE",
    "apply_pool_deltas",
    "begin",
    "checkpoint",
    "clones_under",
    "connect",
    "delete_pool_rows",
    "delete_trees",
    "delete_unlisted",
    "explain",
    "has_table",
    "inserted_id",
    "is_postgres",
    "schema_version",
    "fail_run",
    "finish_incremental",
    "finish_run",
    "migrate",
    "record_gap",
    "rollback",
    "save_checkpoint",
    "split_sql",
    "start_run",
    "summarize_pools",
    "track_pool_deltas",
    "transaction",
    "tree_ranges",
    "upsert_node",
    "write_datasets",
    "write_datasets_chunked",
    "write_health",
    "write_pools",
]
