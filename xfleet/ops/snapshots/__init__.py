"""Snapshot policies (issue #20, docs/snapshots.md): when to take snapshots (schedule), which to
keep (retention), over which volumes (policy: match rules like the compression policy's); the
plan from the mirror (plan), the lifecycle plans that take and prune (apply), and one round as
a journaled, resumable job (run: `run_policies`, for the CLI and a scheduler)."""
