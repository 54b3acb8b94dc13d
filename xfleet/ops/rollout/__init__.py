"""Rolling upgrades of the NVMe-oF target daemon across the fleet (docs/upgrades.md).

A rollout is a durable state machine journaled in the mirror (`rollouts`, `rollout_nodes`,
`rollout_log`), so pause, resume and stop survive a crash of xfleet:

  staging -> running -> done
  staging | running -> paused (resumable) | stopped (final)

- staging: the package is copied to every node and its sha256 verified there, before any
  restart (and on nodes added later, before their turn).
- running: batches in order (the canary alone first, then `serial` sizes such as 1, 2, "25%";
  the last size repeats). Each node: ok-to-stop checks (pools healthy, no scrub/resilver, no
  move in progress, exports match the mirror with pinned identities), restart into the new
  version, wait until ready **at that version** with the same exports as before, soak, verify
  from the initiators in the inventory (paths live again, identities unchanged).
- A failed node is rolled back to its previous version. A batch whose failures exceed its
  budget (`max_failures`; the canary's is 0) pauses the rollout with the reason: nothing
  continues silently, nothing is aborted blindly. `resume` continues; `stop` ends it.
- Nodes added to the inventory during a rollout (when it covers every node with a target)
  are picked up at the next batch boundary.
"""

from xfleet.ops.rollout.journal import (
    FINISHED,
    HEARTBEAT,
    IN_FLIGHT,
    OPEN,
    POLL,
    ROLLOUTS,
    RolloutError,
    Say,
    get,
    list_rollouts,
    log,
    nodes_of,
    request,
    set_state,
    summary,
    target_versions,
)
from xfleet.ops.rollout.plan import (
    CHECK_HELP,
    CHECKS,
    Check,
    ExportsDigest,
    Options,
    Package,
    Plan,
    client_checks,
    client_connections,
    compare_versions,
    create,
    deb_version,
    exports_digest,
    exports_vs_mirror,
    node_checks,
    package,
    parse_serial,
    plan,
    plan_batches,
    preflight,
    refusals,
    safety_checks,
    start,
    target_nodes,
    version_key,
)
from xfleet.ops.rollout.runner import (
    NodeFailed,
    Result,
    Runner,
    resume,
)

__all__ = [
    "CHECKS",
    "CHECK_HELP",
    "Check",
    "ExportsDigest",
    "FINISHED",
    "HEARTBEAT",
    "IN_FLIGHT",
    "NodeFailed",
    "OPEN",
    "Options",
    "POLL",
    "Package",
    "Plan",
    "ROLLOUTS",
    "Result",
    "RolloutError",
    "Runner",
    "Say",
    "client_checks",
    "client_connections",
    "compare_versions",
    "create",
    "deb_version",
    "exports_digest",
    "exports_vs_mirror",
    "get",
    "list_rollouts",
    "log",
    "node_checks",
    "nodes_of",
    "package",
    "parse_serial",
    "plan",
    "plan_batches",
    "preflight",
    "refusals",
    "request",
    "resume",
    "safety_checks",
    "set_state",
    "start",
    "summary",
    "target_nodes",
    "target_versions",
    "version_key",
]
