"""A real OpenSSH server on loopback for the SSH transport tests.

`SSHD.start(workdir)` generates ed25519 and RSA host keys and an ed25519 client key, writes an
unprivileged-style sshd_config (its own keys, ListenAddress 127.0.0.1, a free port, public-key
login for the current user only, TCP forwarding on for ProxyJump), and runs `sshd -D -E LOG` until
`stop()`. The server's log (LogLevel DEBUG1) is kept, so tests can count logins and see
forwarded connections.

Nothing outside `workdir` is written except the privilege-separation directory /run/sshd,
which sshd requires when it runs as root.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xfleet.remote.host import Host

SSHD_BIN = Path(os.environ.get("XFLEET_TEST_SSHD", "/usr/sbin/sshd"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def keygen(path: Path, comment: str = "xfleet-test", kind: str = "ed25519") -> Path:
    """A new key pair at `path` and `path`.pub (ed25519 unless `kind` says otherwise)."""
    size = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, *size, "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def ssh_keygen_fingerprint(pub: Path) -> str:
    """'SHA256:...' of a public key, as OpenSSH itself computes it."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


def process_running(text: str) -> bool:
    """Is a live process whose command line contains `text` running on this machine?

    Reads /proc directly (no procps needed). sshd is on this machine, so this sees remote
    commands too.
    """
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # the process ended while we looked
            continue
        if text in cmdline and state != "Z":
            return True
    return False


@dataclass
class SSHD:
    workdir: Path
    port: int = 0
    user: str = field(default_factory=getpass.getuser)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host_key(self) -> Path:
        return self.workdir / "ssh_host_ed25519_key"

    @property
    def rsa_host_key(self) -> Path:
        """A second host key, so key-type negotiation can be exercised."""
        return self.workdir / "ssh_host_rsa_key"

    @property
    def client_key(self) -> Path:
        return self.workdir / "id_ed25519"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    @property
    def host_key_line(self) -> str:
        """The server's public key, 'ssh-ed25519 AAAA... comment'."""
        return (self.workdir / "ssh_host_ed25519_key.pub").read_text().strip()

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key_line}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logins(self) -> int:
        """Successful logins so far, as sshd logged them."""
        return self.log().count("Accepted publickey for ")

    def host(self, name: str = "n1", **settings: Any) -> Host:
        """An inventory Host for this server: pinned host key, the test client key."""
        values: dict[str, Any] = {
            "address": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "identity_file": str(self.client_key),
            "host_key": self.host_key_line,
            "connect_timeout": 5.0,
            "command_timeout": 20.0,
            "connect_retries": 1,
        }
        values.update(settings)
        return Host(name=name, **values)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> SSHD:
        if not SSHD_BIN.is_file():
            raise RuntimeError(
                f"{SSHD_BIN} not found: install openssh-server (make test does it)"
            )
        if shutil.which("ssh-keygen") is None:
            raise RuntimeError("ssh-keygen not found: install openssh-client")
        self.workdir.mkdir(parents=True, exist_ok=True)
        keygen(self.host_key, "xfleet-test-host")
        keygen(self.rsa_host_key, "xfleet-test-host-rsa", "rsa")
        keygen(self.client_key, "xfleet-test-client")
        (self.workdir / "authorized_keys").write_text(
            (self.workdir / "id_ed25519.pub").read_text()
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        last_error = ""
        for _ in range(5):  # the free port may be taken between picking and binding
            self.port = free_port()
            self._write_config()
            self.log_path.write_text("")
            # -E rather than -e: with -e, a session's own debug lines would go to the client's
            # stderr (the child logs after its stderr became the channel's).
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [str(SSHD_BIN), "-D", "-E", str(self.log_path),
                     "-f", str(self.workdir / "sshd_config")],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            if self._wait_ready():
                return self
            last_error = self.log()
            self.stop()
        raise RuntimeError(f"sshd did not start:\n{last_error}")

    def _write_config(self) -> None:
        w = self.workdir
        (w / "sshd_config").write_text(
            f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
HostKey {self.rsa_host_key}
PidFile {w / "sshd.pid"}
AuthorizedKeysFile {w / "authorized_keys"}
AllowUsers {self.user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowTcpForwarding yes
MaxStartups 50:30:100
MaxSessions 20
LogLevel DEBUG1
"""
        )

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        """True once the server answers with an SSH banner."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
