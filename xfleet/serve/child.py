"""`xfleet serve` as a child process on loopback, for the tests and the benchmarks that talk to a
real service: started on a free port (`--listen 127.0.0.1:0`), its stderr collected (the log),
waited for until it says where it listens, and stopped by PID (SIGTERM, then SIGKILL), also
when the caller fails.

    with served(inventory_path, "--no-watch", mirror=db) as child:
        urllib.request.urlopen(child.url + "/metrics")
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# what service.py says once its socket is bound
LISTENING = re.compile(r"listening on (http://([^:/\s]+):(\d+))")


@dataclass
class ServeChild:
    """A running `xfleet serve` child: its process, its log so far, and once it listens, its
    URL (http://HOST:PORT)."""

    argv: list[str]
    proc: subprocess.Popen[bytes]
    log: list[str] = field(default_factory=list)
    url: str = ""
    host: str = ""
    port: int = 0

    def logs(self) -> str:
        return "".join(self.log)

    def wait_listening(self, timeout: float) -> str:
        """The URL, once the log says the service listens; a RuntimeError with the log if the
        process exits first or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while (m := LISTENING.search(self.logs())) is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{' '.join(self.argv)} exited {self.proc.returncode}:\n"
                                   f"{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(self.argv)} did not listen within {timeout:g} s:"
                                   f"\n{self.logs()}")
            time.sleep(0.02)
        self.url, self.host, self.port = m.group(1), m.group(2), int(m.group(3))
        return self.url

    def stop(self, timeout: float) -> None:
        """SIGTERM by PID, then SIGKILL if it has not exited within `timeout` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn(inventory: Path, *args: str, mirror: str | None = None,
          cwd: Path | None = None) -> ServeChild:
    """Start `python -m xfleet -i INVENTORY [--mirror M] serve --listen 127.0.0.1:0 ARGS...`
    (XFLEET_INVENTORY and XFLEET_MIRROR left out of its environment), its stderr read into
    `log` by a thread of its own."""
    argv = [sys.executable, "-m", "xfleet", "-i", str(inventory),
            *(["--mirror", mirror] if mirror else []), "serve", "--listen", "127.0.0.1:0",
            *args]
    env = {k: v for k, v in os.environ.items() if k not in ("XFLEET_INVENTORY", "XFLEET_MIRROR")}
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    child = ServeChild(argv, proc)

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            child.log.append(raw.decode(errors="replace"))

    threading.Thread(target=pump, daemon=True).start()
    return child


@contextmanager
def served(inventory: Path, *args: str, mirror: str | None = None, cwd: Path | None = None,
           start_timeout: float = 120.0, stop_timeout: float = 30.0) -> Iterator[ServeChild]:
    """A child `xfleet serve` (see `spawn`) that listens, stopped on the way out."""
    child = spawn(inventory, *args, mirror=mirror, cwd=cwd)
    try:
        child.wait_listening(start_timeout)
        yield child
    finally:
        child.stop(stop_timeout)
