"""The service's process: the watch that keeps the mirror current, the HTTP server, signals.

Threads: one runs uvicorn (the HTTP server, with Starlette's pool for handlers), one runs the
watch (xfleet.ops.watch.Watcher: per node an event stream, periodic incremental syncs with the
space refresh and the daily totals, an hourly reconcile), and the main thread waits for signals:
- SIGTERM/SIGINT: stop. The watch closes its streams and lets every sync end (a sync's writes
  are transactions: an interrupted one leaves the mirror as it was, its run marked
  `interrupted`); the server stops taking requests; exit 0.
- SIGHUP: read the inventory (and the token file) again; the watch restarts with the new nodes.
  A broken inventory is logged and the old one kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.registry import CollectorRegistry

from xfleet import mirror
from xfleet.core.errors import UsageError, XfleetError
from xfleet.fleet.inventory import Inventory
from xfleet.fleet.inventory import load as load_inventory
from xfleet.mirror.backend import Location, location
from xfleet.ops.watch import NodeWatch, Watcher
from xfleet.serve import app as app_mod
from xfleet.serve.metrics import MirrorCollector, ServiceState, VolumeMetrics
from xfleet.serve.readers import Readers

log = logging.getLogger("xfleet.serve")
DEFAULT_PORT = 9733


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token_file: Path | None = None
    watch: bool = True
    refresh_interval: float = 30.0
    reconcile_interval: float = 3600.0
    volumes: VolumeMetrics = field(default_factory=VolumeMetrics)
    currency: str = "USD"
    access_log: bool = False
    snapshot_policy: Path | None = None  # run on its schedules (xfleet/ops/scheduler.py)
    snapshot_spread: float = 60.0
    max_prune: int = 100_000
    replicate: bool = True


def read_token(path: Path) -> str:
    """The bearer token in `path` (its first line). The file must not be readable by others."""
    try:
        st = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read the token file {path}: {exc.strerror or exc}",
                         hint="create it with a random token, e.g. "
                         "'openssl rand -hex 32 > FILE; chmod 600 FILE'") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"the token file {path} is readable by other users",
                         hint=f"chmod 600 {path}")
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(token) < 16:
        raise UsageError(f"the token in {path} is shorter than 16 characters",
                         hint="use a random token, e.g. 'openssl rand -hex 32'")
    return token


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts (a clear error if it cannot)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}",
                         hint="give an address of this machine, e.g. --listen 127.0.0.1:9733") \
            from None
    family, _, proto, _, addr = infos[0]
    # the protocol must be TCP, not 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only
    # on accepted sockets whose protocol is TCP; without it every request on a kept-alive
    # connection waited ~40 ms for the client's delayed ACK (benchmarks/bench_serve.py)
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         hint="another process has the port (ss -ltnp), or pick another "
                         "with --listen") from None
    sock.set_inheritable(True)
    return sock


class Service:
    def __init__(self, inventory_path: Path, mirror_override: str | None,
                 options: Options, *, say: Callable[[str], None] | None = None) -> None:
        self.inventory_path = inventory_path
        self.mirror_override = mirror_override
        self.opt = options
        self.say = say or (lambda msg: log.info("%s", msg))
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.inv = self._load()
        self.where: Location = location(mirror_override) if mirror_override else self.inv.mirror
        self.token = read_token(options.token_file) if options.token_file else None
        self.watcher: Watcher | None = None
        self.watch_stop = threading.Event()
        self.watch_thread: threading.Thread | None = None
        self.schedule_stop = threading.Event()
        self.schedule_thread: threading.Thread | None = None
        self.first_sync: set[str] = set()
        self.logged: dict[str, tuple[str, str | None]] = {}  # node -> last logged state
        self.readers = Readers(self.where)
        self.state = ServiceState(
            engine="sqlite" if isinstance(self.where, Path) else "postgresql",
            watch_states=self._watch_states, mirror_errors=lambda: self.readers.errors)

    # -- set-up ---------------------------------------------------------------------------

    def _load(self) -> Inventory:
        return load_inventory(self.inventory_path)

    def _watch_states(self) -> dict[str, str]:
        w = self.watcher
        return {} if w is None else {n: st.state for n, st in list(w.status.items())}

    def registry(self) -> CollectorRegistry:
        reg = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        reg.register(MirrorCollector(
            self.readers.read, service=self.state, volumes=self.opt.volumes,
            price_per_gb_month=self.inv.price_per_gb_month, currency=self.opt.currency,
            nodes=lambda: list(self.inv.hosts)))
        return reg

    def context(self) -> app_mod.Context:
        return app_mod.Context(
            readers=self.readers, registry=self.registry(),
            nodes=lambda: list(self.inv.hosts), token=lambda: self.token,
            health=self._health, ready=self._ready)

    def _health(self) -> tuple[bool, dict[str, Any]]:
        alive = not self.opt.watch or (self.watch_thread is not None
                                       and self.watch_thread.is_alive())
        return alive, {"watch": "running" if alive else "stopped",
                       "uptime_seconds": round(time.time() - self.state.started, 1)}

    def _ready(self) -> tuple[bool, dict[str, Any]]:
        if not self.opt.watch:
            return True, {}
        waiting = sorted(n for n in self.inv.hosts if n not in self.first_sync)
        return not waiting, ({"waiting_for_first_sync": waiting} if waiting else {})

    # -- the watch ------------------------------------------------------------------------

    def _changed(self, st: NodeWatch) -> None:
        if st.syncs > 0 or st.state == "following" or st.error:
            self.first_sync.add(st.node)
        said = (st.state, st.error)
        if self.logged.get(st.node) == said:
            return  # counters moved: the state did not (one line per change)
        self.logged[st.node] = said
        if st.error:
            log.warning("%s: %s (%s)", st.node, st.state, st.error)
        elif st.state in ("following", "stopped"):
            log.info("%s: %s", st.node, st.state)

    def _start_watch(self) -> None:
        if not self.opt.watch:
            return
        self.watch_stop = threading.Event()
        self.watcher = Watcher(self.inv, self.where, refresh_interval=self.opt.refresh_interval,
                               reconcile_interval=self.opt.reconcile_interval,
                               on_change=self._changed)
        self.watch_thread = threading.Thread(target=self.watcher.run, args=(self.watch_stop,),
                                             name="xfleet-serve-watch", daemon=True)
        self.watch_thread.start()

    def _start_schedule(self) -> None:
        if self.opt.snapshot_policy is None:
            return
        from xfleet.ops.scheduler import Scheduler

        sched = Scheduler(lambda: self.inv, self.where, self.opt.snapshot_policy,
                          spread=self.opt.snapshot_spread, max_prune=self.opt.max_prune,
                          replicate=self.opt.replicate, say=self.say)
        self.schedule_thread = threading.Thread(target=sched.run, args=(self.schedule_stop,),
                                                name="xfleet-serve-snapshots", daemon=True)
        self.schedule_thread.start()

    def _stop_schedule(self) -> None:
        self.schedule_stop.set()
        if self.schedule_thread is not None:
            self.schedule_thread.join(timeout=60)
            if self.schedule_thread.is_alive():
                log.warning("the snapshot schedule did not stop within 60 s (a tick runs)")

    def _stop_watch(self) -> None:
        self.watch_stop.set()
        if self.watch_thread is not None:
            self.watch_thread.join(timeout=30)
            if self.watch_thread.is_alive():
                log.warning("the watch did not stop within 30 s")

    def _reload(self) -> None:
        try:
            inv = self._load()
            token = read_token(self.opt.token_file) if self.opt.token_file else None
        except XfleetError as exc:
            log.error("reload refused, keeping the running configuration: %s%s", exc.message,
                      f" ({exc.hint})" if exc.hint else "")
            return
        self._stop_watch()
        self.inv, self.token = inv, token
        self.first_sync = set()
        self._start_watch()
        self.say(f"reloaded {self.inventory_path}: {len(inv.hosts)} node(s)")

    # -- the process ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.stop.set()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self.reload.set()

        old = {s: signal.signal(s, h) for s, h in ((signal.SIGTERM, on_stop),
                                                   (signal.SIGINT, on_stop),
                                                   (signal.SIGHUP, on_hup))}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def run(self) -> None:
        conn = mirror.connect(self.where)  # creates or migrates the mirror before serving
        conn.close()
        sock = bind(self.opt.host, self.opt.port)
        host, port = sock.getsockname()[:2]
        config = uvicorn.Config(app_mod.build(self.context()), log_level="warning",
                                access_log=self.opt.access_log, lifespan="off",
                                timeout_graceful_shutdown=10)
        server = uvicorn.Server(config)
        http = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                name="xfleet-serve-http", daemon=True)
        if os.geteuid() == 0:
            log.warning("running as root: run the service as its own user (docs/serve.md)")
        with self._signals():
            http.start()
            self._start_watch()
            self._start_schedule()
            self.say(f"listening on http://{host}:{port} (mirror {self.where}, "
                     f"{len(self.inv.hosts)} node(s){', token required' if self.token else ''})")
            while not self.stop.is_set():
                if self.reload.wait(0.5):
                    self.reload.clear()
                    self._reload()
                if not http.is_alive():
                    raise XfleetError("the HTTP server stopped",
                                      hint="see the log above for why")
            self.say("stopping: the watch ends its syncs, the server its requests")
            self._stop_schedule()
            self._stop_watch()
            server.should_exit = True
            http.join(timeout=15)
            self.readers.close()
            sock.close()
        self.say("stopped")
