"""The inventory's `target` host key: which NVMe-oF target driver a node runs, and its settings
(docs/upgrades.md). The drivers themselves are in xfleet/ops/target.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DRIVERS = ("nvmet", "command")
# operations a `command` driver may define; `exports` and the versions are read from stdout;
# `set_hosts` reads `NQN<TAB>HOSTS` lines on stdin (docs/access.md)
COMMAND_OPS = ("installed_version", "running_version", "exports", "stage", "restart", "ready",
               "rollback", "set_hosts")
COMMAND_REQUIRED = ("running_version", "exports", "restart", "ready")
COMMAND_VARS = ("node", "version", "path", "sha256")
NVMET_SETTINGS = ("address", "port", "nqn_prefix", "package", "service", "ready_file",
                  "stage_dir", "auth_dir")
NVMET_DEFAULTS: dict[str, Any] = {
    "port": 4420,
    "nqn_prefix": "nqn.2026-01.io.xfleet",
    "package": "xfleet-lab-target",
    "service": "xfleet-lab-target",
    "ready_file": "/run/xfleet-lab-target/ready",
    "stage_dir": "/var/lib/xfleet/target",
    # the hosts' DH-CHAP secrets on the node (0700; a file per host NQN, 0600), which the
    # target service gives the kernel again at its start (docs/access.md)
    "auth_dir": "/etc/xfleet/dhchap",
}


@dataclass(frozen=True)
class TargetSpec:
    """The inventory's `target` host key, validated (xfleet/fleet/inventory.py)."""

    driver: str
    settings: dict[str, Any] = field(default_factory=dict)
    commands: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def nvmet_settings(self) -> dict[str, Any]:
        """The kernel target's settings: the inventory's over NVMET_DEFAULTS."""
        return nvmet_settings(self.settings)


def nvmet_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """`settings` over NVMET_DEFAULTS (the one place they are merged)."""
    return {**NVMET_DEFAULTS, **(settings or {})}
