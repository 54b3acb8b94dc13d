"""Snapshot policies (issue #20, docs/snapshots.md): when to take snapshots (schedule), which to
keep (retention), over which volumes (policy: match rules like the compression policy's)."""
