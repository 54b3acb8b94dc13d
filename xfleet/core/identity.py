"""NVMe identities: the subsystem NQN and the namespace's pinned UUID/NGUID of an exported zvol."""

from __future__ import annotations

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
