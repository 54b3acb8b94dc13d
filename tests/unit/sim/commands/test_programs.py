"""xfleet's remote programs on a simulated node: the block sampler answers with deterministic
synthetic blocks of existing volumes; a move's verification (wait_device, sample_hashes,
sha256sum of the device) answers from the volume's content identity; the programs it does not
simulate are not found."""

from __future__ import annotations

import base64
import hashlib

from xfleet.remote.programs import program

from ..simkit import ok, run, sim


def test_the_block_sampler_answers_like_the_real_program() -> None:
    t = sim(20)
    vol = ok(t, "zfs", "list", "-H", "-o", "name", "-t", "volume").split("\n")[0]
    offsets = [str(i * 16384) for i in range(40)]
    argv = program("sample_blocks").argv("16384", "10", f"/dev/zvol/{vol}", *offsets)
    out = ok(t, *argv).splitlines()
    assert out == ok(t, *argv).splitlines()  # deterministic
    data = [line for line in out if line.startswith("D ")]
    assert len(data) == 10  # stops at WANT data blocks, holes ("Z OFFSET") not counted
    for line in out:
        kind, offset, *rest = line.split(" ")
        assert kind in ("Z", "D") and offset in offsets
        if kind == "D":
            assert len(base64.b64decode(rest[0])) == 16384
    assert run(t, *program("sample_blocks").argv("4096", "1", "/dev/zvol/tank/none", "0")) == \
        (2, "", "cannot open /dev/zvol/tank/none: No such file or directory\n")
    assert run(t, *program("sample_blocks").argv("4096"))[0] == 2


def test_programs_not_simulated_are_not_found() -> None:
    t = sim(10)
    code, _, err = run(t, "python3", "-c", "print(1)")
    assert code == 127 and "only xfleet's own programs are simulated" in err
    code, _, err = run(t, *program("send_direct").argv("n2", "zfs receive x", "x@s"))
    assert code == 127 and "command not found" in err


def test_verification_programs_hash_the_content_identity() -> None:
    t = sim(0)
    ok(t, "zfs", "create", "-s", "-V", "10M", "tank/v")
    ok(t, "zfs", "create", "-s", "-V", "10M", "tank/w")
    dev = "/dev/zvol/tank/v"
    hashes = program("sample_hashes")
    first = ok(t, *hashes.argv(dev, "0", "9", "10", "12")).splitlines()
    assert [line.split(" ")[1] for line in first] == ["0", "9", "10", "12"]
    empty = hashlib.sha256(b"").hexdigest()
    assert [line.split(" ")[0] == empty for line in first] == [False, False, True, True]
    assert ok(t, *hashes.argv(dev, "0", "9", "10", "12")).splitlines() == first  # stable
    other = ok(t, *hashes.argv("/dev/zvol/tank/w", "0")).split(" ")[0]
    assert other != first[0].split(" ")[0]  # another volume, other data
    t.write("tank/v", 1 << 20)
    assert ok(t, *hashes.argv(dev, "0")).split(" ")[0] != first[0].split(" ")[0]  # written
    whole = ok(t, "sha256sum", dev)
    assert whole.endswith(f"  {dev}\n") and whole == ok(t, "sha256sum", dev)
    # the device: there unless volmode is none (or the volume is missing)
    assert run(t, *program("wait_device").argv(dev)) == (0, "", "")
    ok(t, "zfs", "set", "volmode=none", "tank/v")
    assert run(t, *program("wait_device").argv(dev)) == (1, "", "")
    code, _, err = run(t, *hashes.argv(dev, "0"))
    assert code == 1 and err == f"FileNotFoundError: [Errno 2] No such file or directory: " \
        f"'{dev}'\n"
    assert run(t, "sha256sum", "/dev/zvol/tank/nope") == (
        1, "", "sha256sum: /dev/zvol/tank/nope: No such file or directory\n")
