"""`xfleet auth apply|status` through the CLI: what they refuse before anything runs, on the
simulator (whose target has no DH-CHAP), and that no secret reaches the output. The whole flow
runs on the real kernel target in the lab (tests/lab/test_auth_real.py); its order and
stopping rules in tests/unit/ops/access/test_auth.py."""

from __future__ import annotations

import base64
import json
import os
import zlib
from pathlib import Path

from conftest import run_cli, write_sim_inventory

from xfleet import sim


def _secret() -> str:
    key = os.urandom(32)
    return "DHHC-1:01:" + base64.b64encode(key + zlib.crc32(key).to_bytes(4, "little")
                                           ).decode() + ":"


def _fleet(tmp_path: Path, secret: str | None) -> Path:
    inv = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 1, "volumes": 4}},
                              extra=f"    target: {json.dumps(sim.TARGET)}")
    key = tmp_path / "db1.key"
    if secret is not None:
        key.write_text(secret + "\n")
        key.chmod(0o600)
    with inv.open("a") as f:
        f.write("  initiators:\n"
                + (f"    db1: {{kind: local, dhchap_secret_file: {key}}}\n" if secret else
                   "    db1: {kind: local}\n"))
    return inv


def test_no_secret_no_kernel_target_and_a_node_without_it_are_refused(tmp_path: Path) -> None:
    bare = _fleet(tmp_path, None)
    for cmd in ("apply", "status"):
        r = run_cli("-i", str(bare), "auth", cmd)
        assert r.code == 2 and "no initiator of the inventory has a DH-CHAP secret" in r.err, \
            (r.code, r.err)
    inv = _fleet(tmp_path, _secret())
    r = run_cli("-i", str(inv), "auth", "apply", "--json")
    doc = json.loads(r.out)
    assert r.code == 2 and doc["ok"] is False, r.out
    assert "no node of the fleet has the kernel target" in doc["error"]["message"]
    r = run_cli("-i", str(inv), "auth", "status", "--node", "n1")
    assert r.code == 2 and "n1 has no kernel target" in r.err, r.err


def test_a_bad_secret_is_named_never_shown(tmp_path: Path) -> None:
    good = _secret()
    body = good.split(":")[2]
    mangled = good.replace(body, body[:-6] + ("AAAAAA" if body[-6:] != "AAAAAA" else "BBBBBB"))
    inv = _fleet(tmp_path, mangled)
    r = run_cli("-i", str(inv), "auth", "apply", "db1")
    assert r.code == 2 and "db1.key" in r.err, r.err
    assert mangled.split(":")[2] not in r.out + r.err


def test_help_has_examples() -> None:
    for cmd in ("apply", "status", "log"):
        r = run_cli("auth", cmd, "--help")
        assert r.code == 0 and f"xfleet auth {cmd}" in r.out, r.out


def test_the_log_of_a_mirror_that_never_applied_a_secret_is_empty(tmp_path: Path) -> None:
    inv = _fleet(tmp_path, _secret())
    assert run_cli("-i", str(inv), "sync").code == 0
    r = run_cli("-i", str(inv), "auth", "log", "--json")
    assert r.code == 0 and json.loads(r.out) == {"ok": True, "log": []}, r.out + r.err
    r = run_cli("-i", str(inv), "auth", "log", "db1")
    assert r.code == 0 and "OUTCOME" in r.out, r.out + r.err
