"""xfleet's remote programs on a simulated node: the block sampler answers with deterministic
synthetic blocks of existing volumes; the programs it does not simulate are not found."""

from __future__ import annotations

import base64

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
    code, _, err = run(t, *program("sample_hashes").argv("/dev/zvol/tank/x", "1"))
    assert code == 127 and "only xfleet's block sampler is simulated" in err
    code, _, err = run(t, *program("wait_device").argv("/dev/x"))
    assert code == 127 and "command not found" in err
