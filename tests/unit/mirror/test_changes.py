"""Change notices for readers (xfleet/mirror/changes.py): a commit by another connection
changes the answer, on each engine; nothing committed, no change."""

from __future__ import annotations

from conftest import wait_for

from xfleet import mirror
from xfleet.mirror.backend import location
from xfleet.mirror.changes import Changes


def test_another_connections_commit_changes_the_version(mirror_at: str) -> None:
    writer = mirror.connect(mirror_at)
    reader = mirror.connect(mirror_at, readonly=True)
    changes = Changes(location(mirror_at), reader)
    try:
        before = changes.version()
        assert changes.version() == before  # nothing committed: the same answer
        with mirror.transaction(writer, "a node"):
            writer.execute("INSERT INTO nodes (name, kind) VALUES ('n1', 'sim')")
        wait_for(lambda: changes.version() != before, "the commit to show")
    finally:
        changes.close()
        reader.close()
        writer.close()
