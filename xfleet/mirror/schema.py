"""The mirror's schema: its tables as numbered migrations, applied in order on open.

A migration is never edited once released: a change is a new one (the file's version is
`PRAGMA user_version`; xfleet/mirror/store.py's `migrate` applies what a mirror lacks).
docs/mirror.md documents every table and column.
"""

from __future__ import annotations

from collections.abc import Iterator

from xfleet.core.zfs import DATASET_COLUMNS

# Columns of `datasets` filled from `zfs list`, in DATASET_COLUMNS order.
DATASET_TABLE_COLUMNS: tuple[str, ...] = (
    "node",
    "pool",
    *DATASET_COLUMNS,
    "tenant",
    "user_properties",
    "synced_at",
    "sync_run",
)

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        address TEXT,
        labels TEXT NOT NULL DEFAULT '{}',
        groups TEXT NOT NULL DEFAULT '[]',
        last_attempt REAL,
        last_success REAL,
        stale INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        datasets INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE pools (
        node TEXT NOT NULL,
        name TEXT NOT NULL,
        guid TEXT,
        size INTEGER,
        allocated INTEGER,
        free INTEGER,
        health TEXT,
        ashift INTEGER,
        fragmentation INTEGER,
        capacity INTEGER,
        dedupratio REAL,
        volumes INTEGER NOT NULL DEFAULT 0,
        filesystems INTEGER NOT NULL DEFAULT 0,
        snapshots INTEGER NOT NULL DEFAULT 0,
        bookmarks INTEGER NOT NULL DEFAULT 0,
        clones INTEGER NOT NULL DEFAULT 0,
        volsize INTEGER NOT NULL DEFAULT 0,
        logicalused INTEGER NOT NULL DEFAULT 0,
        used INTEGER NOT NULL DEFAULT 0,
        usedbyrefreservation INTEGER NOT NULL DEFAULT 0,
        synced_at REAL NOT NULL,
        PRIMARY KEY (node, name)
    );
    CREATE TABLE datasets (
        id INTEGER PRIMARY KEY,
        node TEXT NOT NULL,
        pool TEXT NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        guid TEXT,
        createtxg INTEGER,
        origin TEXT,
        creation INTEGER,
        volsize INTEGER,
        volblocksize INTEGER,
        used INTEGER,
        referenced INTEGER,
        logicalused INTEGER,
        logicalreferenced INTEGER,
        usedbysnapshots INTEGER,
        usedbyrefreservation INTEGER,
        refreservation INTEGER,
        written INTEGER,
        compression TEXT,
        compressratio REAL,
        refcompressratio REAL,
        tenant TEXT,
        user_properties TEXT,
        synced_at REAL NOT NULL,
        sync_run INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX datasets_node_name ON datasets (node, name);
    CREATE INDEX datasets_node_type_used ON datasets (node, type, used);
    CREATE INDEX datasets_used ON datasets (used);
    CREATE INDEX datasets_name ON datasets (name);
    CREATE INDEX datasets_origin ON datasets (origin) WHERE origin IS NOT NULL;
    CREATE INDEX datasets_tenant ON datasets (tenant) WHERE tenant IS NOT NULL;
    CREATE TABLE sync_runs (
        id INTEGER PRIMARY KEY,
        node TEXT NOT NULL,
        kind TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        status TEXT NOT NULL,
        datasets INTEGER,
        added INTEGER,
        removed INTEGER,
        commands INTEGER,
        error TEXT
    );
    CREATE INDEX sync_runs_node ON sync_runs (node, id);
    """,
    # v2: incremental sync. Per-node checkpoints of the change feed, per-pool txg and space
    # freshness, and what each run did.
    2: """
    ALTER TABLE nodes ADD COLUMN last_eid INTEGER;
    ALTER TABLE nodes ADD COLUMN last_eid_stamp TEXT;
    ALTER TABLE nodes ADD COLUMN last_change_at REAL;
    ALTER TABLE nodes ADD COLUMN last_full REAL;
    ALTER TABLE nodes ADD COLUMN last_incremental REAL;
    ALTER TABLE nodes ADD COLUMN last_reconcile REAL;
    ALTER TABLE nodes ADD COLUMN last_refresh REAL;
    ALTER TABLE nodes ADD COLUMN gaps INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nodes ADD COLUMN last_gap TEXT;
    ALTER TABLE nodes ADD COLUMN last_gap_at REAL;
    ALTER TABLE nodes ADD COLUMN watch_pid INTEGER;
    ALTER TABLE nodes ADD COLUMN watch_host TEXT;
    ALTER TABLE nodes ADD COLUMN watch_heartbeat REAL;
    ALTER TABLE nodes ADD COLUMN watch_state TEXT;
    ALTER TABLE pools ADD COLUMN load_guid TEXT;
    ALTER TABLE pools ADD COLUMN last_txg INTEGER;
    ALTER TABLE pools ADD COLUMN space_dirty_since REAL;
    ALTER TABLE pools ADD COLUMN refresh_allocated INTEGER;
    ALTER TABLE pools ADD COLUMN refresh_free INTEGER;
    ALTER TABLE sync_runs ADD COLUMN events INTEGER;
    ALTER TABLE sync_runs ADD COLUMN fetched INTEGER;
    ALTER TABLE sync_runs ADD COLUMN bytes INTEGER;
    ALTER TABLE sync_runs ADD COLUMN gap TEXT;
    CREATE INDEX datasets_node_synced ON datasets (node, pool, synced_at)
    """,
    # v3: volume moves, a durable state machine per move, and its log.
    3: """
    CREATE TABLE moves (
        id INTEGER PRIMARY KEY,
        volume TEXT NOT NULL,
        source_node TEXT NOT NULL,
        target_node TEXT NOT NULL,
        target_volume TEXT NOT NULL,
        state TEXT NOT NULL,
        step TEXT,
        snapshots TEXT NOT NULL DEFAULT '[]',
        received TEXT,
        send_flags TEXT,
        receive_properties TEXT NOT NULL DEFAULT '{}',
        verify TEXT NOT NULL DEFAULT 'sampled',
        verified TEXT,
        bytes_total INTEGER,
        bytes_done INTEGER NOT NULL DEFAULT 0,
        rounds INTEGER NOT NULL DEFAULT 0,
        retired_as TEXT,
        options TEXT NOT NULL DEFAULT '{}',
        pid INTEGER,
        host TEXT,
        heartbeat REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        error TEXT
    );
    CREATE INDEX moves_state ON moves (state);
    CREATE INDEX moves_volume ON moves (source_node, volume);
    CREATE TABLE move_log (
        move INTEGER NOT NULL,
        at REAL NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX move_log_move ON move_log (move, at)
    """,
    4: """
    CREATE TABLE compression_runs (
        id INTEGER PRIMARY KEY,
        policy TEXT,
        user TEXT,
        host TEXT,
        state TEXT NOT NULL,
        changes INTEGER NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        commands INTEGER NOT NULL DEFAULT 0,
        batch_size INTEGER NOT NULL DEFAULT 500,
        pid INTEGER,
        heartbeat REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        error TEXT
    );
    CREATE TABLE compression_changes (
        id INTEGER PRIMARY KEY,
        run INTEGER NOT NULL,
        node TEXT NOT NULL,
        name TEXT NOT NULL,
        old TEXT,
        new TEXT NOT NULL,
        rule TEXT,
        batch INTEGER,
        state TEXT NOT NULL DEFAULT 'pending',
        at REAL,
        error TEXT
    );
    CREATE INDEX compression_changes_run ON compression_changes (run, state, node, new);
    CREATE INDEX compression_changes_volume ON compression_changes (node, name);
    CREATE TABLE compression_estimates (
        node TEXT NOT NULL,
        name TEXT NOT NULL,
        algorithm TEXT NOT NULL,
        ratio REAL,
        ratio_low REAL,
        ratio_high REAL,
        zero_fraction REAL,
        blocks INTEGER NOT NULL,
        blocks_read INTEGER NOT NULL,
        blocks_total INTEGER NOT NULL,
        bytes_read INTEGER NOT NULL,
        volblocksize INTEGER NOT NULL,
        ashift INTEGER NOT NULL,
        ashift_assumed INTEGER NOT NULL DEFAULT 0,
        method TEXT NOT NULL DEFAULT 'sampled',
        estimated_at REAL NOT NULL,
        PRIMARY KEY (node, name, algorithm)
    );
    CREATE TABLE compression_daily (
        day TEXT NOT NULL,
        node TEXT NOT NULL,
        pool TEXT NOT NULL,
        volumes INTEGER NOT NULL,
        logicalused INTEGER NOT NULL,
        used INTEGER NOT NULL,
        usedbyrefreservation INTEGER NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (day, node, pool)
    )
    """,
    # v5: playbook runs journaled (runs, steps, per-item results) and an audit of lifecycle
    # commands (docs/mirror.md, "Playbooks and lifecycle operations").
    5: """
    CREATE TABLE play_runs (
        id INTEGER PRIMARY KEY,
        file TEXT NOT NULL,
        name TEXT,
        digest TEXT NOT NULL,
        vars TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL,
        step INTEGER,
        pid INTEGER,
        host TEXT,
        heartbeat REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        error TEXT
    );
    CREATE TABLE play_steps (
        run INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        kind TEXT NOT NULL,
        name TEXT,
        line INTEGER NOT NULL,
        state TEXT NOT NULL,
        items INTEGER NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0,
        commands INTEGER NOT NULL DEFAULT 0,
        result TEXT,
        started_at REAL,
        finished_at REAL,
        error TEXT,
        PRIMARY KEY (run, idx)
    );
    CREATE TABLE play_items (
        run INTEGER NOT NULL,
        step INTEGER NOT NULL,
        item TEXT NOT NULL,
        state TEXT NOT NULL,
        result TEXT,
        commands INTEGER NOT NULL DEFAULT 0,
        at REAL NOT NULL,
        error TEXT,
        PRIMARY KEY (run, step, item)
    );
    CREATE TABLE lifecycle_log (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        op TEXT NOT NULL,
        node TEXT NOT NULL,
        argv TEXT NOT NULL,
        ok INTEGER NOT NULL,
        error TEXT,
        source TEXT NOT NULL,
        via TEXT NOT NULL DEFAULT 'zfs'
    );
    CREATE INDEX lifecycle_log_at ON lifecycle_log (at)
    """,
    6: """
    ALTER TABLE moves ADD COLUMN control TEXT;
    ALTER TABLE moves ADD COLUMN rate REAL
    """,
    7: """
    CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL DEFAULT 'target',
        version TEXT NOT NULL,
        selection TEXT,
        options TEXT NOT NULL,
        packages TEXT NOT NULL,
        state TEXT NOT NULL,
        control TEXT,
        batch INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        pid INTEGER,
        host TEXT,
        heartbeat REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE TABLE rollout_nodes (
        rollout INTEGER NOT NULL,
        node TEXT NOT NULL,
        batch INTEGER NOT NULL,
        position INTEGER NOT NULL,
        from_version TEXT,
        state TEXT NOT NULL,
        step TEXT,
        exports INTEGER,
        exports_digest TEXT,
        started_at REAL,
        finished_at REAL,
        error TEXT,
        PRIMARY KEY (rollout, node)
    );
    CREATE TABLE rollout_log (
        rollout INTEGER NOT NULL,
        at REAL NOT NULL,
        node TEXT,
        state TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX rollout_log_rollout ON rollout_log (rollout, at)
    """,
    8: """
    ALTER TABLE lifecycle_log ADD COLUMN state TEXT NOT NULL DEFAULT 'done';
    UPDATE lifecycle_log SET state = 'failed' WHERE ok = 0;
    ALTER TABLE sync_runs ADD COLUMN pid INTEGER;
    ALTER TABLE sync_runs ADD COLUMN host TEXT
    """,
    # v9: a team's mirror (docs/team.md). Who did it: the operator (XFLEET_OPERATOR, else
    # user@host) and their --reason on every job, log and audit row; who holds a job now and
    # since when, for refusals on every machine.
    9: """
    ALTER TABLE compression_runs RENAME COLUMN user TO operator;
    ALTER TABLE compression_runs ADD COLUMN operator_reason TEXT;
    ALTER TABLE compression_runs ADD COLUMN held_by TEXT;
    ALTER TABLE compression_runs ADD COLUMN held_since REAL;
    ALTER TABLE moves ADD COLUMN operator TEXT;
    ALTER TABLE moves ADD COLUMN operator_reason TEXT;
    ALTER TABLE moves ADD COLUMN held_by TEXT;
    ALTER TABLE moves ADD COLUMN held_since REAL;
    ALTER TABLE rollouts ADD COLUMN operator TEXT;
    ALTER TABLE rollouts ADD COLUMN operator_reason TEXT;
    ALTER TABLE rollouts ADD COLUMN held_by TEXT;
    ALTER TABLE rollouts ADD COLUMN held_since REAL;
    ALTER TABLE play_runs ADD COLUMN operator TEXT;
    ALTER TABLE play_runs ADD COLUMN operator_reason TEXT;
    ALTER TABLE play_runs ADD COLUMN held_by TEXT;
    ALTER TABLE play_runs ADD COLUMN held_since REAL;
    ALTER TABLE move_log ADD COLUMN operator TEXT;
    ALTER TABLE rollout_log ADD COLUMN operator TEXT;
    ALTER TABLE lifecycle_log ADD COLUMN operator TEXT;
    ALTER TABLE lifecycle_log ADD COLUMN operator_reason TEXT;
    ALTER TABLE sync_runs ADD COLUMN operator TEXT
    """,
    # v10: the always-on service (docs/serve.md). Pool health from `zpool status` (state, scan,
    # error counters summed over the vdevs, and the vdev tree itself); a daily history of each
    # pool's allocation and of each tenant's volumes per pool (xfleet report capacity).
    10: """
    ALTER TABLE pools ADD COLUMN status TEXT;
    ALTER TABLE pools ADD COLUMN action TEXT;
    ALTER TABLE pools ADD COLUMN scan_function TEXT;
    ALTER TABLE pools ADD COLUMN scan_state TEXT;
    ALTER TABLE pools ADD COLUMN scan_start REAL;
    ALTER TABLE pools ADD COLUMN scan_end REAL;
    ALTER TABLE pools ADD COLUMN scan_errors INTEGER;
    ALTER TABLE pools ADD COLUMN read_errors INTEGER;
    ALTER TABLE pools ADD COLUMN write_errors INTEGER;
    ALTER TABLE pools ADD COLUMN checksum_errors INTEGER;
    ALTER TABLE pools ADD COLUMN data_errors INTEGER;
    ALTER TABLE pools ADD COLUMN health_at REAL;
    CREATE TABLE vdevs (
        node TEXT NOT NULL,
        pool TEXT NOT NULL,
        position INTEGER NOT NULL,
        parent INTEGER,
        depth INTEGER NOT NULL,
        name TEXT NOT NULL,
        vdev_type TEXT,
        path TEXT,
        state TEXT,
        read_errors INTEGER,
        write_errors INTEGER,
        checksum_errors INTEGER,
        slow_ios INTEGER,
        PRIMARY KEY (node, pool, position)
    );
    CREATE TABLE capacity_daily (
        day TEXT NOT NULL,
        node TEXT NOT NULL,
        pool TEXT NOT NULL,
        size INTEGER,
        allocated INTEGER,
        free INTEGER,
        volumes INTEGER NOT NULL,
        volsize INTEGER NOT NULL,
        used INTEGER NOT NULL,
        logicalused INTEGER NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (day, node, pool)
    );
    CREATE TABLE tenant_daily (
        day TEXT NOT NULL,
        node TEXT NOT NULL,
        pool TEXT NOT NULL,
        tenant TEXT NOT NULL,
        volumes INTEGER NOT NULL,
        volsize INTEGER NOT NULL,
        used INTEGER NOT NULL,
        logicalused INTEGER NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (day, node, pool, tenant)
    )
    """,
    # v11: a snapshot policy run is a journaled job (docs/snapshots.md): the policy file, the
    # time it runs as of, the snapshot names it takes, what it took and pruned, its step; an
    # interrupted run is finished by `xfleet snapshots run --resume ID` (or the next run).
    11: """
    CREATE TABLE snapshot_runs (
        id INTEGER PRIMARY KEY,
        policy TEXT NOT NULL,
        policy_digest TEXT NOT NULL,
        mode TEXT NOT NULL,
        at REAL NOT NULL,
        names TEXT NOT NULL DEFAULT '{}',
        max_prune INTEGER NOT NULL,
        state TEXT NOT NULL,
        step TEXT,
        planned_take INTEGER NOT NULL DEFAULT 0,
        taken INTEGER NOT NULL DEFAULT 0,
        planned_prune INTEGER NOT NULL DEFAULT 0,
        pruned INTEGER NOT NULL DEFAULT 0,
        skipped INTEGER NOT NULL DEFAULT 0,
        commands INTEGER NOT NULL DEFAULT 0,
        detail TEXT NOT NULL DEFAULT '{}',
        resumed INTEGER NOT NULL DEFAULT 0,
        operator TEXT,
        operator_reason TEXT,
        held_by TEXT,
        held_since REAL,
        pid INTEGER,
        host TEXT,
        heartbeat REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        error TEXT
    );
    CREATE INDEX snapshot_runs_state ON snapshot_runs (state)
    """,
    # v12: standing replicas (docs/replicate.md): one row per (source node, volume, target
    # node), its cursor (the newest source snapshot the copy holds, held and bookmarked on the
    # source), the source time its data is from, its RPO; a journaled job kind; and its log.
    12: """
    CREATE TABLE replicas (
        id INTEGER PRIMARY KEY,
        policy TEXT NOT NULL,
        source_node TEXT NOT NULL,
        volume TEXT NOT NULL,
        target_node TEXT NOT NULL,
        target_volume TEXT NOT NULL,
        rpo REAL NOT NULL,
        state TEXT NOT NULL,
        step TEXT,
        cursor TEXT,
        cursor_guid TEXT,
        cursor_txg INTEGER,
        as_of REAL,
        send_flags TEXT NOT NULL DEFAULT '[]',
        receive_properties TEXT NOT NULL DEFAULT '{}',
        bytes_last INTEGER,
        bytes_total INTEGER NOT NULL DEFAULT 0,
        rounds INTEGER NOT NULL DEFAULT 0,
        last_round_at REAL,
        move INTEGER,
        error TEXT,
        operator TEXT,
        held_by TEXT,
        held_since REAL,
        pid INTEGER,
        host TEXT,
        heartbeat REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE UNIQUE INDEX replicas_source ON replicas (source_node, volume, target_node);
    CREATE INDEX replicas_target ON replicas (target_node, target_volume);
    CREATE INDEX replicas_policy ON replicas (policy, target_node, state);
    CREATE TABLE replica_log (
        replica INTEGER NOT NULL,
        at REAL NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL,
        operator TEXT
    );
    CREATE INDEX replica_log_replica ON replica_log (replica, at)
    """,
    # v13: NVMe-oF access control (docs/access.md). The initiators' host NQNs as read from
    # /etc/nvme/hostnqn; which initiator may reach which volume's subsystem (a volume has one
    # writer unless every attachment of it is shared); every attach/detach and its outcome.
    13: """
    CREATE TABLE initiators (
        name TEXT PRIMARY KEY,
        hostnqn TEXT NOT NULL,
        address TEXT,
        read_at REAL NOT NULL,
        operator TEXT
    );
    CREATE INDEX initiators_hostnqn ON initiators (hostnqn);
    CREATE TABLE attachments (
        id INTEGER PRIMARY KEY,
        node TEXT NOT NULL,
        volume TEXT NOT NULL,
        initiator TEXT NOT NULL,
        hostnqn TEXT NOT NULL,
        nqn TEXT,
        shared INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        batch TEXT NOT NULL,
        operator TEXT,
        operator_reason TEXT,
        error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX attachments_volume ON attachments (node, volume, initiator);
    CREATE INDEX attachments_initiator ON attachments (initiator);
    CREATE TABLE attachment_log (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        batch TEXT NOT NULL,
        action TEXT NOT NULL,
        node TEXT,
        volume TEXT NOT NULL,
        initiator TEXT NOT NULL,
        hostnqn TEXT,
        nqn TEXT,
        shared INTEGER NOT NULL DEFAULT 0,
        outcome TEXT NOT NULL,
        message TEXT,
        operator TEXT,
        operator_reason TEXT
    );
    CREATE INDEX attachment_log_at ON attachment_log (at);
    CREATE INDEX attachment_log_volume ON attachment_log (node, volume)
    """,
    14: """
    CREATE TABLE auth_log (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        batch TEXT NOT NULL,
        node TEXT NOT NULL,
        initiator TEXT NOT NULL,
        hostnqn TEXT NOT NULL,
        source TEXT,
        target TEXT,
        connections TEXT,
        outcome TEXT NOT NULL,
        message TEXT,
        operator TEXT
    );
    CREATE INDEX auth_log_at ON auth_log (at);
    CREATE INDEX auth_log_initiator ON auth_log (initiator, at)
    """,
}


# What one dataset row adds to its pool's summary (`pools` counts and volume byte sums, and the
# node's dataset count): logged per written row while an incremental sync applies changes
# (ingest.track_pool_deltas: SQLite's temporary triggers, PostgreSQL's trigger below), so the
# summaries follow the changes without scanning the node.
DELTA_COLUMNS = ("datasets", "volumes", "filesystems", "snapshots", "bookmarks", "clones",
                 "volsize", "logicalused", "used", "usedbyrefreservation")


def delta_values(row: str, sign: str) -> str:
    """The DELTA_COLUMNS values of row `row` (NEW or OLD) signed `sign` (+ or -), as SQL."""
    def one(cond: str) -> str:
        return f"{sign}(CASE WHEN {cond} THEN 1 ELSE 0 END)"

    vol = f"{row}.type = 'volume'"
    return ", ".join([
        f"{row}.node", f"{row}.pool", f"{sign}1", one(vol),
        one(f"{row}.type = 'filesystem'"), one(f"{row}.type = 'snapshot'"),
        one(f"{row}.type = 'bookmark'"), one(f"{row}.origin IS NOT NULL"),
        *(f"{sign}(CASE WHEN {vol} THEN coalesce({row}.{c}, 0) ELSE 0 END)"
          for c in ("volsize", "logicalused", "used", "usedbyrefreservation")),
    ])


# The schema version is the newest migration: add a numbered entry to MIGRATIONS to change it.
SCHEMA_VERSION = max(MIGRATIONS)


def split_sql(script: str) -> Iterator[str]:
    for stmt in script.split(";"):
        if stmt.strip():
            yield stmt
