"""The real OpenZFS lab for integration tests (marker `lab`).

One lab per session: the image is built (cached under ~/.cache/xfleet/lab) and two VMs are
booted once, with their own state dir and ports (2211+, 12311+) so a developer's own
`xfleet lab up` on 2201 is not disturbed. Pools are recreated between test modules. The client
VM (`client1`, an NVMe/TCP initiator) is booted once, when the first test that asks for the
`client` fixture runs (lab1 always has a spare private link for it); those tests run last, so
it boots once and every other module sees two nodes. The lab is stopped at session end.

Tests marked `lab` are deselected unless asked for: `pytest -m lab` (or XFLEET_LAB=1). When
asked for, they never skip: if the lab cannot come up, every test errors with the reason.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pluggy
import pytest

from xfleet.lab import LabError, build, down, reset, up

from . import labkit
from .labkit import LINK_PORT, NODES, ROOT, SSH_PORT, Lab, log

ARTIFACTS = ROOT / ".xfleet" / "test-artifacts"
_session: dict[str, Path] = {}  # "state_dir": the session lab's, once known

LAB_DIR = Path(__file__).resolve().parent


def _lab_requested(config: pytest.Config) -> bool:
    markexpr = config.getoption("markexpr", default="") or ""
    return os.environ.get("XFLEET_LAB") == "1" or (
        "lab" in markexpr and "not lab" not in markexpr
    )


LAB_DESELECTED = pytest.StashKey[int]()  # how many lab tests a run without -m lab left out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    lab_items = [
        i for i in items
        if LAB_DIR in Path(str(i.fspath)).parents and i.get_closest_marker("lab") is not None
    ]
    _lab_ids.update(i.nodeid for i in lab_items)
    if lab_items and not _lab_requested(config):
        config.hook.pytest_deselected(items=lab_items)
        keep = set(map(id, lab_items))
        items[:] = [i for i in items if id(i) not in keep]
        config.stash[LAB_DESELECTED] = len(lab_items)
    # tests that need the client VM last (the sort is stable): it boots once, for them only
    items.sort(key=lambda i: "client" in getattr(i, "fixturenames", ()))


def pytest_report_header(config: pytest.Config) -> str | None:
    if _lab_requested(config):
        return "xfleet lab: real OpenZFS VMs will be built/booted (ports 2211+)"
    return "xfleet lab: tests/lab deselected (run `pytest -m lab` to run them)"


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    state_dir = Path(os.environ.get("XFLEET_LAB_TEST_STATE_DIR") or
                     tmp_path_factory.mktemp("labstate"))
    inventory = state_dir / "inventory" / "lab.yaml"
    _session["state_dir"] = state_dir
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    try:
        build(progress=log)
        timings["build"] = time.monotonic() - t0
        t1 = time.monotonic()
        state = up(NODES, inventory, state_dir=state_dir, ssh_port=SSH_PORT, link_port=LINK_PORT,
                   fresh=True, progress=log)
        timings["up"] = time.monotonic() - t1
    except LabError as exc:
        down(state_dir=state_dir, progress=log)
        pytest.fail(f"the lab could not come up: {exc}", pytrace=False)
    handle = Lab(state, inventory, timings)
    yield handle
    log(f"timings: {', '.join(f'{k}={v:.0f}s' for k, v in handle.timings.items())}")
    down(state_dir=state_dir, progress=log)


@pytest.fixture(scope="session")
def client(lab: Lab) -> str:
    """The name of the lab's client VM (`client1`, an NVMe/TCP initiator), booted when the
    first test asks for it (~35-80 s under TCG; lab1 keeps a spare private link for it) and
    kept until the lab stops; the tests that ask for it run last. Its first boot is stalled
    (QEMU -S), so it comes up on boot 2 through the boot watchdog (checked by
    test_lab_nodes.py). Reach it with
    `lab.run(client, argv)` or through the inventory's `initiators`. A module leaves it with no
    NVMe connection."""
    try:
        return lab.ensure_client(stall_first_boot=True)  # the boot watchdog's lab proof
    except LabError as exc:
        pytest.fail(f"the lab client could not come up: {exc}", pytrace=False)


@pytest.fixture(scope="module", autouse=True)
def fresh_pools(request: pytest.FixtureRequest) -> None:
    """Every `lab` test module starts on empty pools (recreated in seconds, no reboot)."""
    if request.node.get_closest_marker("lab") is None:
        return  # unit tests of xfleet.lab: no VMs
    handle: Lab = request.getfixturevalue("lab")
    handle.ensure_up()
    t = time.monotonic()
    reset(state_dir=handle.state_dir, progress=log)
    handle.timings.setdefault("reset", 0.0)
    handle.timings["reset"] += time.monotonic() - t


# ---------------------------------------------------------------------------------------------
# failure bundles: everything needed to name the cause of a lab failure after the fact


@pytest.fixture(autouse=True)
def _xfleet_commands() -> None:
    """Each test's bundle lists the xfleet commands of that test only."""
    labkit.COMMANDS.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed or item.get_closest_marker("lab") is None:
        return
    try:
        path = labkit.write_bundle(ARTIFACTS, item.nodeid, rep.when, rep.longreprtext,
                                   _session.get("state_dir"))
    except Exception as exc:  # a bundle must never hide the failure itself
        rep.sections.append(("xfleet lab failure bundle", f"could not be written: {exc!r}"))
        return
    rep.sections.append(("xfleet lab failure bundle", f"written to {path}"))
    log(f"failure bundle for {item.nodeid} ({rep.when}): {path}")


# ---------------------------------------------------------------------------------------------
# the lab's time budget: seconds per module (setup + call + teardown), printed at the end so
# every change sees what it costs (docs/lab.md has the budget)

_module_seconds: dict[str, float] = {}
_lab_ids: set[str] = set()  # the tests marked `lab` (not the VM-less unit tests beside them)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid in _lab_ids:
        module = report.nodeid.split("::")[0]
        _module_seconds[module] = _module_seconds.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if labkit.FIGURES:
        terminalreporter.section("xfleet lab: measured figures")
        for line in labkit.FIGURES:
            terminalreporter.write_line(line)
    if not _module_seconds:
        return
    terminalreporter.section("xfleet lab: seconds per module (budget: docs/lab.md)")
    for module, seconds in sorted(_module_seconds.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:7.0f}s  {module}")
    terminalreporter.write_line(f"{sum(_module_seconds.values()):7.0f}s  lab total")
