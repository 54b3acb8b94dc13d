"""Running commands on storage nodes: SSH (paramiko), local, and the simulated fleet.

Every remote command is an argument list; `quote_command` is the one place where a list becomes
a shell line. Output is streamed line by line (`Transport.lines`), so a 100 MB `zfs list` never
sits whole in memory. Every call has a timeout (seconds without any output). Only
connection-level failures are retried; a command that ran is never re-run blindly.
"""

from __future__ import annotations

import os
import selectors
import shlex
import socket
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from xfleet.errors import (
    CommandTimeout,
    ConnectError,
    HostKeyError,
    RemoteCommandError,
    TransportError,
    UsageError,
    XfleetError,
)

if TYPE_CHECKING:
    import paramiko

    from xfleet.inventory import Host

T = TypeVar("T")
_STDERR_KEEP = 64 * 1024


def quote_command(argv: Sequence[str]) -> str:
    """The one place where an argument list becomes a shell command line."""
    check_argv(argv)
    return shlex.join(argv)


def check_argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, str) or not argv:
        raise UsageError("a command must be a non-empty list of arguments, not a string")
    out = []
    for arg in argv:
        if not isinstance(arg, str):
            raise UsageError(f"command argument {arg!r} is not a string")
        if "\x00" in arg:
            raise UsageError("command arguments may not contain NUL bytes")
        out.append(arg)
    return out


@dataclass
class CommandResult:
    argv: list[str]
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class Transport(ABC):
    """A way to run commands on one node. Subclasses implement `_stream`.

    `commands` counts every command issued (tests assert it stays constant where it must).
    """

    kind = "abstract"

    def __init__(self, node: str, *, command_timeout: float = 300.0):
        self.node = node
        self.command_timeout = command_timeout
        self.commands = 0
        self.history: list[list[str]] = []  # argv of every command, for tests and --dry-run

    @abstractmethod
    def _stream(
        self, argv: list[str], timeout: float, stdin: bytes | None, status: list[int], err: list[str]
    ) -> Iterator[str]:
        """Yield stdout lines (with their newline stripped); set status[0] and err[0] at end."""

    def lines(
        self, argv: Sequence[str], *, timeout: float | None = None, stdin: bytes | None = None
    ) -> Iterator[str]:
        """Stream stdout of `argv` line by line; raise RemoteCommandError if it exits non-zero."""
        args = check_argv(argv)
        self.commands += 1
        self.history.append(args)
        status: list[int] = [-1]
        err: list[str] = [""]
        yield from self._stream(args, timeout or self.command_timeout, stdin, status, err)
        if status[0] != 0:
            raise RemoteCommandError(self.node, args, status[0], err[0])

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        stdin: bytes | None = None,
        check: bool = True,
    ) -> CommandResult:
        """Run `argv` to completion and collect its output (for small outputs only)."""
        args = check_argv(argv)
        self.commands += 1
        self.history.append(args)
        status: list[int] = [-1]
        err: list[str] = [""]
        out = "".join(
            line + "\n" for line in self._stream(args, timeout or self.command_timeout, stdin, status, err)
        )
        result = CommandResult(args, status[0], out, err[0])
        if check and not result.ok:
            raise RemoteCommandError(self.node, args, status[0], err[0])
        return result

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection, if any."""


class LocalTransport(Transport):
    """Runs commands on this machine (for xfleet running on a storage node itself)."""

    kind = "local"

    def _stream(
        self, argv: list[str], timeout: float, stdin: bytes | None, status: list[int], err: list[str]
    ) -> Iterator[str]:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise TransportError(f"command not found: {argv[0]}", where=self.node) from exc
        assert proc.stdout is not None and proc.stderr is not None
        if stdin is not None:
            assert proc.stdin is not None
            threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        pending = b""
        errbuf = bytearray()
        open_streams = 2
        try:
            while open_streams:
                events = sel.select(timeout)
                if not events:
                    proc.kill()
                    raise CommandTimeout(
                        f"no output from {argv[0]} for {timeout:g}s; command stopped",
                        where=self.node,
                    )
                for key, _ in events:
                    chunk = os.read(key.fd, 65536)  # type: ignore[arg-type]
                    if not chunk:
                        sel.unregister(key.fileobj)
                        open_streams -= 1
                        continue
                    if key.data == "err":
                        if len(errbuf) < _STDERR_KEEP:
                            errbuf.extend(chunk)
                        continue
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    for line in complete:
                        yield line.decode("utf-8", "replace")
            if pending:
                yield pending.decode("utf-8", "replace")
            status[0] = proc.wait(timeout=timeout)
            err[0] = errbuf.decode("utf-8", "replace")
        finally:
            sel.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()


def _feed(pipe: Any, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except OSError:
        pass


def _is_connect_failure(exc: BaseException) -> bool:
    return isinstance(exc, ConnectError)


class SSHTransport(Transport):
    """One persistent paramiko connection per node, reused for every command.

    Host keys: unknown keys are rejected (paramiko RejectPolicy). Known keys come from the
    host's pinned `host_key`, its `known_hosts` file, xfleet's trust store (written by
    `xfleet inventory trust`), and ~/.ssh/known_hosts.
    """

    kind = "ssh"

    def __init__(self, host: Host, *, trust_store: Path | None = None):
        super().__init__(host.name, command_timeout=host.command_timeout)
        self.host = host
        self.trust_store = trust_store
        self.connects = 0  # SSH handshakes made (tests assert reuse)
        self._client: paramiko.SSHClient | None = None
        self._jump: SSHTransport | None = None
        self._lock = threading.Lock()

    # -- connection ------------------------------------------------------------------------
    def _host_key_name(self) -> str:
        addr = self.host.address or self.host.name
        return addr if self.host.port == 22 else f"[{addr}]:{self.host.port}"

    def _new_client(self) -> paramiko.SSHClient:
        import paramiko

        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        known = client.get_host_keys()
        for path in (Path("~/.ssh/known_hosts").expanduser(), self.trust_store):
            if path and path.is_file():
                known.load(str(path))
        if self.host.known_hosts:
            path = Path(self.host.known_hosts).expanduser()
            if not path.is_file():
                raise HostKeyError(
                    f"known_hosts file {path} does not exist", where=self.node,
                    hint="fix 'known_hosts' in the inventory or pin 'host_key' instead",
                )
            known.load(str(path))
        if self.host.host_key:
            # A pinned key replaces anything else known for this host.
            name = self._host_key_name()
            if name in known:
                del known[name]
            key = parse_public_key(self.host.host_key, where=self.node)
            known.add(name, key.get_name(), key)
        return client

    def connect(self) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None:
                t = self._client.get_transport()
                if t is not None and t.is_active():
                    return self._client
                self._client.close()
                self._client = None
            self._client = self._connect_with_retry()
            return self._client

    def _connect_with_retry(self) -> paramiko.SSHClient:
        from tenacity import (
            retry,
            retry_if_exception,
            stop_after_attempt,
            wait_exponential,
        )

        attempts = max(1, self.host.connect_retries)

        @retry(
            retry=retry_if_exception(_is_connect_failure),
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.5, max=5),
            reraise=True,
        )
        def attempt() -> paramiko.SSHClient:
            return self._connect_once()

        return attempt()

    def _connect_once(self) -> paramiko.SSHClient:
        import paramiko

        client = self._new_client()
        sock: Any = None
        addr = self.host.address or self.host.name
        if self.host.proxy_jump:
            sock = self._jump_channel(addr)
        self.connects += 1
        try:
            client.connect(
                hostname=addr,
                port=self.host.port,
                username=self.host.user,
                key_filename=str(Path(self.host.identity_file).expanduser())
                if self.host.identity_file
                else None,
                timeout=self.host.connect_timeout,
                banner_timeout=self.host.connect_timeout,
                auth_timeout=self.host.connect_timeout,
                sock=sock,
                allow_agent=self.host.identity_file is None,
                look_for_keys=self.host.identity_file is None,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"host key for {self._host_key_name()} does not match the known key "
                f"(got {exc.key.get_name()} {fingerprint(exc.key)}, expected "
                f"{fingerprint(exc.expected_key)}); refusing to connect",
                where=self.node,
                hint="if the node was reinstalled on purpose, update 'host_key' in the "
                "inventory or run 'xfleet inventory trust NODE --replace'",
            ) from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise HostKeyError(
                    f"unknown host key for {self._host_key_name()}; refusing to connect",
                    where=self.node,
                    hint=f"check the key out of band, then pin it with 'host_key' in the "
                    f"inventory or run 'xfleet inventory trust {self.node}'",
                ) from None
            if isinstance(exc, paramiko.AuthenticationException):
                raise TransportError(
                    f"authentication failed as {self.host.user or 'current user'}: {exc}",
                    where=self.node,
                    hint="check 'user' and 'identity_file' for this host",
                ) from None
            raise ConnectError(f"SSH error: {exc}", where=self.node) from None
        except (OSError, EOFError) as exc:
            client.close()
            raise ConnectError(
                f"cannot connect to {addr}:{self.host.port}: {exc or type(exc).__name__}",
                where=self.node,
                hint="is the node up and reachable? check 'address' and 'port'",
            ) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        return client

    def _jump_channel(self, addr: str) -> Any:
        from xfleet.inventory import Host as HostCls

        jump_spec = self.host.proxy_jump or ""
        user, _, hostport = jump_spec.rpartition("@")
        jhost, _, jport = hostport.partition(":")
        jump = HostCls(
            name=f"{self.node}-jump",
            address=jhost,
            port=int(jport) if jport else 22,
            user=user or self.host.user,
            identity_file=self.host.identity_file,
            connect_timeout=self.host.connect_timeout,
        )
        self._jump = SSHTransport(jump, trust_store=self.trust_store)
        client = self._jump.connect()
        t = client.get_transport()
        if t is None:
            raise ConnectError(f"jump host {jump_spec} closed the connection", where=self.node)
        try:
            return t.open_channel(
                "direct-tcpip", (addr, self.host.port), ("127.0.0.1", 0),
                timeout=self.host.connect_timeout,
            )
        except Exception as exc:  # paramiko raises ChannelException / SSHException
            raise ConnectError(
                f"jump host {jump_spec} could not reach {addr}:{self.host.port}: {exc}",
                where=self.node,
            ) from None

    # -- commands --------------------------------------------------------------------------
    def _stream(
        self, argv: list[str], timeout: float, stdin: bytes | None, status: list[int], err: list[str]
    ) -> Iterator[str]:
        client = self.connect()
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectError("connection lost", where=self.node)
        try:
            chan = transport.open_session(timeout=self.host.connect_timeout)
        except Exception as exc:
            raise ConnectError(f"cannot open a channel: {exc}", where=self.node) from None
        chan.settimeout(min(timeout, 1.0))
        errbuf = bytearray()
        pending = b""
        try:
            chan.exec_command(quote_command(argv))
            if stdin is not None:
                chan.sendall(stdin)
                chan.shutdown_write()
            last = time.monotonic()
            while True:
                if chan.recv_stderr_ready():
                    chunk = chan.recv_stderr(65536)
                    if len(errbuf) < _STDERR_KEEP:
                        errbuf.extend(chunk)
                try:
                    data = chan.recv(65536)
                except (TimeoutError, socket.timeout):
                    if time.monotonic() - last > timeout:
                        raise CommandTimeout(
                            f"no output from {argv[0]} for {timeout:g}s; command abandoned",
                            where=self.node,
                        ) from None
                    if not transport.is_active():
                        raise ConnectError("connection lost mid-command", where=self.node) from None
                    continue
                if not data:
                    break
                last = time.monotonic()
                pending += data
                if b"\n" in pending:
                    *complete, pending = pending.split(b"\n")
                    for line in complete:
                        yield line.decode("utf-8", "replace")
            if pending:
                yield pending.decode("utf-8", "replace")
            while not chan.exit_status_ready():
                if chan.recv_stderr_ready():
                    chunk = chan.recv_stderr(65536)
                    if len(errbuf) < _STDERR_KEEP:
                        errbuf.extend(chunk)
                if time.monotonic() - last > timeout:
                    raise CommandTimeout(
                        f"{argv[0]} did not exit within {timeout:g}s", where=self.node
                    )
                time.sleep(0.01)
            while chan.recv_stderr_ready():
                errbuf.extend(chan.recv_stderr(65536))
            status[0] = chan.recv_exit_status()
            err[0] = bytes(errbuf[:_STDERR_KEEP]).decode("utf-8", "replace")
        finally:
            chan.close()

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
        if self._jump is not None:
            self._jump.close()
            self._jump = None


def parse_public_key(text: str, *, where: str | None = None) -> paramiko.PKey:
    """A pinned host key 'ssh-ed25519 AAAA...' (as in known_hosts or ssh-keyscan)."""
    import paramiko

    parts = text.split()
    if parts and not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        parts = parts[1:]  # a known_hosts line: "host keytype base64"
    if len(parts) < 2:
        raise HostKeyError(
            f"pinned host_key {text[:40]!r} is not 'KEYTYPE BASE64'", where=where,
            hint="copy the key from the node's /etc/ssh/ssh_host_ed25519_key.pub",
        )
    try:
        return paramiko.PKey.from_type_string(parts[0], __import__("base64").b64decode(parts[1]))
    except Exception as exc:
        raise HostKeyError(f"pinned host_key cannot be read: {exc}", where=where) from None


def fingerprint(key: paramiko.PKey) -> str:
    return str(key.fingerprint)


def fetch_host_key(host: Host) -> paramiko.PKey:
    """Connect far enough to read the node's host key (for `xfleet inventory trust`)."""
    import paramiko

    addr = host.address or host.name
    try:
        sock = socket.create_connection((addr, host.port), timeout=host.connect_timeout)
    except OSError as exc:
        raise ConnectError(f"cannot connect to {addr}:{host.port}: {exc}", where=host.name) from None
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=host.connect_timeout)
        return t.get_remote_server_key()
    except paramiko.SSHException as exc:
        raise ConnectError(f"SSH handshake failed: {exc}", where=host.name) from None
    finally:
        t.close()


def record_trust(store: Path, host: Host, key: paramiko.PKey, *, replace: bool = False) -> bool:
    """Record `key` for `host` in xfleet's trust store (a known_hosts file). Returns True if added."""
    import paramiko

    store.parent.mkdir(parents=True, exist_ok=True)
    keys = paramiko.HostKeys()
    if store.is_file():
        keys.load(str(store))
    addr = host.address or host.name
    name = addr if host.port == 22 else f"[{addr}]:{host.port}"
    existing = keys.lookup(name)
    if existing and key.get_name() in existing:
        if existing[key.get_name()] == key:
            return False
        if not replace:
            raise HostKeyError(
                f"a different {key.get_name()} key is already trusted for {name}",
                where=host.name,
                hint="pass --replace if the node was reinstalled on purpose",
            )
    if name in keys and replace:
        del keys[name]
    keys.add(name, key.get_name(), key)
    keys.save(str(store))
    return True


# ---------------------------------------------------------------------------------------------
# the fleet: one transport per node, bounded parallelism across nodes


@dataclass
class NodeResult(Generic[T]):
    node: str
    value: T | None = None
    error: XfleetError | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Connections:
    """One transport per node, created on first use, reused, closed together."""

    hosts: dict[str, Host]
    trust_store: Path | None = None
    state_dir: Path | None = None
    _open: dict[str, Transport] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, node: str) -> Transport:
        with self._lock:
            if node not in self._open:
                self._open[node] = open_transport(
                    self.hosts[node], trust_store=self.trust_store, state_dir=self.state_dir
                )
            return self._open[node]

    def each(
        self,
        nodes: Iterable[str],
        fn: Callable[[str, Transport], T],
        *,
        parallel: int = 8,
    ) -> list[NodeResult[T]]:
        """Run fn(node, transport) on each node, at most `parallel` at once, never raising."""
        names = list(nodes)

        def one(node: str) -> NodeResult[T]:
            start = time.monotonic()
            try:
                return NodeResult(node, fn(node, self.get(node)), seconds=time.monotonic() - start)
            except XfleetError as exc:
                return NodeResult(node, error=exc, seconds=time.monotonic() - start)
            except Exception as exc:  # a bug or an unexpected library error: keep other nodes going
                return NodeResult(
                    node,
                    error=TransportError(f"{type(exc).__name__}: {exc}", where=node),
                    seconds=time.monotonic() - start,
                )

        if not names:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(names)))) as pool:
            return list(pool.map(one, names))

    def close(self) -> None:
        with self._lock:
            for t in self._open.values():
                t.close()
            self._open.clear()

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_transport(
    host: Host, *, trust_store: Path | None = None, state_dir: Path | None = None
) -> Transport:
    if host.kind == "ssh":
        return SSHTransport(host, trust_store=trust_store)
    if host.kind == "local":
        return LocalTransport(host.name, command_timeout=host.command_timeout)
    if host.kind == "sim":
        from xfleet.sim import SimTransport

        return SimTransport(host, state_dir=state_dir)
    raise UsageError(f"unknown node kind {host.kind!r}", where=host.name)
