"""Standing replicas: volumes kept on another node within an RPO by incremental sends, with a
held, bookmarked cursor per destination (docs/replicate.md).

- journal: the Replica, its row in `replicas` and its log (a journaled job kind);
- round: one replication round over the snapshot policies' `replicate:` targets;
- promote: a replica made the primary (planned, through the move engine; or its source lost);
- status: each replica's lag against its RPO, from the mirror.

Import the modules themselves (this package imports nothing, so the snapshot policies can
import it without a cycle).
"""
