"""Every `--json` command prints exactly one JSON document on stdout on every exit path.

Success keeps each command's own document; any failure (an error, a refusal, a usage error, a
bug, Ctrl-C or SIGTERM) is `{"ok": false, "error": {"message", "where", "hint"}, ...}` with a
non-zero exit status, while stderr keeps its human text. A move's document is the move
itself, its error object's message the text the move journaled.

The simulator is the fleet here (tests/conftest.py); CASES walks each --json command through a
failure, and a test fails when a --json command exists that CASES does not cover.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from conftest import ROOT, Result, run_cli, write_sim_inventory

from xfleet import cli as cli_mod
from xfleet.cli import output
from xfleet.core.errors import UsageError

VOLUME = "tank/t0000/vol-000005"  # on n1 of the sim fleet below (no clones, not on n2)


def show(args: tuple[str, ...] | list[str], r: Result) -> str:
    return f"xfleet {' '.join(args)}\nexit {r.code}\nstdout:\n{r.out}\nstderr:\n{r.err}"


def one_document(args: tuple[str, ...] | list[str], r: Result) -> Any:
    """stdout parsed as exactly one JSON document (json.loads refuses a second one)."""
    try:
        return json.loads(r.out)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"stdout is not one JSON document ({exc})\n{show(args, r)}") \
            from None


def assert_failure_document(args: tuple[str, ...] | list[str], r: Result, *,
                            stderr: bool = True) -> dict[str, Any]:
    """One document, a failure: `"ok": false` and the error object, a non-zero exit status;
    with `stderr`, the human error is on stderr too (commands whose own document reports the
    failure, like a failed move, did not write one before and need not now)."""
    doc = one_document(args, r)
    why = show(args, r)
    assert r.code != 0, why
    assert isinstance(doc, dict) and doc.get("ok") is False, why
    err = doc.get("error")
    assert isinstance(err, dict) and set(err) == {"message", "where", "hint"}, why
    assert isinstance(err["message"], str) and err["message"].strip(), why
    assert "Traceback" not in r.err, why
    assert r.err.strip() or not stderr, f"no human error on stderr\n{why}"
    return doc


# ---------------------------------------------------------------------------------------------
# a small synced sim fleet, copied for each test (commands may change it)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("json-fleet")
    inv = write_sim_inventory(d / "fleet.yaml", {"n1": {"seed": 1, "volumes": 6},
                                                 "n2": {"seed": 2, "volumes": 4,
                                                        "data_path": "false"}})
    r = run_cli("-i", str(inv), "sync", "--json")
    assert r.code == 0, show(["sync", "--json"], r)
    (d / "broken.yaml").write_text("all:\n  hosts:\n    n1: {kind: sim\n")  # bad YAML
    (d / "playbook.yaml").write_text("name: nothing\n")
    return d


@pytest.fixture
def fleet(template: Path, tmp_path: Path) -> Path:
    d = tmp_path / "fleet"
    shutil.copytree(template, d)
    return d


# (case id, arguments after `-i INVENTORY`, with {d} for the fleet's directory)
CASES: list[tuple[str, list[str]]] = [
    ("inventory check", ["-i", "{d}/broken.yaml", "inventory", "check", "--json"]),
    ("inventory show", ["inventory", "show", "nosuch", "--json"]),
    ("sync", ["sync", "--node", "nosuch", "--json"]),
    ("watch", ["watch", "--node", "nosuch", "--duration", "1", "--json-lines"]),
    ("status", ["status", "--node", "nosuch", "--json"]),
    ("move", ["move", VOLUME, "--from", "n1", "--to", "n2", "--json"]),  # no data path
    ("drain", ["drain", "n1", "--to", "n2", "--json"]),  # no --yes on a pipe: refused
    ("moves list", ["-m", "{d}/none.db", "moves", "list", "--json"]),  # no mirror
    ("moves show", ["moves", "show", "99", "--json"]),
    ("moves resume", ["moves", "resume", "99", "--json"]),
    ("moves pause", ["moves", "pause", "99", "--json"]),
    ("ls", ["ls", "--where", "used>>1", "--json"]),
    ("show", ["show", "tank/no/such", "--json"]),
    ("stats", ["-m", "{d}/none.db", "stats", "--json"]),
    ("sql", ["sql", "SELECT nope FROM nothing", "--json"]),
    ("lab status", ["lab", "status", "--json", "--no-such-option"]),  # a click usage error
    ("compression plan", ["compression", "plan", "--policy", "{d}/none.yaml", "--json"]),
    ("compression apply", ["compression", "apply", "--resume", "99", "--json"]),
    ("compression estimate", ["compression", "estimate", "--json"]),
    ("compression runs", ["-m", "{d}/none.db", "compression", "runs", "--json"]),
    ("compression audit", ["-m", "{d}/none.db", "compression", "audit", "--json"]),
    ("report compression", ["report", "compression", "--by", "nosuch", "--json"]),
    ("report capacity", ["report", "capacity", "--node", "nosuch", "--json"]),
    ("snapshots plan", ["snapshots", "plan", "--policy", "{d}/none.yaml", "--json"]),
    ("snapshots run", ["snapshots", "run", "--policy", "{d}/none.yaml", "--json"]),
    ("snapshots status", ["snapshots", "status", "--policy", "{d}/none.yaml", "--json"]),
    ("snapshots apply", ["snapshots", "apply", "--policy", "{d}/none.yaml", "--json"]),
    ("snapshots prune", ["snapshots", "prune", "--policy", "{d}/none.yaml", "--json"]),
    ("snapshots runs", ["-m", "{d}/none.db", "snapshots", "runs", "--json"]),
    ("replicate run", ["replicate", "run", "--policy", "{d}/none.yaml", "--json"]),
    ("replicate status", ["-m", "{d}/none.db", "replicate", "status", "--json"]),
    ("replicate show", ["replicate", "show", "99", "--json"]),
    ("replicate promote", ["replicate", "promote", "99", "--json"]),
    ("identity assign", ["identity", "assign", "--node", "nosuch", "--json"]),
    ("identity show", ["identity", "show", "tank/no/such", "--json"]),
    ("snapshot", ["snapshot", "--name", "s1", "--json"]),  # nothing selected
    ("clone", ["clone", "tank/no/such", "tank/no/branch", "--json"]),
    ("destroy", ["destroy", VOLUME, "--node", "n1", "--json"]),  # no --yes: refused
    ("set", ["set", "compression=bogus", VOLUME, "--node", "n1", "--json"]),
    ("resize", ["resize", VOLUME, "--node", "n1", "--size", "1M", "--json"]),  # shrinking
    ("play", ["play", "{d}/no-such-playbook.yaml", "--json"]),
    ("plays list", ["-m", "{d}/none.db", "plays", "list", "--json"]),
    ("plays show", ["plays", "show", "99", "--json"]),
    ("upgrade target", ["upgrade", "target", "1.1", "--package", "{d}/t.deb", "--json"]),
    ("rollouts list", ["-m", "{d}/none.db", "rollouts", "list", "--json"]),
    ("rollouts show", ["rollouts", "show", "99", "--json"]),
    ("rollouts pause", ["rollouts", "pause", "99", "--json"]),
    ("rollouts stop", ["rollouts", "stop", "99", "--json"]),
    ("rollouts resume", ["rollouts", "resume", "99", "--json"]),
    ("target status", ["target", "status", "nosuch", "--json"]),
    ("target audit", ["target", "audit", "--node", "nosuch", "--json"]),
    ("attach", ["attach", VOLUME, "nosuch", "--json"]),  # no such initiator
    ("detach", ["detach", "--from", "{d}/none.txt", "--json"]),
    ("attachments", ["-m", "{d}/none.db", "attachments", "--json"]),
    ("initiators", ["initiators", "nosuch", "--json"]),
    ("auth apply", ["auth", "apply", "--json"]),  # no initiator has a DH-CHAP secret
    ("auth status", ["auth", "status", "nosuch", "--json"]),  # no such initiator
    ("auth log", ["-m", "{d}/none.db", "auth", "log", "--json"]),  # no mirror
    ("mirror status", ["-m", "{d}/none.db", "mirror", "status", "--json"]),  # no mirror
    ("mirror migrate", ["-m", "{d}/none.db", "mirror", "migrate", "--json"]),
    ("mirror init", ["-m", "postgresql://x:pw@localhost/m", "mirror", "init", "--json"]),
    ("mirror copy", ["mirror", "copy", "--to", "{d}/fleet.yaml", "--json"]),  # not a mirror
]


def _args(d: Path, raw: list[str]) -> list[str]:
    args = [a.replace("{d}", str(d)) for a in raw]
    return args if args[0] == "-i" else ["-i", str(d / "fleet.yaml"), *args]


def json_commands() -> set[str]:
    """Every command of the CLI that takes --json (or --json-lines), by its path."""
    found: set[str] = set()

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        elif any(p.name in ("as_json", "json_lines") for p in cmd.params):
            found.add(" ".join(path))

    walk(cli_mod.cli, [])
    return found


def test_every_json_command_is_walked_through_a_failure() -> None:
    covered = {case for case, _ in CASES}
    missing = json_commands() - covered
    assert not missing, f"--json commands without a failure case in CASES: {sorted(missing)}"
    assert not covered - json_commands(), "CASES names commands that do not exist (any more)"


@pytest.mark.parametrize("case,raw", CASES, ids=[c for c, _ in CASES])
def test_a_failing_json_command_prints_one_error_document(
        fleet: Path, case: str, raw: list[str]) -> None:
    args = _args(fleet, raw)
    r = run_cli(*args)
    if case == "watch":  # --json-lines: every line a document; the error is the last one
        lines = [ln for ln in r.out.splitlines() if ln.strip()]
        assert lines, show(args, r)
        r = Result(r.code, lines[-1], r.err)
    doc = assert_failure_document(args, r, stderr=case != "move")
    if case in ("move",):
        # the move's own document: its state, the error object with its journaled text
        assert doc["state"] == "failed", show(args, r)
        assert "no data path" in doc["error"]["message"], show(args, r)
        assert doc["error"]["hint"] == f"xfleet moves resume {doc['id']}", show(args, r)
    if case in ("lab status",):
        assert r.code == 2 and "no-such-option" in doc["error"]["message"], show(args, r)


# ---------------------------------------------------------------------------------------------
# documents of commands that end in a non-done state


def test_a_sync_with_a_failed_node_says_ok_false_with_an_error_object(
        fleet: Path, tmp_path: Path) -> None:
    inv = tmp_path / "down.yaml"
    inv.write_text(
        f"all:\n  vars:\n    mirror: {fleet / 'mirror.db'}\n    state_dir: {fleet / 'state'}\n"
        "  hosts:\n    n1:\n      kind: sim\n      sim: {seed: 1, volumes: 6}\n"
        "    n2:\n      kind: ssh\n      address: 127.0.0.1\n      port: 1\n"
        "      connect_timeout: 2\n      connect_retries: 1\n")
    args = ["-i", str(inv), "sync", "--json"]
    r = run_cli(*args)
    doc = assert_failure_document(args, r, stderr=False)
    assert r.code == 1, show(args, r)
    assert doc["error"]["where"] == "n2" and "cannot connect" in doc["error"]["message"], \
        show(args, r)
    nodes = {n["node"]: n for n in doc["nodes"]}  # the report is all there
    assert nodes["n1"]["ok"] is True and "cannot connect" in nodes["n2"]["error"], show(args, r)


def test_a_moves_resume_that_fails_again_prints_the_move_state(fleet: Path) -> None:
    inv = str(fleet / "fleet.yaml")
    first = ["-i", inv, "move", VOLUME, "--from", "n1", "--to", "n2", "--json"]
    m = assert_failure_document(first, run_cli(*first), stderr=False)
    args = ["-i", inv, "moves", "resume", str(m["id"]), "--json"]
    r = run_cli(*args)
    doc = assert_failure_document(args, r, stderr=False)
    assert doc["id"] == m["id"] and doc["state"] == "failed", show(args, r)
    assert "no data path" in doc["error"]["message"], show(args, r)


def test_a_drain_whose_moves_fail_prints_one_document_with_every_move(fleet: Path) -> None:
    args = ["-i", str(fleet / "fleet.yaml"), "drain", "n1", "--to", "n2", "--yes", "--json"]
    r = run_cli(*args)
    doc = assert_failure_document(args, r)  # stderr: the volumes that cannot move
    assert r.code == 1 and doc["error"]["where"] == "n1", show(args, r)
    assert doc["moves"] and all(
        m["state"] == "failed" and m["ok"] is False and "no data path" in m["error"]["message"]
        for m in doc["moves"]), show(args, r)
    assert doc["refused"] and all(x["why"] for x in doc["refused"]), show(args, r)


def test_successful_documents_keep_their_shape(fleet: Path) -> None:
    inv = str(fleet / "fleet.yaml")
    for args, kind in ((["-i", inv, "ls", "--json"], list),
                       (["-i", inv, "moves", "list", "--json"], list),
                       (["-i", inv, "sync", "--json"], dict),
                       (["-i", inv, "ls", "--count", "--json"], dict)):
        r = run_cli(*args)
        doc = one_document(args, r)
        assert r.code == 0 and isinstance(doc, kind), show(args, r)
        if isinstance(doc, dict):
            assert doc.get("ok", True) is True and "error" not in doc, show(args, r)


def test_a_usage_error_before_json_was_parsed_still_gives_the_document(fleet: Path) -> None:
    args = ["-i", str(fleet / "fleet.yaml"), "move", "--json"]  # no VOLUME, no --to
    r = run_cli(*args)
    doc = assert_failure_document(args, r)
    assert r.code == 2 and "Missing" in doc["error"]["message"], show(args, r)
    args = ["-i", str(fleet / "fleet.yaml"), "ls", "--no-such-option", "--json"]
    r = run_cli(*args)
    doc = assert_failure_document(args, r)
    assert r.code == 2 and "no-such-option" in doc["error"]["message"], show(args, r)


def test_without_json_stdout_stays_empty_on_failure(fleet: Path) -> None:
    args = ["-i", str(fleet / "fleet.yaml"), "show", "tank/no/such"]
    r = run_cli(*args)
    assert r.code != 0 and r.out == "" and "error:" in r.err, show(args, r)


# ---------------------------------------------------------------------------------------------
# SIGTERM, a closed stdout


def _wait_for(cond: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)
    return value


def _sync_running(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        conn = sqlite3.connect(db, timeout=0.1)
        try:
            return bool(conn.execute(
                "SELECT 1 FROM sync_runs WHERE node = 'slow' AND status = 'running'").fetchone())
        finally:
            conn.close()
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return False


@pytest.fixture
def xfleet_process() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "COLUMNS": "200"}
        env.pop("XFLEET_INVENTORY", None)
        env.pop("XFLEET_MIRROR", None)
        p = subprocess.Popen([sys.executable, "-m", "xfleet", *args], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_sigterm_during_a_json_sync_prints_one_error_document(
        tmp_path: Path, xfleet_process: Callable[..., subprocess.Popen[str]]) -> None:
    inv = write_sim_inventory(tmp_path / "fleet.yaml",
                              {"slow": {"seed": 3, "volumes": 400, "rows_per_second": 100}})
    args = ["-i", str(inv), "sync", "--json"]
    p = xfleet_process(*args)
    _wait_for(lambda: _sync_running(tmp_path / "mirror.db") or p.poll() is not None,
              "the sync of the slow node to start")
    assert p.poll() is None, "the sync ended before it could be terminated"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    r = Result(p.returncode, out, err)
    doc = assert_failure_document(args, r)
    assert r.code == 128 + signal.SIGTERM, show(args, r)
    assert "SIGTERM" in doc["error"]["message"] and "terminated" in r.err, show(args, r)


def test_a_reader_closing_stdout_early_is_not_an_error(fleet: Path) -> None:
    # more JSON than a pipe holds, and a reader that takes one byte and goes away
    cmd = (f"{sys.executable} -m xfleet -i {fleet / 'fleet.yaml'} sql "
           "'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) "
           "SELECT i FROM n' --json | head -c 1 >/dev/null; echo \"${PIPESTATUS[0]}\" >&2")
    p = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.stderr.strip() == "0", f"{cmd}\nexit {p.returncode}\nstderr:\n{p.stderr}"


# ---------------------------------------------------------------------------------------------
# exit paths no real command takes on purpose: commands added for the test, run in-process


@pytest.fixture
def extra_command() -> Iterator[Callable[[Callable[[], None]], str]]:
    """extra_command(body) -> the name of a --json command running body(), removed after."""
    names: list[str] = []
    sigterm = signal.getsignal(signal.SIGTERM)

    def add(body: Callable[[], None]) -> str:
        name = f"test-exit-path-{len(names)}"

        @cli_mod.cli.command(name)
        @output.json_option
        def cmd(as_json: bool) -> None:
            body()

        names.append(name)
        return name

    yield add
    for name in names:
        cli_mod.cli.commands.pop(name, None)
    signal.signal(signal.SIGTERM, sigterm)


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    with pytest.raises(SystemExit) as exc:
        cli_mod.main(list(args))
    cap = capsys.readouterr()
    code = exc.value.code
    return Result(code if isinstance(code, int) else 1, cap.out, cap.err)


def _raise(exc: BaseException) -> Callable[[], None]:
    def body() -> None:
        raise exc

    return body


@pytest.mark.parametrize("exc,word", [
    (RuntimeError("boom"), "RuntimeError: boom"),
    (EOFError(), "EOFError"),  # what paramiko raised on a reset socket (click: Abort)
    (BrokenPipeError(32, "Broken pipe"), "BrokenPipeError"),  # not stdout's
], ids=["exception", "eoferror", "brokenpipe-not-stdout"])
def test_an_unexpected_exception_is_an_internal_error_document(
        capsys: pytest.CaptureFixture[str], extra_command: Any, exc: BaseException,
        word: str) -> None:
    name = extra_command(_raise(exc))
    r = _main(capsys, name, "--json")
    doc = assert_failure_document([name, "--json"], Result(r.code, r.out, r.err.replace(
        "Traceback", "(traceback)")))
    assert r.code == 1, show([name, "--json"], r)
    assert doc["error"]["message"].startswith("internal error: ") and word in \
        doc["error"]["message"], show([name, "--json"], r)
    assert "Traceback" in r.err, show([name, "--json"], r)  # for diagnosis, on stderr


def test_a_command_that_printed_its_document_then_failed_prints_no_second(
        capsys: pytest.CaptureFixture[str], extra_command: Any) -> None:
    def body() -> None:
        output.echo_json({"ok": True, "done": 1})
        raise UsageError("failed after the document went out")

    name = extra_command(body)
    r = _main(capsys, name, "--json")
    doc = one_document([name], r)
    assert r.code == 2 and doc == {"ok": True, "done": 1}, show([name], r)
    assert "failed after the document went out" in r.err, show([name], r)


def test_ctrl_c_in_a_json_command_prints_one_error_document(
        capsys: pytest.CaptureFixture[str], extra_command: Any) -> None:
    name = extra_command(_raise(KeyboardInterrupt()))
    r = _main(capsys, name, "--json")
    doc = assert_failure_document([name], r)
    assert r.code == 130 and "interrupted" in doc["error"]["message"], show([name], r)
