"""NVMe identities: the subsystem NQN and the namespace's pinned UUID/NGUID of an exported zvol."""

from __future__ import annotations

import re
import uuid

# namespace of the pinned identities: uuid5(PIN_NAMESPACE, "NODE/GUID")
PIN_NAMESPACE = uuid.UUID("6d1f0d52-4f0c-5b43-9a3e-6f8a51c1e2a7")


def pinned_identity(node: str, guid: int | str) -> tuple[str, str]:
    """(uuid, nguid) of the namespace exporting the zvol with ZFS `guid` on `node`.

    Keyed by the zvol's guid, not its name: a volume destroyed and re-created under the same
    name is a different disk and must not reappear under the old identity; a rename keeps it.
    """
    key = f"{node}/{int(guid)}"
    u = uuid.uuid5(PIN_NAMESPACE, key)
    n = uuid.uuid5(PIN_NAMESPACE, key + "/nguid")
    return str(u), str(n)


def nqn_for(prefix: str, node: str, volume: str) -> str:
    """One subsystem per zvol: PREFIX:NODE:POOL.PATH (dots for slashes)."""
    return f"{prefix}:{node}:{volume.replace('/', '.')}"


# ---------------------------------------------------------------------------------------------
# identity that belongs to the volume (docs/identity.md): a fleet-wide volume UUID, kept in a
# user property of the zvol, set at creation or at first sight and carried by every move and
# replica (`zfs receive -o`); the subsystem NQN and the namespace's UUID/NGUID derive from it, so
# the same volume has the same NVMe identity on any node. A volume without one (created before
# xfleet gave it one, and not yet seen by a sync) keeps the pinned node/guid identity above.

UUID_PROPERTY = "xfleet:uuid"
# the hosts allowed to connect to the volume's subsystem (host NQNs, comma-separated; "" or
# absent: no access control was ever set, the legacy open export that `target audit` flags)
HOSTS_PROPERTY = "xfleet:hosts"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def new_volume_uuid() -> str:
    """A fresh volume UUID (random: a re-created name never inherits an old identity)."""
    return str(uuid.uuid4())


def valid_volume_uuid(text: str) -> bool:
    """True for a UUID in the canonical lower-case form new_volume_uuid gives."""
    return bool(_UUID.match(text))


def volume_identity(volume_uuid: str) -> tuple[str, str]:
    """(namespace uuid, nguid) of the volume with `volume_uuid`, on whichever node exports it."""
    return volume_uuid, str(uuid.uuid5(PIN_NAMESPACE, volume_uuid + "/nguid"))


def volume_nqn(prefix: str, volume_uuid: str) -> str:
    """The subsystem NQN of the volume with `volume_uuid`: PREFIX:vol:UUID (no node, no name:
    the same on any node, unchanged by a rename)."""
    return f"{prefix}:vol:{volume_uuid}"


def subsystem_nqn(prefix: str, node: str, volume: str, volume_uuid: str | None) -> str:
    """The NQN a node exports `volume` under: the volume's own (volume_nqn) when it has a
    UUID, else the legacy per-node one (nqn_for)."""
    return volume_nqn(prefix, volume_uuid) if volume_uuid else nqn_for(prefix, node, volume)
