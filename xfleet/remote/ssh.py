"""SSH transport (paramiko): one persistent connection per node, host keys checked."""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from xfleet.core.errors import (
    CommandTimeout,
    ConnectError,
    HostKeyError,
    TransportError,
)
from xfleet.remote import hostkeys
from xfleet.remote.host import Host as HostCls
from xfleet.remote.paramiko_patch import transport_class
from xfleet.remote.ssh_config import effective_host, parse_proxy_jump
from xfleet.remote.transport import (
    CHUNK,
    Collector,
    LineSplitter,
    Process,
    ProcessGone,
    StderrTail,
    Transport,
    quote_command,
)

if TYPE_CHECKING:
    import paramiko  # lazy: 0.15 s to import, and most commands never connect

    from xfleet.remote.host import Host


USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
_PROCESS_POLL = 0.5  # blocking SSH calls wake up this often to check the connection and deadline
# The SSH window of a started process's channel: how much the node may send before we
# acknowledge, so throughput <= window / round-trip time (8 MiB: 800 MB/s at 10 ms; OpenSSH's
# 2 MiB would cap a 10 ms link at 200 MB/s). The largest packet we accept is 256 KiB rather
# than OpenSSH's 32 KiB: paramiko's cost is mostly per packet, and reading from a node measured
# ~60% faster with it (sshd sends what its buffer holds, up to that size).
PROCESS_WINDOW = 8 << 20
PROCESS_MAX_PACKET = 256 << 10



def _ssh_errors() -> tuple[type[BaseException], ...]:
    """What a paramiko call on a channel raises when its connection breaks under it.

    `Channel.send`, `close`, `shutdown_write` and even `recv` (which may send a window
    adjustment) go through `Transport._send_user_message`: its socket write raises EOFError
    when the connection was reset but paramiko's reader thread has not noticed yet, and it
    raises SSHException when a key exchange does not complete; a closed channel raises OSError.
    """
    import paramiko  # lazy: 0.15 s to import, and most commands never connect

    return (EOFError, OSError, paramiko.SSHException)


def _feed_channel(chan: paramiko.Channel, data: bytes) -> None:
    """Send `data` as the command's stdin, then end-of-file (in its own thread, so a command
    that writes while it reads cannot deadlock against us)."""
    offset = 0
    try:
        while offset < len(data):
            try:
                sent = chan.send(data[offset : offset + CHUNK])
            except TimeoutError:  # remote window full for a while: keep trying while open
                if chan.closed:
                    return
                continue
            if sent <= 0:
                return
            offset += sent
        chan.shutdown_write()
    except (OSError, EOFError):  # channel closed: the command ended or was stopped
        pass
    except Exception:  # paramiko.SSHException and friends: same, nothing left to feed
        pass


class SSHTransport(Transport):
    """One persistent paramiko connection per node, reused for every command.

    Host keys: unknown keys are rejected (paramiko RejectPolicy). Known keys come from the
    host's pinned `host_key` (which overrides any other), its `known_hosts` file, xfleet's trust
    store (written by `xfleet inventory trust`), and ~/.ssh/known_hosts.

    Settings the inventory leaves unset (address, port, user, identity_file, proxy_jump) are
    filled from ~/.ssh/config, as `xfleet inventory show` displays them.

    `connects` counts SSH connections made (handshake and authentication done);
    `connect_attempts` counts every try, including failed ones.
    """

    kind = "ssh"
    data_path = True

    def __init__(
        self,
        host: Host,
        *,
        trust_store: Path | None = None,
        ssh_config: Path | None = None,
        user_known_hosts: Path | None = None,
    ):
        super().__init__(host.name, command_timeout=host.command_timeout)
        self.host = effective_host(host, ssh_config)
        self.trust_store = trust_store
        self.user_known_hosts = (user_known_hosts or USER_KNOWN_HOSTS).expanduser()
        self.connects = 0
        self.connect_attempts = 0
        self._client: paramiko.SSHClient | None = None
        self._jump: SSHTransport | None = None
        self._lock = threading.Lock()

    # -- connection ------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return self.host.address or self.host.name

    def _host_key_name(self) -> str:
        return _known_hosts_name(self.address, self.host.port)

    def _new_client(self) -> paramiko.SSHClient:
        import paramiko  # lazy: 0.15 s to import, and most commands never connect

        client = paramiko.SSHClient()
        decision = self.host_keys()
        for w in decision.warnings:
            _warn_once(w)
        client.set_missing_host_key_policy(_refuse(decision))
        known = client.get_host_keys()
        for key in decision.keys:
            known.add(decision.name, key.get_name(), key)
        return client

    def host_keys(self) -> hostkeys.Decision:
        """The host keys this node may present, from the strongest source that lists it
        (xfleet.remote.hostkeys: pin, inventory known_hosts, trust store, ~/.ssh/known_hosts)."""
        files: list[tuple[str, hostkeys.KnownHostsFile | None]] = []
        if self.host.known_hosts:
            path = Path(self.host.known_hosts).expanduser()
            if not path.is_file():
                raise HostKeyError(
                    f"known_hosts file {path} does not exist",
                    where=self.node,
                    hint="fix 'known_hosts' in the inventory or pin 'host_key' instead",
                )
            files.append((hostkeys.INVENTORY_FILE, _read_known_hosts(path, self.node)))
        for source, p in ((hostkeys.TRUST_STORE, self.trust_store),
                          (hostkeys.USER_FILE, self.user_known_hosts)):
            files.append((source, _read_known_hosts(p, self.node)
                          if p is not None and p.is_file() else None))
        pinned = (parse_public_key(self.host.host_key, where=self.node)
                  if self.host.host_key else None)
        return hostkeys.decide(self._host_key_name(), pinned, files)

    def connect(self) -> paramiko.SSHClient:
        """The open connection, made (with retries) if there is none or it has dropped."""
        with self._lock:
            if self._client is not None:
                t = self._client.get_transport()
                if t is not None and t.is_active():
                    return self._client
                with contextlib.suppress(Exception):
                    self._client.close()
                self._client = None
            self._client = self._connect_with_retry()
            return self._client

    def _connect_with_retry(self) -> paramiko.SSHClient:
        """Connection-level failures (refused, unreachable, no SSH banner) are retried with
        exponential backoff; host-key and authentication failures are not."""
        attempts = max(1, self.host.connect_retries)
        retrying = Retrying(retry=retry_if_exception_type(ConnectError),
                            stop=stop_after_attempt(attempts),
                            wait=wait_exponential(multiplier=0.5, max=5.0),  # 0.5, 1, 2, 4, 5 s
                            reraise=True)
        try:
            return retrying(self._connect_once)
        except ConnectError as exc:
            tries = f"gave up after {attempts} attempts" if attempts > 1 else "1 attempt"
            raise ConnectError(f"{exc.message} ({tries})", where=self.node, hint=exc.hint) from None

    def _connect_once(self) -> paramiko.SSHClient:
        import paramiko  # lazy: 0.15 s to import, and most commands never connect

        self.connect_attempts += 1
        identity_file = self.host.identity_file
        if identity_file and not Path(identity_file).expanduser().is_file():
            # the user's to fix, not the node's: said at once, never retried
            raise TransportError(
                f"identity_file {identity_file} does not exist (or is not a file)",
                where=self.node,
                hint="fix 'identity_file' for this host in the inventory (or ~/.ssh/config), "
                "or remove it to use the SSH agent and ~/.ssh/id_*")
        client = self._new_client()
        sock: Any = None
        if self.host.proxy_jump:
            sock = self._jump_channel()
        identity = self.host.identity_file
        try:
            client.connect(
                hostname=self.address,
                port=self.host.port,
                username=self.host.user,
                key_filename=str(Path(identity).expanduser()) if identity else None,
                timeout=self.host.connect_timeout,
                banner_timeout=self.host.connect_timeout,
                auth_timeout=self.host.connect_timeout,
                sock=sock,
                allow_agent=identity is None,
                look_for_keys=identity is None,
                transport_factory=transport_class(),
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            source = self.host_keys().source
            raise HostKeyError(
                f"host key for {self._host_key_name()} does not match the known key "
                f"(got {exc.key.get_name()} {fingerprint(exc.key)}, expected "
                f"{fingerprint(exc.expected_key)} from {source}); refusing to connect",
                where=self.node,
                hint=_replace_hint(source, self.node),
            ) from None
        except _PolicyRefusal as exc:
            client.close()
            raise HostKeyError(
                exc.message, where=self.node,
                hint=exc.hint or f"check the key out of band, then run 'xfleet inventory "
                f"trust {self.node}' or pin it with 'host_key' in the inventory") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise TransportError(
                f"authentication failed as {self.host.user or 'the current user'}: {exc}",
                where=self.node,
                hint="check 'user' and 'identity_file' for this host",
            ) from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise HostKeyError(
                    f"unknown host key for {self._host_key_name()}; refusing to connect",
                    where=self.node,
                    hint=f"check the key out of band, then run 'xfleet inventory trust "
                    f"{self.node}' or pin it with 'host_key' in the inventory",
                ) from None
            raise ConnectError(f"SSH error from {self._endpoint()}: {exc}", where=self.node,
                               hint="is sshd running on that port?") from None
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            client.close()
            reasons = sorted({_os_reason(e) for e in exc.errors.values()})
            raise ConnectError(
                f"cannot connect to {self._endpoint()}: {'; '.join(reasons)}",
                where=self.node,
                hint="is the node up and sshd listening? check 'address' and 'port'",
            ) from None
        except (OSError, EOFError) as exc:
            client.close()
            raise ConnectError(
                f"cannot connect to {self._endpoint()}: {_os_reason(exc)}",
                where=self.node,
                hint="is the node up and reachable? check 'address' and 'port'",
            ) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
            if isinstance(transport.sock, socket.socket):
                # Without it, Nagle and delayed ACKs add ~40 ms to opening every channel.
                transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connects += 1
        return client

    def _endpoint(self) -> str:
        via = f" via {self.host.proxy_jump}" if self.host.proxy_jump else ""
        return f"{self.address}:{self.host.port}{via}"

    def _jump_channel(self) -> Any:
        """A direct-tcpip channel to this node through its jump host (reused across attempts)."""

        spec = self.host.proxy_jump or ""
        if self._jump is None:

            user, jhost, jport = parse_proxy_jump(spec, where=self.node)
            jump = HostCls(
                name=f"{spec} (jump host of {self.node})",
                address=jhost,
                port=jport,
                user=user or self.host.user,
                identity_file=self.host.identity_file,
                known_hosts=self.host.known_hosts,  # the jump host's key may be listed there
                connect_timeout=self.host.connect_timeout,
                connect_retries=1,  # this node's own retries cover the jump too
            )
            self._jump = SSHTransport(
                jump,
                trust_store=self.trust_store,
                ssh_config=Path(os.devnull),  # the jump spec is already explicit
                user_known_hosts=self.user_known_hosts,
            )
        client = self._jump.connect()
        t = client.get_transport()
        if t is None or not t.is_active():
            raise ConnectError(f"jump host {spec} closed the connection", where=self.node)
        try:
            return t.open_channel(
                "direct-tcpip",
                (self.address, self.host.port),
                ("127.0.0.1", 0),
                timeout=self.host.connect_timeout,
            )
        except Exception as exc:  # paramiko raises ChannelException / SSHException
            raise ConnectError(
                f"jump host {spec} could not reach {self.address}:{self.host.port}: {exc}",
                where=self.node,
                hint="does the jump host allow TCP forwarding (AllowTcpForwarding)?",
            ) from None

    def _open_channel(
        self, *, window_size: int | None = None, max_packet_size: int | None = None
    ) -> tuple[paramiko.Transport, paramiko.Channel]:
        """A new session channel (paramiko's default window and packet size unless given). If
        the connection turns out to be dead, reconnect once: no command has run yet, so this is
        safe."""
        for attempt in (1, 2):
            client = self.connect()
            transport = client.get_transport()
            try:
                if transport is None:
                    raise EOFError("no transport")
                return transport, transport.open_session(
                    window_size=window_size,
                    max_packet_size=max_packet_size,
                    timeout=self.host.connect_timeout,
                )
            except Exception as exc:
                with self._lock:
                    if self._client is client:
                        with contextlib.suppress(Exception):
                            client.close()
                        self._client = None
                if attempt == 2:
                    raise ConnectError(
                        f"cannot open a channel: {exc or type(exc).__name__}", where=self.node
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- commands --------------------------------------------------------------------------
    def _open_process(self, argv: list[str], timeout: float, collect_stdout: bool) -> Process:
        return _SSHProcess(self, argv, timeout, collect_stdout)

    def _stream(
        self,
        argv: list[str],
        timeout: float,
        stdin: bytes | None,
        status: list[int],
        err: list[str],
    ) -> Iterator[str]:
        transport, chan = self._open_channel()
        lines = LineSplitter()
        errbuf = StderrTail()
        sel = selectors.DefaultSelector()
        try:
            chan.settimeout(1.0)
            try:
                chan.exec_command(quote_command(argv))
            except Exception as exc:  # SSHException "Channel closed.", EOFError...: not started
                raise ConnectError(
                    f"could not start {argv[0]}: {exc or type(exc).__name__}", where=self.node
                ) from None
            if stdin is not None:
                threading.Thread(target=_feed_channel, args=(chan, stdin), daemon=True).start()
            sel.register(chan.fileno(), selectors.EVENT_READ)
            last = time.monotonic()
            while True:
                got = False
                while chan.recv_stderr_ready():
                    errbuf.add(self._chan_recv(chan.recv_stderr, argv))
                    got = True
                if chan.recv_ready():
                    data = self._chan_recv(chan.recv, argv)
                    if data:
                        last = time.monotonic()
                        yield from lines.feed(data)
                        continue
                if chan.eof_received or chan.closed:
                    if not chan.recv_ready() and not chan.recv_stderr_ready():
                        break  # SSH end-of-file covers stdout and stderr
                    continue
                now = time.monotonic()
                if got:
                    last = now
                    continue
                if now - last > timeout:
                    raise CommandTimeout(
                        f"no output from {argv[0]} for {timeout:g}s; command abandoned",
                        where=self.node,
                    )
                if not transport.is_active():
                    # Not a ConnectError: the command ran, so it must not be retried blindly.
                    raise TransportError(
                        f"connection lost while running {argv[0]}; it may or may not have "
                        "completed",
                        where=self.node,
                    )
                sel.select(min(timeout - (now - last), 1.0))
            yield from lines.tail()
            while not chan.status_event.wait(min(max(timeout - (time.monotonic() - last), 0), 1)):
                if time.monotonic() - last > timeout:
                    raise CommandTimeout(
                        f"{argv[0]} closed its output but did not exit within {timeout:g}s",
                        where=self.node,
                    )
                if not transport.is_active():
                    raise TransportError(f"connection lost while {argv[0]} was exiting",
                                         where=self.node)
            while chan.recv_stderr_ready():
                errbuf.add(self._chan_recv(chan.recv_stderr, argv))
            status[0] = chan.recv_exit_status()
            if status[0] == -1 and not transport.is_active():
                raise TransportError(
                    f"connection lost while running {argv[0]}; it may or may not have completed",
                    where=self.node,
                )
            err[0] = errbuf.text()
        finally:
            sel.close()
            with contextlib.suppress(Exception):  # best effort: the connection may be gone
                chan.close()

    def _chan_recv(self, recv: Callable[[int], bytes], argv: list[str]) -> bytes:
        """recv(CHUNK) of a command's channel; a broken connection is a TransportError (the
        command ran, so not a ConnectError: it must not be retried blindly)."""
        try:
            return recv(CHUNK)
        except TimeoutError:  # recv is only called when data is ready: nothing lost
            return b""
        except _ssh_errors() as exc:
            raise TransportError(
                f"connection lost while running {argv[0]} ({exc or type(exc).__name__}); it "
                "may or may not have completed",
                where=self.node,
            ) from None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                with contextlib.suppress(Exception):  # a dead connection may fail to close
                    self._client.close()
                self._client = None
        if self._jump is not None:
            self._jump.close()
            self._jump = None


class _SSHProcess(Process):
    """A command on its own channel of the node's shared SSH connection.

    `kill` asks sshd to SIGKILL the command (an SSH "signal" request: honoured by OpenSSH 7.9+
    for non-root logins only) and closes the channel. Closing the channel does not kill the
    remote process by itself: sshd closes its pipes, so a command that writes (`zfs send`) dies
    of SIGPIPE on its next write and one that reads (`zfs receive`) sees end-of-file in the
    middle of a stream and aborts it (a stream is only committed once its end record arrived);
    a silent command (`sleep`) runs to its end.
    """

    def __init__(self, owner: SSHTransport, argv: list[str], timeout: float,
                 collect_stdout: bool):
        super().__init__(owner.node, argv, timeout, collect_stdout)
        self._owner = owner
        self._killed_running = False
        self._transport, chan = owner._open_channel(
            window_size=PROCESS_WINDOW, max_packet_size=PROCESS_MAX_PACKET
        )
        self._chan = chan
        try:
            chan.settimeout(_PROCESS_POLL)
            chan.exec_command(quote_command(argv))
        except Exception as exc:  # SSHException "Channel closed.", EOFError...: not started
            with contextlib.suppress(Exception):
                chan.close()
            raise ConnectError(
                f"could not start {argv[0]}: {exc or type(exc).__name__}", where=self.node
            ) from None
        self._stderr = Collector(lambda: self._recv(chan.recv_stderr), f"xfleet-stderr-{argv[0]}")
        if collect_stdout:
            self._stdout = Collector(lambda: self._recv(chan.recv), f"xfleet-stdout-{argv[0]}")

    def _recv(self, recv: Callable[[int], bytes], n: int = CHUNK) -> bytes:
        """recv(n) that waits for data or the end of the stream (for the collectors)."""
        while True:
            try:
                return recv(n)
            except TimeoutError:
                if self._chan.closed or not self._transport.is_active():
                    return b""

    def _lost(self) -> TransportError:
        return TransportError(
            f"connection lost while running {self.name}; it may or may not have completed",
            where=self.node,
        )

    def _broken(self, exc: BaseException) -> TransportError:
        """The error for a paramiko call on this channel that raised `exc` (see _ssh_errors).

        EOFError means the socket write itself failed: the connection is gone even if
        paramiko's reader thread has not noticed yet, and the SSH stream is unusable (a packet
        may be half written), so the connection is closed here: every other channel on it
        sees the loss at once and the node's next command reconnects. Otherwise the
        connection decides: lost if it is not active any more, else the command is gone.
        """
        if isinstance(exc, EOFError) and not self.killed:
            with contextlib.suppress(Exception):
                self._transport.close()
            return self._lost()
        if not self._transport.is_active() and not self.killed:
            return self._lost()
        return self._gone()

    def read(self, n: int = 1 << 20) -> bytes:
        self._check_readable()
        chan = self._chan
        deadline = time.monotonic() + self.timeout
        while not self.killed:  # what is still buffered is not the command's output any more
            try:
                data = chan.recv(n)
            except TimeoutError:
                if self.killed:
                    return b""
                if not self._transport.is_active():
                    raise self._lost() from None
                if time.monotonic() > deadline:
                    raise CommandTimeout(
                        f"no output from {self.name} for {self.timeout:g}s", where=self.node
                    ) from None
                continue
            except _ssh_errors() as exc:  # recv may send a window adjustment and fail
                if self.killed:
                    return b""
                self._broken(exc)  # closes a connection whose socket failed
                raise self._lost() from None
            if data:
                self._owner.received += len(data)
                return data
            if not chan.eof_received and not self.killed:
                raise self._lost()  # closed without end-of-file: the connection went away
            return b""
        return b""

    def write(self, data: bytes | memoryview) -> None:
        chan = self._chan
        view = memoryview(data).cast("B")
        deadline = time.monotonic() + self.timeout
        while view:
            if chan.exit_status_ready() or self.killed:
                raise self._gone()
            try:
                sent = chan.send(view)  # type: ignore[arg-type]  # paramiko takes buffers
            except TimeoutError:  # the node's window stayed full
                if not self._transport.is_active():
                    raise self._lost() from None
                if time.monotonic() > deadline:
                    raise CommandTimeout(
                        f"{self.name} took no input for {self.timeout:g}s", where=self.node
                    ) from None
                continue
            except _ssh_errors() as exc:  # "Socket is closed", a reset connection (EOFError)
                raise self._broken(exc) from None
            if sent <= 0:  # end-of-file was sent or the channel closed
                raise self._gone()
            view = view[sent:]
            deadline = time.monotonic() + self.timeout

    def _gone(self) -> ProcessGone:
        status = self._chan.exit_status if self._chan.exit_status_ready() else None
        if self.killed:
            how = "was killed"
        elif status is not None:
            how = f"exited with status {status}"
        else:
            how = "closed its input"
        self._stderr_settle()
        return ProcessGone(f"{self.name} {how} before taking all of its input",
                           where=self.node, exit_status=status, stderr=self.stderr())

    def _stderr_settle(self) -> None:
        if self._stderr is not None and self._chan.closed:
            self._stderr.join(1.0)

    def close_stdin(self) -> None:
        with contextlib.suppress(Exception):  # closed already: nothing to end
            self._chan.shutdown_write()

    def poll(self) -> int | None:
        if self._status is not None:
            return self._status
        if self._killed_running:
            return -1
        if self._chan.exit_status_ready() or self._chan.closed:
            return self._chan.exit_status if self._chan.exit_status_ready() else -1
        return None

    def _wait(self, timeout: float) -> int:
        chan = self._chan
        deadline = time.monotonic() + timeout
        while not chan.status_event.wait(max(min(deadline - time.monotonic(), 1.0), 0.0)):
            if not self._transport.is_active():
                raise self._lost()
            if time.monotonic() >= deadline:
                raise CommandTimeout(f"{self.name} did not exit within {timeout:g}s",
                                     where=self.node)
        if self._killed_running:
            return -1
        status = chan.recv_exit_status()
        if status == -1 and not self.killed and not self._transport.is_active():
            raise self._lost()
        return status

    def kill(self) -> None:
        self.killed = True
        chan = self._chan
        if not chan.exit_status_ready():
            # Killed before it exited: its status is -1, whatever sshd reports later (a shell
            # whose child died of SIGPIPE may still exit 0).
            self._killed_running = True
        if not chan.closed and not chan.exit_status_ready():
            with contextlib.suppress(Exception):  # best effort: refused for root logins
                from paramiko.common import cMSG_CHANNEL_REQUEST  # lazy: as paramiko
                from paramiko.message import Message  # lazy: as paramiko

                # RFC 4254 6.9; paramiko has no public call for it
                m = Message()
                m.add_byte(cMSG_CHANNEL_REQUEST)
                m.add_int(chan.remote_chanid)
                m.add_string("signal")
                m.add_boolean(False)
                m.add_string("KILL")
                sender: Any = self._transport
                sender._send_user_message(m)
        with contextlib.suppress(Exception):  # best effort: the connection may be gone
            chan.close()

    def _release(self) -> None:
        with contextlib.suppress(Exception):
            self._chan.close()


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    return str(exc) or type(exc).__name__


def _known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def _replace_hint(source: str | None, node: str) -> str:
    """What to do about a node whose key changed, by the source that listed the old one."""
    if source == hostkeys.PINNED:
        return "if the node was reinstalled on purpose, update 'host_key' in the inventory"
    if source == hostkeys.INVENTORY_FILE:
        return ("if the node was reinstalled on purpose, update the inventory's known_hosts "
                "file")
    if source == hostkeys.USER_FILE:
        return (f"if the node was reinstalled on purpose, remove its line from "
                f"~/.ssh/known_hosts (ssh-keygen -R) or run 'xfleet inventory trust {node}' "
                "(the trust store outranks ~/.ssh/known_hosts)")
    return (f"if the node was reinstalled on purpose, run 'xfleet inventory trust {node} "
            "--replace'")


def _read_known_hosts(path: Path, where: str) -> hostkeys.KnownHostsFile:
    try:
        return hostkeys.read_known_hosts(path)
    except HostKeyError as exc:
        raise HostKeyError(exc.message, where=where, hint=exc.hint) from None


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(message: str) -> None:
    """A known_hosts line xfleet skipped: said once per process, not once per connection."""
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    logging.getLogger("xfleet.remote.hostkeys").warning("warning: %s", message)


def _refuse(decision: hostkeys.Decision) -> paramiko.MissingHostKeyPolicy:
    """paramiko's missing-host-key policy: refuse, saying why (revoked, or not the key the
    deciding source lists, or unknown), as a _PolicyRefusal the caller turns into a
    HostKeyError."""
    import paramiko  # lazy: 0.15 s to import, and most commands never connect

    class Refuse(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                             key: paramiko.PKey) -> None:
            d = decision
            if d.is_revoked(key):
                raise _PolicyRefusal(
                    f"host key for {d.name} ({key.get_name()} {fingerprint(key)}) is marked "
                    "@revoked in a known_hosts file; refusing to connect",
                    "the node presents a revoked key: find out why before trusting anything")
            if d.source is not None:
                raise _PolicyRefusal(
                    f"host key for {d.name} ({key.get_name()} {fingerprint(key)}) is not "
                    f"one {d.source} lists; refusing to connect (a weaker source cannot "
                    "override it)",
                    f"if the node was reinstalled on purpose, update {d.source}")
            raise _PolicyRefusal(f"unknown host key for {d.name}; refusing to connect", None)

    return Refuse()


class _PolicyRefusal(Exception):
    def __init__(self, message: str, hint: str | None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def parse_public_key(text: str, *, where: str | None = None) -> paramiko.PKey:
    """A pinned host key 'ssh-ed25519 AAAA...' (as in a .pub file, known_hosts or ssh-keyscan)."""
    parts = text.split()
    if parts and not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        parts = parts[1:]  # a known_hosts line: "host keytype base64"
    if len(parts) < 2:
        raise HostKeyError(
            f"pinned host_key {text[:40]!r} is not 'KEYTYPE BASE64'",
            where=where,
            hint="copy the key from the node's /etc/ssh/ssh_host_ed25519_key.pub",
        )
    try:
        return hostkeys.parse_key(parts[0], parts[1])
    except ValueError as exc:
        raise HostKeyError(
            f"pinned host_key cannot be read: {exc}",
            where=where,
            hint="copy the key from the node's /etc/ssh/ssh_host_ed25519_key.pub",
        ) from None


def fingerprint(key: paramiko.PKey) -> str:
    """'SHA256:...' as `ssh-keygen -lf` prints it."""
    return str(key.fingerprint)


def fetch_host_key(
    host: Host, *, trust_store: Path | None = None, ssh_config: Path | None = None
) -> paramiko.PKey:
    """Connect far enough to read the node's host key (for `xfleet inventory trust`).

    Nothing is authenticated and nothing is trusted here: the caller shows the fingerprint and
    records the key only once the user confirmed it. A node behind `proxy_jump` is reached
    through its jump host, whose own key must already be known (`trust_store` is consulted).
    """
    import paramiko  # lazy: 0.15 s to import, and most commands never connect

    via = SSHTransport(host, trust_store=trust_store, ssh_config=ssh_config)
    h = via.host
    addr = via.address
    sock: Any
    try:
        if h.proxy_jump:
            sock = via._jump_channel()
        else:
            try:
                sock = socket.create_connection((addr, h.port), timeout=h.connect_timeout)
            except OSError as exc:
                raise ConnectError(
                    f"cannot connect to {addr}:{h.port}: {_os_reason(exc)}",
                    where=h.name,
                    hint="is the node up and sshd listening? check 'address' and 'port'",
                ) from None
        t = paramiko.Transport(sock)
        try:
            t.banner_timeout = h.connect_timeout
            t.start_client(timeout=h.connect_timeout)
            return t.get_remote_server_key()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectError(
                f"SSH handshake with {via._endpoint()} failed: {exc or type(exc).__name__}",
                where=h.name,
            ) from None
        finally:
            with contextlib.suppress(Exception):
                t.close()
    finally:
        via.close()


def record_trust(
    store: Path,
    host: Host,
    key: paramiko.PKey,
    *,
    replace: bool = False,
    ssh_config: Path | None = None,
) -> bool:
    """Record `key` for `host` in xfleet's trust store (a known_hosts file).

    Returns True if the key was added, False if it was already trusted. A different key of the
    same type already trusted for the host is an error unless `replace`. The key is recorded
    under the address and port SSHTransport connects to (after ~/.ssh/config).
    """
    host = effective_host(host, ssh_config)
    store.parent.mkdir(parents=True, exist_ok=True)
    name = _known_hosts_name(host.address or host.name, host.port)
    known = _read_known_hosts(store, host.name) if store.is_file() else None
    mine = [e for e in known.entries if e.matches(name)] if known is not None else []
    if any(e.key.get_name() == key.get_name() and e.key.asbytes() == key.asbytes()
           for e in mine):
        if not replace or len(mine) == 1:
            return False
    else:
        same_type = [e for e in mine if e.key.get_name() == key.get_name()]
        if same_type and not replace:
            raise HostKeyError(
                f"a different {key.get_name()} key ({fingerprint(same_type[0].key)}) "
                f"is already trusted for {name}",
                where=host.name,
                hint="pass --replace if the node was reinstalled on purpose",
            )
    # every other line stays as written (comments, other hosts, @revoked markers); with
    # `replace`, every line for this host goes, whatever its key type
    drop = {e.where for e in mine} if replace else set()
    lines = store.read_text(errors="replace").splitlines() if store.is_file() else []
    kept = [ln for i, ln in enumerate(lines, 1) if f"{store}:{i}" not in drop]
    kept.append(f"{name} {key.get_name()} {key.get_base64()}")
    tmp = store.with_name(store.name + ".tmp")
    tmp.write_text("\n".join(kept) + "\n")
    os.replace(tmp, store)
    return True
