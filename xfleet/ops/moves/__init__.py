"""Volume moves: resumable, verified zfs send/receive migrations between nodes, with cutover.

A move is a durable state machine journaled in the mirror's `moves` table (docs/moves.md).
Every step is idempotent and checks the nodes' real state before acting, so a crash of xfleet
at any point, a dropped connection or a reboot of either node is resumed by `resume(id)`:

  planned -> base -> catchup -> cutover -> verify -> placed -> done
  (any) -> failed (resumable) | aborted

- base: snapshot `VOL@xfleet-move-ID-0` and send the volume's whole snapshot chain into a
  resumable receive (`receive -s`) on the target, into a volume with `volmode=none` (no device:
  nobody can use it by accident until cutover).
- catchup: incremental rounds (`send -i`) until the delta (`written@` the last snapshot) is
  under `catchup_bytes`, at most `max_rounds`.
- cutover: the source's `pre_cutover` hooks (e.g. stop I/O, unexport), a final snapshot and
  incremental, the target's device back (`volmode` as the source had it).
- verify: the final snapshot's guid equal on both sides, and a content check of the two
  volumes (sampled 1 MiB blocks by default, `full` hashes everything). Nothing is destroyed
  before this passes.
- placed: the target's `post_cutover` hooks (e.g. export), the source renamed to
  `VOL.xfleet-moved-ID`, read-only, its final snapshot held; the mirror re-synced on both
  nodes. The retired source is destroyed only by `retire(id, destroy=True)`.

Send flags, chosen deliberately: `-L` always (large blocks, consistently for the whole chain:
toggling it inside a chain corrupted data before, openzfs 6224); `-c` only when the target keeps
the source's compression (otherwise blocks travel uncompressed and the target's compression
applies: a move is a chance to apply compression policy); encrypted volumes are sent raw (`-w`:
still encrypted, as stored; the key never travels) with their key location. A plain send does
not carry properties, so `compression`, `volblocksize` (by the stream) and the mirrored user
properties are set explicitly with `receive -o`. Before the first byte, `preflight` checks the
target pool's features (large_blocks, zstd_compress, encryption, lz4_compress) against what
the volume needs.

Data goes through the xfleet host by default (`xfleet.remote.relay`: no trust between nodes needed),
in large chunks, limited by token buckets (fleet-wide and per node).
"""

from xfleet.ops.moves.journal import (
    ACTIVE,
    DEFAULTS,
    FINAL,
    HALTED,
    HEARTBEAT,
    MOVES,
    SAMPLE_HASHES,
    SEND_DIRECT,
    SNAP_PREFIX,
    STALE,
    STREAMING,
    WAIT_DEVICE,
    Move,
    MoveError,
    Progress,
    claim,
    get,
    listing,
    log,
    sample_hashes_argv,
    save,
)
from xfleet.ops.moves.plan import (
    FEATURES,
    Plan,
    Preflight,
    adopt,
    apply_preflight,
    create,
    create_many,
    features_needed,
    plan_commands,
    plan_drain,
    plan_move,
    preflight,
    receive_argv,
)
from xfleet.ops.moves.retire import (
    abort,
    retire,
)
from xfleet.ops.moves.runner import (
    Runner,
    StreamSlots,
    pause,
    streams_elsewhere,
)

__all__ = [
    "ACTIVE",
    "DEFAULTS",
    "FEATURES",
    "FINAL",
    "HALTED",
    "HEARTBEAT",
    "MOVES",
    "Move",
    "MoveError",
    "Plan",
    "Preflight",
    "Progress",
    "Runner",
    "SAMPLE_HASHES",
    "SEND_DIRECT",
    "SNAP_PREFIX",
    "STALE",
    "STREAMING",
    "StreamSlots",
    "WAIT_DEVICE",
    "abort",
    "adopt",
    "apply_preflight",
    "claim",
    "create",
    "create_many",
    "features_needed",
    "get",
    "listing",
    "log",
    "pause",
    "plan_commands",
    "plan_drain",
    "plan_move",
    "preflight",
    "receive_argv",
    "retire",
    "sample_hashes_argv",
    "save",
    "streams_elsewhere",
]
