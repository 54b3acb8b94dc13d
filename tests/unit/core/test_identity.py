"""NVMe identities: the legacy pinned node/guid one, and the volume's own (xfleet:uuid)."""

from __future__ import annotations

from xfleet.core.identity import (
    new_volume_uuid,
    nqn_for,
    pinned_identity,
    subsystem_nqn,
    valid_volume_uuid,
    volume_identity,
    volume_nqn,
)

PREFIX = "nqn.2026-01.io.xfleet"


def test_a_volume_uuid_gives_the_same_identity_on_any_node_and_after_a_rename() -> None:
    u = new_volume_uuid()
    assert valid_volume_uuid(u)
    assert subsystem_nqn(PREFIX, "lab1", "tank/db/v1", u) == \
        subsystem_nqn(PREFIX, "lab2", "tank/other", u) == f"{PREFIX}:vol:{u}"
    assert volume_nqn(PREFIX, u) == f"{PREFIX}:vol:{u}"
    ns_uuid, nguid = volume_identity(u)
    assert ns_uuid == u and nguid != u and volume_identity(u) == (ns_uuid, nguid)


def test_a_recreated_volume_never_inherits_an_identity() -> None:
    a, b = new_volume_uuid(), new_volume_uuid()
    assert a != b and volume_identity(a)[1] != volume_identity(b)[1]
    assert pinned_identity("n1", 5) != pinned_identity("n1", 7)  # legacy: keyed by guid


def test_without_a_uuid_the_legacy_per_node_nqn() -> None:
    assert subsystem_nqn(PREFIX, "lab1", "tank/db/v1", None) == nqn_for(PREFIX, "lab1",
                                                                         "tank/db/v1") \
        == f"{PREFIX}:lab1:tank.db.v1"
    for bad in ("", "ABCDEF00-0000-4000-8000-000000000000", "not-a-uuid", new_volume_uuid()
                + "\n"):
        assert not valid_volume_uuid(bad), bad
