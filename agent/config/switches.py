"""Each traffic switch's settings: frozen dataclasses, plain data with no I/O and no imports.

A blue-green deploy moves a model's traffic through a front proxy: nginx
(``[model.deploy.nginx]``) or a command the operator gives (``[model.deploy.switch_command]``).
The config reads those tables into these records; the switches themselves
(:class:`agent.deploy.nginx.NginxSwitch`, :class:`agent.deploy.commandswitch.CommandSwitch`,
which run nginx and read the process table) check them again when they are built and refuse a
bad one with a ValueError that names the field. They live in the config room, below the deploy
room, as the alerting channels' settings do; :mod:`agent.deploy.proxysettings` names them for
the deploy room.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CONFIRM_HEADER = "X-Vigil-Upstream"
"""The response header the operator's nginx sets to ``$upstream_addr`` on the confirm URL."""

SWITCH_PLACEHOLDERS = frozenset({"address", "host", "port", "model", "previous"})
"""What a switch command's arguments may name: ``{address}`` and so on."""
CHECK_PLACEHOLDERS = frozenset({"model"})
"""What a switch command's check may name (no address is known before a deploy)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfirmSettings:
    """How a switch confirms new requests reach the new address, through the proxy.

    ``url`` is requested with a new connection each time until ``streak`` answers in a row are
    2xx and name the new address in ``header`` (for nginx: ``add_header X-Vigil-Upstream
    $upstream_addr always;`` on that location), within ``timeout_s``.
    """

    url: str | None = None
    header: str = DEFAULT_CONFIRM_HEADER
    streak: int = 3
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class NginxSettings:
    """Where the Vigil-owned includes live and how to test, reload and watch nginx.

    Every nginx command gets ``-p prefix`` and ``-c conf`` when set, then ``extra_args`` (an
    ``-e error.log`` or a ``-g`` directive): the same nginx the operator runs. ``test_argv``
    and ``reload_argv`` replace the built commands entirely (``["sudo", "-n", "nginx", "-t"]``
    for an agent that is not root); ``dump_argv`` is the ``nginx -T`` the preflight reads to
    see the include is loaded.

    The reload is ``reload_argv`` when given; otherwise a SIGHUP to the master whose pid is in
    ``pid_file`` when that is set; otherwise ``nginx -s reload``. With ``pid_file`` the switch
    also confirms through the master's worker generations (new workers up, old ones no longer
    accepting); ``confirm.url`` confirms through the proxy. At least one of the two is needed.
    """

    include_dir: str = "/etc/nginx/vigil"
    nginx: str = "nginx"
    conf: str | None = None
    prefix: str | None = None
    extra_args: tuple[str, ...] = ()
    test_argv: tuple[str, ...] | None = None
    reload_argv: tuple[str, ...] | None = None
    dump_argv: tuple[str, ...] | None = None
    pid_file: str | None = None
    confirm: ConfirmSettings = ConfirmSettings()
    command_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSwitchSettings:
    """A switch command for HAProxy, Envoy, Traefik or anything else.

    ``argv`` is run without a shell; in each argument ``{address}``, ``{host}``, ``{port}``,
    ``{model}`` and ``{previous}`` (the address switched from, or empty) are replaced. It must
    exit 0 within ``timeout_s``. ``check_argv`` is the preflight's check (``haproxy -c -f
    ...``); before a deploy no address is known yet, so its only placeholder is ``{model}``.
    ``state_dir`` holds the address each model was last switched to, for ``current``; the
    config leaves it empty and the agent fills in ``<data_dir>/switch``.
    """

    argv: tuple[str, ...]
    state_dir: str = ""
    timeout_s: float = 30.0
    check_argv: tuple[str, ...] | None = None
    confirm: ConfirmSettings = ConfirmSettings()
