"""A real OpenSSH server on loopback for tests: throwaway host and user keys, our own config.

``sshd`` cannot listen on port 0 and report the port, so a free port is found by binding port
0 and closing the socket before sshd starts; another process could take the port in between
(a small race, vanishingly rare on a test machine). sshd then fails to bind and exits, which
:func:`running_sshd` reports with sshd's own log rather than hanging.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import wait_for

SSHD = "/usr/sbin/sshd"
HOST_ALIAS = "vigil-test-host"
"""The ``Host`` the client config defines, so tests use ``ssh://vigil-test-host`` like a user
would use a name from their ``~/.ssh/config``."""


def sshd_missing() -> str | None:
    """Why a real sshd test cannot run here, or None."""
    if not os.path.exists(SSHD):
        return f"{SSHD} not installed (Debian's openssh-server; scripts/debian-deps.sh)"
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "ssh / ssh-keygen not installed (Debian's openssh-client)"
    return None


@dataclass
class Sshd:
    """A running sshd and the client config that reaches it."""

    port: int
    user: str
    client_config: Path
    log_path: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vigil-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )


@contextmanager
def running_sshd(tmp: Path) -> Iterator[Sshd]:
    """Start ``sshd -D -e`` on 127.0.0.1 for the current user; stop it afterwards."""
    d = tmp / "sshd"
    d.mkdir(mode=0o700)
    host_key, user_key = d / "host_ed25519", d / "id_ed25519"
    _keygen(host_key)
    _keygen(user_key)
    (d / "authorized_keys").write_text((d / "id_ed25519.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    user = getpass.getuser()
    if os.geteuid() == 0:
        # Privilege separation needs its empty directory when sshd runs as root.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    port = _free_port()
    config = d / "sshd_config"
    config.write_text(
        f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers {user}
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
X11Forwarding no
LogLevel DEBUG1
"""
    )
    client = d / "ssh_config"
    host_pub = (d / "host_ed25519.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    client.write_text(
        f"""
Host {HOST_ALIAS}
    HostName 127.0.0.1
    Port {port}
    User {user}
    IdentityFile {user_key}
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile {d}/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    # The post-quantum default costs ~0.5s of CPU per connection on a busy CI machine.
    KexAlgorithms curve25519-sha256
    LogLevel ERROR
"""
    )
    log_path = d / "sshd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"sshd exited {proc.returncode}:\n{log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_for(listening, 10, what="sshd to listen")
        yield Sshd(port, user, client, log_path, proc)
    finally:
        if proc.poll() is None:
            # The whole group: sshd's per-connection children too.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
