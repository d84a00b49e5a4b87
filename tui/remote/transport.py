"""Reaching an agent whose API listens on the remote host's loopback, through the user's ssh.

``ssh://[user@]host[:port][/data/dir]`` agents are reached with the user's own ``ssh`` client,
so their config, keys, agent and jump hosts all apply, and no agent port needs to be open to
the network:

1. ``ssh HOST sh -c '...'`` reads the agent's ``api.json`` (its URL, hence its port) and its
   token (``api-token``, else ``api-token.read``) from its data dir.
2. ``ssh -N -L SOCKET:127.0.0.1:PORT HOST`` forwards a private unix socket (in a 0700 temp
   dir) to that port; :class:`tui.remote.client.AgentClient` talks HTTP over the socket.

The ssh command is ``$VIGIL_SSH_COMMAND`` when set (split like a shell would, as git's
``GIT_SSH_COMMAND``), else ``ssh``. Every step has a timeout, runs as an asyncio subprocess
(never blocking the UI), and the ssh children are stopped by :meth:`SshTunnel.aclose`, at
interpreter exit, and (on Linux) by the kernel if the TUI itself dies.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shlex
import shutil
import signal
import ssl
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from storage.tlstrust import TrustError, client_context
from tui.remote.client import AgentClient, AgentError
from tui.remote.ssh import (
    SSH_COMMAND_ENV,
    RemoteAgent,
    SshAddress,
    parse_remote_output,
    remote_script,
    ssh_command,
)

_STDERR_TAIL = 400


def _ssh_failure(address: SshAddress, stderr: bytes, returncode: int | None) -> AgentError:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    # ssh prints banners and warnings first; the reason is the last line.
    reason = lines[-1][-_STDERR_TAIL:] if lines else f"ssh exited {returncode}"
    return AgentError(f"{address}: {reason}", "unreachable")


def _pinned(remote: RemoteAgent) -> ssl.SSLContext | None:
    """For an agent serving HTTPS, a context trusting exactly the certificate read through ssh
    (the ssh host key vouches for it; the forward's address is in no certificate)."""
    if remote.cert_pem is None:
        return None
    try:
        return client_context(pinned_pem=remote.cert_pem)
    except TrustError as exc:
        raise AgentError(f"{exc.path}: {exc.reason}", "config") from None


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    # Linux: the kernel signals the ssh child if the TUI dies without cleaning up (SIGKILL).
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: S110 - best effort only
        pass


_LIVE: set[asyncio.subprocess.Process] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(ProcessLookupError, OSError):
            os.kill(proc.pid, signal.SIGTERM)


async def _spawn(argv: list[str], stdout: Any, stderr: Any) -> asyncio.subprocess.Process:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    except FileNotFoundError:
        raise AgentError(
            f"cannot run {argv[0]!r}: not found (install openssh-client, or set {SSH_COMMAND_ENV})",
            "config",
        ) from None
    except OSError as exc:
        raise AgentError(f"cannot run {argv[0]!r}: {exc}", "config") from None
    _LIVE.add(proc)
    return proc


def _exists(path: str) -> bool:
    # A stat of a local tmpfs path: not worth a thread.
    return os.path.exists(path)


def _open_for_stderr(path: str) -> BinaryIO:
    return open(path, "wb")


async def _stop(proc: asyncio.subprocess.Process, grace_s: float = 2.0) -> None:
    """Terminate, then kill, then reap one child."""
    try:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
    finally:
        _LIVE.discard(proc)


async def read_remote_agent(
    address: SshAddress,
    *,
    want_token: bool = True,
    options: tuple[str, ...] = (),
    timeout_s: float = 15.0,
) -> RemoteAgent:
    """Read the agent's URL (and token) over ssh: one ``ssh HOST sh -c '...'`` round trip.

    Raises:
        AgentError: ssh failed (the message is ssh's last stderr line), timed out, or the
            agent or its token was not found.
    """
    script = remote_script(address.data_dir, want_token)
    argv = [
        *ssh_command(address, options),
        "-o",
        f"ConnectTimeout={max(1, round(timeout_s))}",
        # The user's LocalForward lines would be set up (and could fail) for a one-off read.
        "-o",
        "ClearAllForwardings=yes",
        "-T",
        "--",
        address.destination,
        # The remote login shell parses this one string; any POSIX-ish shell reads sh -c '…'.
        f"sh -c {shlex.quote(script)}",
    ]
    proc = await _spawn(argv, asyncio.subprocess.PIPE, asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        raise AgentError(f"{address}: ssh did not answer in {timeout_s:g}s", "timeout") from None
    finally:
        await _stop(proc)
    if proc.returncode == 255:
        raise _ssh_failure(address, err, proc.returncode)
    return parse_remote_output(address, out.decode("utf-8", "replace"))


class SshTunnel:
    """One agent reached through ssh: reads its address and token, keeps an ``ssh -N -L``
    forward to its API on a private unix socket, and hands out a client for it.

    :meth:`connect` is idempotent and cheap while the forward runs; after the forward died (or
    :meth:`reset`) it sets everything up again, re-reading ``api.json`` (the agent may have
    restarted on another port). The client keeps the same socket path across reconnects, so a
    screen holding it keeps working.

    Args:
        address: Where the agent is.
        token: A token to use instead of reading one over ssh.
        options: Extra ssh arguments (the fleet file's ``ssh_options``).
        timeout_s: Budget of one API request.
        connect_timeout_s: Budget of each ssh step (reading the agent, opening the forward).
    """

    def __init__(
        self,
        address: SshAddress,
        *,
        token: str | None = None,
        options: tuple[str, ...] = (),
        timeout_s: float = 3.0,
        connect_timeout_s: float = 15.0,
    ) -> None:
        self.address = address
        self.options = options
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.client: AgentClient | None = None
        self.remote: RemoteAgent | None = None
        self._token = token
        self._client_token = ""
        self._dir: str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SshTunnel({self.address})"

    @property
    def socket_path(self) -> str | None:
        """The local end of the forward (exists while the forward is up)."""
        return None if self._dir is None else os.path.join(self._dir, "agent.sock")

    @property
    def is_up(self) -> bool:
        """Whether the forward's ssh runs and its socket exists."""
        path = self.socket_path
        return (
            self._proc is not None
            and self._proc.returncode is None
            and path is not None
            and _exists(path)
        )

    def forward_died(self) -> AgentError | None:
        """Why the forward stopped, if its ssh exited; None while it runs (or never ran)."""
        proc = self._proc
        if proc is None or proc.returncode is None:
            return None
        return _ssh_failure(self.address, self._stderr(), proc.returncode)

    async def connect(self) -> AgentClient:
        """Make sure the forward is up and return the client that uses it.

        Raises:
            AgentError: what failed, fit to show a person (ssh's own reason when ssh failed).
        """
        async with self._lock:
            if self.client is not None and self.is_up:
                return self.client
            await self._stop_forward()
            remote = await read_remote_agent(
                self.address,
                want_token=self._token is None,
                options=self.options,
                timeout_s=self.connect_timeout_s,
            )
            self.remote = remote
            await self._start_forward(remote)
            token = (self._token or remote.token or "").strip()
            socket_path = self.socket_path
            assert socket_path is not None  # set by _start_forward
            # Same token, same socket: keep the client, which screens may hold.
            if self.client is None or token != self._client_token:
                if self.client is not None:
                    await self.client.aclose()
                self.client = AgentClient(
                    remote.url,
                    token,
                    self.timeout_s,
                    unix_socket=socket_path,
                    ssl_context=_pinned(remote),
                )
                self._client_token = token
            return self.client

    async def reset(self) -> None:
        """Stop the forward so the next :meth:`connect` sets it up afresh."""
        async with self._lock:
            await self._stop_forward()

    async def aclose(self) -> None:
        """Close the client, stop ssh, and remove the socket's directory."""
        async with self._lock:
            if self.client is not None:
                await self.client.aclose()
            await self._stop_forward()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def _stderr(self) -> bytes:
        if self._dir is None:
            return b""
        try:
            return Path(self._dir, "ssh.err").read_bytes()[-4096:]
        except OSError:
            return b""

    async def _start_forward(self, remote: RemoteAgent) -> None:
        if self._dir is None:
            # Short, private (0700) and ours: unix socket paths are limited to ~107 bytes.
            self._dir = tempfile.mkdtemp(prefix="vigil-ssh-")
        sock = self.socket_path
        assert sock is not None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock)
        target_host = f"[{remote.host}]" if ":" in remote.host else remote.host
        argv = [
            *ssh_command(self.address, self.options),
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "StreamLocalBindUnlink=yes",
            # Our own connection: a forward added to the user's ControlMaster would outlive us.
            "-o",
            "ControlPath=none",
            "-o",
            f"ConnectTimeout={max(1, round(self.connect_timeout_s))}",
            "-o",
            "ServerAliveInterval=10",
            "-o",
            "ServerAliveCountMax=3",
            "-L",
            f"{sock}:{target_host}:{remote.port}",
            "--",
            self.address.destination,
        ]
        # ssh's stderr goes to a file: a pipe nobody reads could fill and stall the forward.
        with _open_for_stderr(os.path.join(self._dir, "ssh.err")) as err:
            self._proc = await _spawn(argv, asyncio.subprocess.DEVNULL, err)
        proc = self._proc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout_s
        # ssh binds the local socket only once it is logged in and the forward is set up.
        while not _exists(sock):
            if proc.returncode is not None:
                raise _ssh_failure(self.address, self._stderr(), proc.returncode)
            if loop.time() > deadline:
                await self._stop_forward()
                raise AgentError(
                    f"{self.address}: ssh forward not up after {self.connect_timeout_s:g}s",
                    "timeout",
                )
            await asyncio.sleep(0.02)

    async def _stop_forward(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await _stop(proc)
        path = self.socket_path
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
