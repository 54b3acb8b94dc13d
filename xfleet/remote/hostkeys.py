"""Which SSH host keys xfleet accepts for a node, and from which source.

Sources, strongest first (docs/inventory.md):

1. the inventory's `host_key` for the host (a pin),
2. the inventory's `known_hosts` file for the host,
3. xfleet's trust store (written by `xfleet inventory trust`),
4. the user's ~/.ssh/known_hosts.

The strongest source that lists the host decides alone: a key that only a weaker source
holds is refused when a stronger one lists another (a stale ~/.ssh/known_hosts entry never
beats a trust store or a pin, and a key slipped into ~/.ssh/known_hosts never beats the
inventory). Keys marked `@revoked` in any file are refused whatever the source.
`@cert-authority` lines are skipped with a warning: xfleet does not accept host
certificates (pin the node's key instead). A line that cannot be read is skipped with a
warning naming file:line; it never makes the whole file (and every node) unusable.

Pure: reads files, no network.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from xfleet.core.errors import HostKeyError

if TYPE_CHECKING:
    import paramiko  # lazy: 0.15 s to import, and most commands never connect

# The source names, strongest first, as messages show them.
PINNED = "the inventory's host_key"
INVENTORY_FILE = "the inventory's known_hosts"
TRUST_STORE = "xfleet's trust store"
USER_FILE = "~/.ssh/known_hosts"


@dataclass(frozen=True)
class Entry:
    """One known_hosts line: its host patterns (plain, wildcard, negated or hashed) and key."""

    patterns: tuple[str, ...]
    key: paramiko.PKey
    where: str  # file:line

    def matches(self, name: str) -> bool:
        return host_matches(name, self.patterns)


@dataclass
class KnownHostsFile:
    """A known_hosts file as OpenSSH reads it: plain entries, `@revoked` keys, warnings."""

    path: Path
    entries: list[Entry] = field(default_factory=list)
    revoked: list[Entry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Decision:
    """The keys accepted for one host name: from `source` (None: no source lists the host),
    minus `revoked` (every key any source revokes for it)."""

    name: str
    source: str | None
    keys: list[paramiko.PKey]
    revoked: list[paramiko.PKey]
    warnings: list[str]

    def is_revoked(self, key: paramiko.PKey) -> bool:
        return any(_same(key, r) for r in self.revoked)


def host_matches(name: str, patterns: Sequence[str]) -> bool:
    """OpenSSH's rule: `name` matches if one pattern matches and no negated (`!`) one does.
    Patterns may be hashed (`|1|salt|hash`) or use `*` and `?`."""
    hit = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        p = pattern[1:] if negated else pattern
        if p.startswith("|1|"):
            ok = _hashed_matches(name, p)
        elif "*" in p or "?" in p:
            ok = fnmatch.fnmatchcase(name.lower(), p.lower())
        else:
            ok = name.lower() == p.lower()
        if ok and negated:
            return False
        hit = hit or ok
    return hit


def _hashed_matches(name: str, pattern: str) -> bool:
    parts = pattern.split("|")
    if len(parts) != 4:
        return False
    try:
        salt = base64.b64decode(parts[2], validate=True)
        want = base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError):
        return False
    got = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(got, want)


def parse_key(keytype: str, b64: str) -> paramiko.PKey:
    """A public key from its type and base64 blob (ValueError if it is not one)."""
    import paramiko  # lazy: 0.15 s to import, and most commands never connect

    try:
        blob = base64.b64decode(b64, validate=True)
        key = paramiko.PKey.from_type_string(keytype, blob)
    except Exception as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
    if keytype != key.get_name() and keytype not in key.get_name():
        raise ValueError(f"says {keytype} but holds a {key.get_name()} key")
    return key


def read_known_hosts(path: Path) -> KnownHostsFile:
    """Parse a known_hosts file. Unreadable lines and markers xfleet does not honour become
    warnings (file:line, what to do); an unreadable file is a HostKeyError."""
    out = KnownHostsFile(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise HostKeyError(f"cannot read known hosts file {path}: {exc.strerror or exc}",
                           hint="check the file's permissions") from None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        fields = line.split()
        marker = fields.pop(0) if fields[0].startswith("@") else None
        if marker == "@cert-authority":
            out.warnings.append(f"{where}: @cert-authority line skipped (xfleet does not "
                                "accept host certificates; pin the node's host key instead)")
            continue
        if marker not in (None, "@revoked"):
            out.warnings.append(f"{where}: unknown marker {marker[:40]!r}; line skipped")
            continue
        if len(fields) < 3:
            out.warnings.append(f"{where}: not 'HOSTS KEYTYPE BASE64'; line skipped")
            continue
        try:
            key = parse_key(fields[1], fields[2])
        except ValueError as exc:
            out.warnings.append(f"{where}: {fields[1][:40]} key cannot be read ({exc}); "
                                "line skipped")
            continue
        entry = Entry(tuple(fields[0].split(",")), key, where)
        (out.revoked if marker == "@revoked" else out.entries).append(entry)
    return out


def decide(name: str, pinned: paramiko.PKey | None,
           files: Sequence[tuple[str, KnownHostsFile | None]]) -> Decision:
    """The keys accepted for host `name` (as known_hosts writes it: `addr` or `[addr]:port`):
    the pin if any, else the keys of the first file (in `files`' order, strongest first)
    that lists the host; never a key any file revokes."""
    revoked = [e.key for _, f in files if f is not None for e in f.revoked if e.matches(name)]
    warnings = [w for _, f in files if f is not None for w in f.warnings]
    if pinned is not None:
        return Decision(name, PINNED, _minus([pinned], revoked), revoked, warnings)
    for source, f in files:
        if f is None:
            continue
        keys = [e.key for e in f.entries if e.matches(name)]
        if keys:
            return Decision(name, source, _minus(keys, revoked), revoked, warnings)
    return Decision(name, None, [], revoked, warnings)


def _minus(keys: list[paramiko.PKey], revoked: list[paramiko.PKey]) -> list[paramiko.PKey]:
    return [k for k in keys if not any(_same(k, r) for r in revoked)]


def _same(a: paramiko.PKey, b: paramiko.PKey) -> bool:
    return a.get_name() == b.get_name() and a.asbytes() == b.asbytes()
