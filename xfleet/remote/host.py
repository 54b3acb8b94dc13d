"""A node as a transport sees it: where it is, how to log in, its settings (from the inventory)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Host:
    name: str
    kind: str = "ssh"
    address: str | None = None
    port: int = 22
    user: str | None = None
    identity_file: str | None = None
    proxy_jump: str | None = None
    host_key: str | None = None
    known_hosts: str | None = None
    pools: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    max_streams: int = 2
    bwlimit: int | None = None  # bytes/s, all move streams of this node together
    max_prune: int | None = None  # snapshots a snapshot run or serve tick destroys here at most
    hooks: dict[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)
    connect_timeout: float = 10.0
    command_timeout: float = 600.0
    connect_retries: int = 3
    private_address: str | None = None
    sim: dict[str, Any] = field(default_factory=dict)
    target: Any = None  # xfleet.fleet.target_spec.TargetSpec (docs/upgrades.md)
    # An initiator's DH-CHAP secret: where it is, never the secret (xfleet/fleet/secrets.py)
    dhchap_secret_file: Path | None = None
    dhchap_secret_command: tuple[str, ...] | None = None
    sources: dict[str, str] = field(default_factory=dict)  # key -> where the value came from
