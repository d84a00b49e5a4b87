"""``vigil agent install-service``: a hardened systemd unit for the agent, and its data dir.

The unit is ``Type=notify`` (the agent says READY=1 once its API is bound and its first
collection stored, see ``agent.runtime.sdnotify``), with a watchdog, and
``KillMode=process``: a stop
or restart signals the agent alone, so the model servers it supervises keep serving and the
next agent adopts them (``[agent] on_exit = "keep"``).

Hardening follows systemd.exec(5), kept to what does not break the agent's job:
``ProtectSystem=strict`` with the data dir (and any ``--read-write`` path) writable,
``ProtectHome=read-only`` (model files often live in home directories), ``PrivateTmp``, no new
privileges, kernel tunables/modules/logs/clock protected. Devices are *not* made private: NVML
needs ``/dev/nvidia*``. The capability bounding set is what a root agent needs to run model
servers as other users and to stop them (``CAP_SETUID``, ``CAP_SETGID``, ``CAP_KILL``), and to
read other users' processes (``CAP_SYS_PTRACE``, ``CAP_DAC_READ_SEARCH``); an agent running as
a user gets none. Supervised children inherit this sandbox: a model server that writes outside
the data dir (a cache under /var/cache, say) needs that path given with ``--read-write``.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from agent.serve.tokens import load_or_create

UNIT_NAME = "vigil-agent.service"
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
WATCHDOG_SEC = 30
ROOT_CAPABILITIES = "CAP_KILL CAP_SETUID CAP_SETGID CAP_SYS_PTRACE CAP_DAC_READ_SEARCH"


class ServiceError(Exception):
    """The unit cannot be installed as asked; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """Everything the unit depends on."""

    config: Path
    data_dir: Path
    user: str | None = None
    exec_start: tuple[str, ...] = ()
    read_write: tuple[Path, ...] = ()


def vigil_command() -> tuple[str, ...]:
    """How systemd should start this installation of Vigil (absolute paths only)."""
    script = Path(sys.executable).parent / "vigil"
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),)
    found = shutil.which("vigil")
    if found:
        return (str(Path(found).resolve()),)
    return (sys.executable, "-m", "agent.cli")


def render_unit(spec: ServiceSpec) -> str:
    """The unit file's text."""
    argv = [*(spec.exec_start or vigil_command()), "agent", "run", "--config", str(spec.config)]
    rw = " ".join(shlex.quote(str(p)) for p in (spec.data_dir, *spec.read_write))
    as_root = spec.user in (None, "root")
    lines = [
        "# Written by `vigil agent install-service`; rerun it rather than editing by hand.",
        "[Unit]",
        "Description=Vigil agent: probes and supervises the model servers of this host",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={shlex.join(argv)}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=2s",
        f"WatchdogSec={WATCHDOG_SEC}s",
        "TimeoutStartSec=90s",
        "TimeoutStopSec=30s",
        "# Signal only the agent on stop/restart: supervised model servers keep running and",
        "# the next agent adopts them (see on_exit in the configuration reference).",
        "KillMode=process",
    ]
    if not as_root:
        lines += [f"User={spec.user}", f"Group={_primary_group(spec.user or '')}"]
    lines += [
        "UMask=0027",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={rw}",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictSUIDSGID=yes",
        "RestrictRealtime=yes",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        f"CapabilityBoundingSet={ROOT_CAPABILITIES if as_root else ''}",
        "AmbientCapabilities=",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def _primary_group(user: str) -> str:
    import grp

    entry = pwd.getpwnam(user)
    try:
        return grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        return str(entry.pw_gid)


def check_user(user: str | None) -> None:
    """Refuse a user that does not exist."""
    if user is None:
        return
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise ServiceError(
            f"--user {user!r}: no such user on this host (create it first)"
        ) from None


def prepare_data_dir(data_dir: Path, user: str | None) -> list[str]:
    """Create the data dir (0750) and the API tokens (0600), owned by ``user``; what was done."""
    done = []
    if not data_dir.exists():
        done.append(f"created {data_dir}")
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o750)  # noqa: S103 - the group (operators) may read status and logs
    load_or_create(data_dir)
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (data_dir, *sorted(data_dir.glob("api-token*"))):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        done.append(f"{data_dir} and its tokens owned by {user}")
    done.append(f"tokens in {data_dir} (mode 0600)")
    return done


def install(spec: ServiceSpec, unit_dir: Path = DEFAULT_UNIT_DIR) -> list[str]:
    """Write the unit, prepare the data dir, reload systemd when it runs; what was done."""
    check_user(spec.user)
    done = prepare_data_dir(spec.data_dir, spec.user)
    unit_dir.mkdir(parents=True, exist_ok=True)
    path = unit_dir / UNIT_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render_unit(spec), encoding="utf-8")
    os.chmod(tmp, 0o644)
    tmp.replace(path)
    done.append(f"wrote {path}")
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], check=False, timeout=60)  # noqa: S607
        done.append("systemctl daemon-reload")
    done.append(f"next: systemctl enable --now {UNIT_NAME}")
    return done
