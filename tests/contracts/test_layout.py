"""Tests mirror the code: xfleet/<package>/<module>.py is tested in
tests/unit/<package>/test_<module>[_aspect].py, or in tests/ssh/ (real sshd), tests/lab/ (real
OpenZFS) or tests/tui/ for the modules those suites own, or it is listed here with a reason."""

from __future__ import annotations

import ast

from conftest import ROOT

# module (relative to xfleet/) -> where it is tested instead, and why
ELSEWHERE = {
    "core/errors.py": "the error model: every test asserting a message (test_json_exit_paths)",
    "core/identity.py": "pinned identities: unit/ops/test_target.py and the lab's target tests",
    "core/text.py": "printable(): unit/ops/sync/test_full_user_properties.py",
    "core/yamlsrc.py": "file:line errors: unit/fleet/test_inventory.py, test_compression.py",
    "fleet/target_spec.py": "the `target` key: unit/fleet/test_inventory.py, test_target.py",
    "remote/host.py": "a dataclass; every transport test builds Hosts",
    "remote/hostkeys.py": "host key decisions against a real sshd: ssh/test_ssh.py",
    "remote/paramiko_patch.py": "the re-key deadlock fix: ssh/test_ssh.py, bench_relay.py",
    "remote/ssh_config.py": "~/.ssh/config, ProxyJump: ssh/test_ssh.py, test_inventory.py",
}
SUITES = {"lab": "lab", "tui": "tui"}  # packages whose suite is a folder of its own


def _tested(rel: str) -> bool:
    pkg, _, name = rel.rpartition("/")
    mod = pkg if name == "__init__.py" else name.removesuffix(".py")
    folders = [ROOT / "tests" / "unit" / pkg, ROOT / "tests" / "ssh"]
    if pkg in SUITES:
        return any((ROOT / "tests" / SUITES[pkg]).glob("test_*.py"))
    return any(any(d.glob(f"test_{mod}.py")) or any(d.glob(f"test_{mod}_*.py"))
               for d in folders)


def test_every_module_has_its_tests() -> None:
    missing = []
    for path in sorted((ROOT / "xfleet").rglob("*.py")):
        rel = path.relative_to(ROOT / "xfleet").as_posix()
        if "/" not in rel or "programs/" in rel or rel in ELSEWHERE:
            continue
        if rel.endswith("__init__.py") and not any(
                isinstance(n, ast.FunctionDef | ast.ClassDef)
                for n in ast.parse(path.read_text()).body):
            continue  # a package's docstring and re-exports
        if not _tested(rel):
            missing.append(rel)
    assert missing == [], "add tests/unit/<package>/test_<module>.py or a reason in ELSEWHERE"


def test_the_allowlist_names_real_modules() -> None:
    assert [m for m in ELSEWHERE if not (ROOT / "xfleet" / m).is_file()] == []
