"""The initiators' DH-CHAP secrets (xfleet/fleet/secrets.py): the format checked, read from a
file or a command named in the inventory, and never shown: not in a repr, an error message, a
hint or a log."""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import time
import zlib
from pathlib import Path

import pytest
from conftest import write

from xfleet.core.errors import UsageError
from xfleet.fleet import inventory
from xfleet.fleet.secrets import Secret, SecretError, parse_secret, read_secret, secrets_of
from xfleet.remote.host import Host

WHERE = "initiator db-a-01 (dhchap_secret_file /etc/x)"


def make_secret(hh: int, length: int, *, crc_delta: int = 0) -> str:
    """A secret as `nvme gen-dhchap-key` prints it: a random key of `length` bytes and its
    CRC-32 (off by `crc_delta`, to make a bad one)."""
    key = os.urandom(length)
    crc = (zlib.crc32(key) + crc_delta) % 2**32
    return f"DHHC-1:{hh:02d}:{base64.b64encode(key + crc.to_bytes(4, 'little')).decode()}:"


def key_part(secret: str) -> str:
    return secret.split(":")[2]


def assert_hidden(secret: str, *texts: str) -> None:
    """No text shows the secret's key part, nor any 12 characters of it."""
    b64 = key_part(secret)
    assert b64
    pieces = {b64[i:i + 12] for i in range(max(len(b64) - 11, 1))}
    for text in texts:
        assert b64 not in text
        assert [p for p in pieces if p in text] == [], text


def assert_error_hides(exc: SecretError, secret: str) -> None:
    assert_hidden(secret, str(exc), exc.message, exc.hint or "", exc.where or "", repr(exc),
                  repr(exc.args))


def secret_file(tmp_path: Path, text: str, mode: int = 0o600, name: str = "db.key") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def printing(tmp_path: Path, text: str, then: str = "") -> tuple[str, ...]:
    """A command that prints `text` exactly (no added newline), then runs `then`. The text is
    read from a file, like `pass` reads its store: the command line (which errors may show)
    never holds it."""
    store = tmp_path / f"store-{len(list(tmp_path.glob('store-*')))}"
    store.write_text(text)
    return (sys.executable, "-c", "import sys, time; sys.stdout.write(open(sys.argv[1]).read()); "
            f"sys.stdout.flush(); {then or 'pass'}", str(store))


# --- the format ------------------------------------------------------------------------------


@pytest.mark.parametrize("hh, length", [(0, 32), (0, 48), (0, 64), (1, 32), (2, 48), (3, 64)])
def test_a_good_secret_for_each_hash(hh: int, length: int) -> None:
    value = make_secret(hh, length)
    s = parse_secret(value, WHERE)
    assert s.reveal() == value
    assert s.hash_id == hh
    assert repr(s) == str(s) == f"Secret('DHHC-1:{hh:02d}:…')"
    assert_hidden(value, repr(s), str(s), f"{s}", f"{s!r}", repr([s]), repr({"db": s}))
    assert s == parse_secret(value, WHERE) and s != parse_secret(make_secret(hh, length), WHERE)
    assert len({s, parse_secret(value, WHERE)}) == 1


def test_surrounding_whitespace_and_the_newline_are_stripped() -> None:
    value = make_secret(1, 32)
    assert parse_secret(f"  {value}\n", WHERE).reveal() == value
    assert parse_secret(f"{value}\r\n", WHERE).reveal() == value


def test_a_secret_is_not_json() -> None:
    value = make_secret(2, 48)
    with pytest.raises(TypeError) as exc:
        json.dumps({"db": parse_secret(value, WHERE)})
    assert_hidden(value, str(exc.value))


def test_a_secret_cannot_be_made_invalid() -> None:
    with pytest.raises(SecretError, match="CRC-32"):
        Secret(make_secret(1, 32, crc_delta=1))


def _bad_cases() -> list[tuple[str, str, str]]:
    good = make_secret(1, 32)
    b64 = key_part(good)
    return [
        ("wrong prefix", good.replace("DHHC-1", "DHHC-2"), "does not start with 'DHHC-1:'"),
        ("a raw key", b64, "does not start with 'DHHC-1:'"),
        ("no final colon", good[:-1], "not of the form 'DHHC-1:HH:BASE64:'"),
        ("something after", good + "x", "not of the form"),
        ("one field more", good[:-1] + ":00:", "not of the form"),
        ("hash 04", good.replace(":01:", ":04:"), "hash id that is not 00, 01, 02 or 03"),
        ("hash 1", good.replace(":01:", ":1:"), "hash id that is not"),
        ("hash x1", good.replace(":01:", ":x1:"), "hash id that is not"),
        ("not base64", good.replace(b64, b64[:10] + "*" + b64[11:]), "not valid base64"),
        ("cut short", good.replace(b64, b64[:-4]), "has a key of 29 bytes"),
        ("40-byte key", make_secret(0, 40), "a key of 40 bytes; a DH-CHAP key is 32, 48 or 64"),
        ("16-byte key", make_secret(1, 16), "a key of 16 bytes"),
        ("sha256 with 48", make_secret(1, 48), "48 bytes with hash 01 (sha256), which needs 32"),
        ("sha384 with 64", make_secret(2, 64), "hash 02 (sha384), which needs 48"),
        ("sha512 with 32", make_secret(3, 32), "hash 03 (sha512), which needs 64"),
        ("bad CRC", make_secret(1, 32, crc_delta=1), "fails its CRC-32 check"),
        ("bad CRC, none", make_secret(0, 64, crc_delta=2**31), "fails its CRC-32 check"),
    ]


@pytest.mark.parametrize("case, value, words", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_secrets_say_what_and_where_never_the_key(case: str, value: str, words: str) -> None:
    with pytest.raises(SecretError) as exc:
        parse_secret(value, WHERE)
    err = exc.value
    assert isinstance(err, UsageError) and err.exit_code == 2
    assert err.where == WHERE and str(err).startswith(f"{WHERE}: the DH-CHAP secret ")
    assert words in err.message, err.message
    assert err.hint and "nvme gen-dhchap-key" in err.hint
    assert_error_hides(err, value if value.count(":") >= 2 else f"x:x:{value}:")


def test_an_empty_secret() -> None:
    with pytest.raises(SecretError, match="is empty"):
        parse_secret(" \n", WHERE)


# --- from a file -----------------------------------------------------------------------------


def test_no_source_is_none() -> None:
    assert read_secret(Host("db1")) is None


def test_a_secret_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    value = make_secret(3, 64)
    caplog.set_level(logging.DEBUG)
    path = secret_file(tmp_path, f"\n{value}\n\n")  # blank lines around it are fine
    s = read_secret(Host("db1", dhchap_secret_file=path))
    assert s is not None and s.reveal() == value and s.hash_id == 3
    assert_hidden(value, caplog.text)  # never logged
    assert read_secret(Host("db1", dhchap_secret_file=secret_file(
        tmp_path, value, mode=0o400, name="ro.key"))) == s


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_a_secret_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    value = make_secret(1, 32)
    path = secret_file(tmp_path, value + "\n", mode=mode)
    with pytest.raises(SecretError) as exc:
        read_secret(Host("db-a-01", dhchap_secret_file=path))
    err = exc.value
    assert err.where == f"initiator db-a-01 (dhchap_secret_file {path})"
    assert f"mode {mode:04o}" in err.message and "others than its owner" in err.message
    assert err.hint == f"chmod 600 {path}"
    assert_error_hides(err, value)


def test_file_errors(tmp_path: Path) -> None:
    value = make_secret(1, 32)

    def error(path: Path) -> SecretError:
        with pytest.raises(SecretError) as exc:
            read_secret(Host("db1", dhchap_secret_file=path))
        assert exc.value.where == f"initiator db1 (dhchap_secret_file {path})"
        assert exc.value.hint
        assert_error_hides(exc.value, value)
        return exc.value

    missing = error(tmp_path / "nope.key")
    assert "does not exist" in missing.message and "chmod 600" in (missing.hint or "")
    assert "not a regular file" in error(tmp_path).message
    assert "is empty" in error(secret_file(tmp_path, "\n \n", name="empty.key")).message
    two = error(secret_file(tmp_path, f"{value}\n{value}\n", name="two.key"))
    assert "has 2 non-empty lines" in two.message
    labelled = error(secret_file(tmp_path, f"db1 {value}\n", name="labelled.key"))
    assert "does not start with 'DHHC-1:'" in labelled.message
    binary = tmp_path / "bin.key"
    binary.write_bytes(b"\xff\xfe" + value.encode())
    binary.chmod(0o600)
    assert "not text" in error(binary).message
    assert "larger than 4096 bytes" in error(secret_file(tmp_path, value * 200,
                                                         name="big.key")).message
    bad_crc = make_secret(1, 32, crc_delta=7)
    crc = error(secret_file(tmp_path, bad_crc + "\n", name="crc.key"))
    assert "CRC-32" in crc.message
    assert_error_hides(crc, bad_crc)


def test_an_unreadable_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the tests may run as root, whom file modes do not stop: the kernel's answer is simulated
    value = make_secret(1, 32)
    path = secret_file(tmp_path, value)
    real_open = os.open

    def denied(p: str | os.PathLike[str], flags: int, *args: int) -> int:
        if Path(p) == path:
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, flags, *args)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(SecretError) as exc:
        read_secret(Host("db1", dhchap_secret_file=path))
    assert "cannot be read by this user" in exc.value.message
    assert exc.value.hint and "chmod 600" in exc.value.hint
    assert_error_hides(exc.value, value)


def test_both_sources_on_a_host_built_by_hand(tmp_path: Path) -> None:
    host = Host("db1", dhchap_secret_file=tmp_path / "x", dhchap_secret_command=("true",))
    with pytest.raises(SecretError, match="both dhchap_secret_file and dhchap_secret_command"):
        read_secret(host)


# --- from a command --------------------------------------------------------------------------


def test_a_secret_command(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    value = make_secret(2, 48)
    caplog.set_level(logging.DEBUG)
    cmd = printing(tmp_path, value + "\n", then="print('unlocked', file=sys.stderr)")
    s = read_secret(Host("db1", dhchap_secret_command=cmd))
    assert s is not None and s.reveal() == value and s.hash_id == 2
    assert_hidden(value, caplog.text)


def test_a_secret_command_sees_no_stdin() -> None:
    value = make_secret(1, 32)
    # prints the secret only if its stdin is empty (closed), not the test's terminal or pipe
    cmd = (sys.executable, "-c", f"import sys; assert sys.stdin.read() == ''; print({value!r})")
    s = read_secret(Host("db1", dhchap_secret_command=cmd))
    assert s is not None and s.reveal() == value


def test_a_failing_secret_command_shows_its_status_and_the_end_of_its_stderr() -> None:
    cmd = (sys.executable, "-c",
           "import sys; sys.stderr.write('A' * 300 + 'vault: permission denied'); sys.exit(3)")
    with pytest.raises(SecretError) as exc:
        read_secret(Host("db1", dhchap_secret_command=cmd))
    err = exc.value
    assert err.where == f"initiator db1 (dhchap_secret_command [{', '.join(cmd)}])"
    assert "exited with status 3: " in err.message
    shown = err.message.split("exited with status 3: ", 1)[1]
    assert len(shown) == 200 and shown.endswith("vault: permission denied")
    assert shown == "A" * 176 + "vault: permission denied"
    assert err.hint and "run it yourself" in err.hint


def test_a_secret_command_killed_by_a_signal() -> None:
    cmd = (sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(SecretError, match="was killed by signal 9 \\(no error output\\)"):
        read_secret(Host("db1", dhchap_secret_command=cmd))


def test_a_secret_command_that_hangs_is_killed_at_its_timeout() -> None:
    cmd = (sys.executable, "-c", "import time; time.sleep(30)")
    started = time.monotonic()
    with pytest.raises(SecretError) as exc:
        read_secret(Host("db1", dhchap_secret_command=cmd), timeout=0.5)
    assert time.monotonic() - started < 20  # the 30 s sleep was cut short
    assert "did not finish within 0.5 s" in exc.value.message
    assert exc.value.hint and "passphrase" in exc.value.hint


def test_a_hanging_command_that_printed_the_secret_does_not_show_it(tmp_path: Path) -> None:
    value = make_secret(1, 32)
    cmd = printing(tmp_path, value + "\n", then="time.sleep(30)")
    with pytest.raises(SecretError) as exc:
        read_secret(Host("db1", dhchap_secret_command=cmd), timeout=1.0)
    assert "did not finish" in exc.value.message
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
    assert_error_hides(exc.value, value)


def test_secret_command_errors(tmp_path: Path) -> None:
    value = make_secret(1, 32)

    def error(cmd: tuple[str, ...]) -> SecretError:
        with pytest.raises(SecretError) as exc:
            read_secret(Host("db1", dhchap_secret_command=cmd))
        assert exc.value.hint
        assert_error_hides(exc.value, value)
        return exc.value

    missing = error((str(tmp_path / "no-such-vault"), "kv", "get"))
    assert "is not found" in missing.message and "full path" in (missing.hint or "")
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o600)
    assert "permission denied" in error((str(script),)).message
    assert "printed nothing" in error(printing(tmp_path, "\n\n")).message
    two = error(printing(tmp_path, f"{value}\nPassword: {value}\n"))
    assert "printed 2 non-empty lines" in two.message and "-field=" in (two.hint or "")
    assert "not text" in error((sys.executable, "-c",
                                "import sys; sys.stdout.buffer.write(b'\\xff\\xfe')")).message
    bad = make_secret(3, 48)
    wrong = error(printing(tmp_path, bad + "\n"))
    assert "which needs 64" in wrong.message
    assert_error_hides(wrong, bad)


# --- the inventory's initiators --------------------------------------------------------------


def test_secrets_of_an_inventory(tmp_path: Path) -> None:
    a, b = make_secret(1, 32), make_secret(0, 64)
    secret_file(tmp_path, a + "\n", name="db-a-01.key")
    store = secret_file(tmp_path, b, name="store")
    path = write(tmp_path, f"""
    all:
      hosts:
        n1: {{kind: sim}}
      initiators:
        db-a-01: {{kind: local, dhchap_secret_file: db-a-01.key}}
        db-b-01:
          kind: local
          dhchap_secret_command:
            [{sys.executable}, -c, "import sys; print(open(sys.argv[1]).read())", {store}]
        db-c-01: {{kind: local}}
    """)
    inv = inventory.load(path)
    everything = secrets_of(inv)
    assert list(everything) == ["db-a-01", "db-b-01"]  # db-c-01 has no source: left out
    assert everything["db-a-01"].reveal() == a and everything["db-b-01"].reveal() == b
    assert secrets_of(inv, ["db-b-01", "db-c-01", "db-b-01"]) == {"db-b-01": everything["db-b-01"]}
    assert secrets_of(inv, "db-a-01") == {"db-a-01": everything["db-a-01"]}
    assert secrets_of(inv, []) == {}
    with pytest.raises(UsageError) as exc:
        secrets_of(inv, ["db-a-0l"])
    assert "no initiator named 'db-a-0l'" in exc.value.message
    assert exc.value.hint and "did you mean db-a-01" in exc.value.hint
    with pytest.raises(UsageError) as exc:
        secrets_of(inv, ["n1"])  # a storage node is not an initiator
    assert "no initiator named 'n1'" in exc.value.message
