"""The initiators' DH-CHAP secrets (NVMe in-band authentication), read where the operator keeps
them: a file or a command named in the inventory (`dhchap_secret_file`,
`dhchap_secret_command`; docs/inventory.md, docs/access.md).

A secret is read on demand and held in a `Secret`, whose repr and str mask its key: it is never
written to the mirror, a log, an error message or JSON. Errors say what is wrong and where (the
initiator, the file or the command), never any part of the secret.

The format is what `nvme gen-dhchap-key` prints, `DHHC-1:HH:BASE64:`: HH is the hash that
transforms the key (00 none, 01 SHA-256, 02 SHA-384, 03 SHA-512), BASE64 decodes to the key
(32, 48 or 64 bytes; exactly 32/48/64 for HH 01/02/03) followed by the key's CRC-32
(zlib.crc32), little-endian.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import stat
import subprocess
import zlib
from collections.abc import Iterable
from pathlib import Path

from xfleet.core.errors import UsageError
from xfleet.fleet.inventory import Inventory, unknown_initiator
from xfleet.remote.host import Host

PREFIX = "DHHC-1"
# HH -> the hash's name and the key length it requires (None: any of KEY_LENGTHS)
HASHES: dict[int, tuple[str, int | None]] = {
    0: ("none", None), 1: ("sha256", 32), 2: ("sha384", 48), 3: ("sha512", 64),
}
KEY_LENGTHS = (32, 48, 64)
CRC_BYTES = 4
MAX_FILE_BYTES = 4096  # a secret is < 100 characters; anything much bigger is the wrong file
STDERR_SHOWN = 200  # characters of a failed command's stderr shown in its error
GENERATE = "generate one with `nvme gen-dhchap-key --hmac=1 --nqn HOSTNQN` on the host"


class SecretError(UsageError):
    """A DH-CHAP secret that cannot be read or is not valid. Its message, `where` and hint
    never hold any part of the secret."""


class Secret:
    """A valid DH-CHAP secret. repr/str show `Secret('DHHC-1:01:…')`, never the key;
    `reveal()` gives the value to the one place that needs it."""

    __slots__ = ("_value", "_hash_id")

    def __init__(self, value: str, *, where: str = "a DH-CHAP secret") -> None:
        self._hash_id = _validate(value, where)
        self._value = value

    @property
    def hash_id(self) -> int:
        """The HH of `DHHC-1:HH:...`: 0 none, 1 SHA-256, 2 SHA-384, 3 SHA-512."""
        return self._hash_id

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{PREFIX}:{self._hash_id:02d}:…')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and \
            hmac.compare_digest(other._value.encode(), self._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


def _validate(value: str, where: str) -> int:
    """The hash id of `value` if it is a DH-CHAP secret; a SecretError saying what is wrong."""

    def bad(what: str, hint: str = GENERATE) -> SecretError:
        return SecretError(f"the DH-CHAP secret {what}", where=where, hint=hint)

    if not value:
        raise bad("is empty")
    parts = value.split(":")
    if parts[0] != PREFIX:
        raise bad(f"does not start with '{PREFIX}:' (it is not a DH-CHAP secret as "
                  "`nvme gen-dhchap-key` prints it)")
    if len(parts) != 4 or parts[3] != "":
        raise bad(f"is not of the form '{PREFIX}:HH:BASE64:' ({len(parts) - 1} ':' instead "
                  "of 3, or something after the last one)",
                  hint=f"copy the whole line `nvme gen-dhchap-key` printed, with the final "
                  f"':'; or {GENERATE}")
    hh, b64 = parts[1], parts[2]
    if len(hh) != 2 or not hh.isdigit() or int(hh) not in HASHES:
        raise bad("has a hash id that is not 00, 01, 02 or 03 (none, SHA-256, SHA-384, "
                  "SHA-512)")
    hash_id = int(hh)
    try:
        raw = base64.b64decode(b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise bad("has a key part that is not valid base64 (a typo or a truncated "
                  "copy?)") from None
    key, crc = raw[:-CRC_BYTES], raw[-CRC_BYTES:]
    if len(key) not in KEY_LENGTHS:
        raise bad(f"has a key of {len(key)} bytes; a DH-CHAP key is 32, "
                  "48 or 64 bytes (followed by its 4-byte CRC-32)")
    name, wanted = HASHES[hash_id]
    if wanted is not None and len(key) != wanted:
        raise bad(f"has a key of {len(key)} bytes with hash {hh} ({name}), which needs "
                  f"{wanted} bytes",
                  hint=f"generate it with the matching --hmac and --key-length, e.g. "
                  f"`nvme gen-dhchap-key --hmac={hash_id} --key-length={wanted} --nqn HOSTNQN`")
    if zlib.crc32(key) != int.from_bytes(crc, "little"):
        raise bad("fails its CRC-32 check (a typo or a truncated copy?)")
    return hash_id


def parse_secret(text: str, where: str) -> Secret:
    """`text` (surrounding whitespace, a trailing newline, stripped) as a Secret, or a
    SecretError at `where` (e.g. "initiator db-a-01 (dhchap_secret_file /etc/x)")."""
    return Secret(text.strip(), where=where)


def read_secret(host: Host, *, timeout: float = 30.0) -> Secret | None:
    """The DH-CHAP secret of initiator `host`, from its `dhchap_secret_file` or by running its
    `dhchap_secret_command` (at most `timeout` seconds); None when it has neither. Every
    failure is a SecretError naming the initiator and the source, with a hint."""
    if host.dhchap_secret_file is not None and host.dhchap_secret_command is not None:
        raise SecretError(f"initiator {host.name} has both dhchap_secret_file and "
                          "dhchap_secret_command", where=f"initiator {host.name}",
                          hint="give one source for its DH-CHAP secret: a file or a command")
    if host.dhchap_secret_file is not None:
        return _from_file(host.name, Path(host.dhchap_secret_file))
    if host.dhchap_secret_command is not None:
        return _from_command(host.name, tuple(host.dhchap_secret_command), timeout)
    return None


def _one_line(text: str, where: str, none: str, many: str, hint: str) -> Secret:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise SecretError(none, where=where, hint=hint)
    if len(lines) > 1:
        raise SecretError(many.format(n=len(lines)), where=where, hint=hint)
    return parse_secret(lines[0], where)


def _from_file(name: str, path: Path) -> Secret:
    where = f"initiator {name} (dhchap_secret_file {path})"
    fix = "fix dhchap_secret_file in the inventory (docs/inventory.md)"

    def bad(what: str, hint: str) -> SecretError:
        return SecretError(what, where=where, hint=hint)

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise bad("the secret file is not a regular file", hint=fix)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            mode = os.fstat(fd).st_mode
            if mode & 0o077:
                raise bad(f"the secret file is readable or writable by others than its owner "
                          f"(mode {stat.S_IMODE(mode):04o})", hint=f"chmod 600 {path}")
            data = os.read(fd, MAX_FILE_BYTES + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise bad("the secret file does not exist",
                  hint=f"write the secret in it (one line, chmod 600; {GENERATE}), or "
                  f"{fix}") from None
    except PermissionError:
        raise bad(f"the secret file cannot be read by this user (uid {os.getuid()}): "
                  "permission denied",
                  hint="run xfleet as a user that may read it, or give the file to this "
                  "user (chown, then chmod 600)") from None
    except IsADirectoryError:
        raise bad("the secret file is a directory", hint=fix) from None
    except OSError as exc:
        raise bad(f"the secret file cannot be read: {exc.strerror or type(exc).__name__}",
                  hint=fix) from None
    if len(data) > MAX_FILE_BYTES:
        raise bad(f"the secret file is larger than {MAX_FILE_BYTES} bytes; it must hold the "
                  "secret alone, on one line", hint=fix)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad("the secret file is not text", hint=fix) from None
    return _one_line(text, where, "the secret file is empty",
                     "the secret file has {n} non-empty lines; it must hold the secret alone, "
                     "on one line", hint=f"write the secret alone in it; {GENERATE}")


def _from_command(name: str, argv: tuple[str, ...], timeout: float) -> Secret:
    where = f"initiator {name} (dhchap_secret_command [{', '.join(argv)}])"  # as inventoried
    fix = "fix dhchap_secret_command in the inventory (docs/inventory.md)"

    def bad(what: str, hint: str) -> SecretError:
        return SecretError(what, where=where, hint=hint)

    if not argv:
        raise bad("the secret command is empty", hint=fix)
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout, check=False)
    except FileNotFoundError:
        raise bad(f"the secret command {argv[0]!r} is not found",
                  hint=f"install it or give its full path; or {fix}") from None
    except PermissionError:
        raise bad(f"the secret command {argv[0]!r} cannot be run: permission denied",
                  hint=f"make it executable for this user; or {fix}") from None
    except subprocess.TimeoutExpired:
        # the partial output it may hold is dropped with the exception (never shown)
        raise bad(f"the secret command did not finish within {timeout:g} s (it was killed)",
                  hint="does it wait for a passphrase, a login or a touch? Its stdin is "
                  "closed: unlock it first (gpg-agent, vault login) and try again") from None
    except OSError as exc:
        raise bad(f"the secret command cannot be run: {exc.strerror or type(exc).__name__}",
                  hint=fix) from None
    if p.returncode != 0:
        how = (f"was killed by signal {-p.returncode}" if p.returncode < 0 else
               f"exited with status {p.returncode}")
        err = p.stderr.decode("utf-8", "replace").strip()
        said = f": {err[-STDERR_SHOWN:]}" if err else " (no error output)"
        raise bad(f"the secret command {how}{said}",
                  hint="run it yourself to see why (is the store unlocked, the path right?)")
    try:
        out = p.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise bad("the secret command printed something that is not text", hint=fix) from None
    return _one_line(out, where, "the secret command printed nothing",
                     "the secret command printed {n} non-empty lines; it must print the "
                     "secret alone, on one line",
                     hint="make it print only the secret (e.g. `pass show` prints the first "
                     "line first: keep the secret alone in the entry; `vault kv get` needs "
                     "-field=NAME)")


def secrets_of(inv: Inventory, names: Iterable[str] | None = None) -> dict[str, Secret]:
    """The DH-CHAP secrets of the named initiators (of all that have a source when None), by
    name, in the order asked (inventory order for all). An initiator without
    dhchap_secret_file or dhchap_secret_command is left out; an unknown name is a UsageError."""
    wanted = list(inv.initiators) if names is None else \
        list(dict.fromkeys([names] if isinstance(names, str) else names))
    for n in wanted:
        if n not in inv.initiators:
            raise unknown_initiator(inv, n)
    out: dict[str, Secret] = {}
    for n in wanted:
        secret = read_secret(inv.initiators[n])
        if secret is not None:
            out[n] = secret
    return out
