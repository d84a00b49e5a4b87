"""The config of a blue-green model: its ports, its placeholders, its traffic switch.

A blue-green deploy starts the new version as a second copy of the model's ``[[process]]`` on
the spare one of two ports, gates it there, and moves the traffic through a front proxy. The
copies differ only in two placeholders, filled in per copy when it is started:

- ``{port}``, the copy's port: in the process's ``command`` (required: the command line then
  says which copy a running process is, so an agent that restarts never adopts one copy as the
  other) and, if the server wants it so, in its ``env`` (``PORT = "{port}"``); and in the
  model's ``url``, so the model's probe reaches the copy that serves (or, during a bake, the
  new one);
- ``{artifact}``, the path of the version the copy runs, in ``command`` or ``env``.

Checked here, with errors that name the field: two different ports (``ports``, or
``spare_port`` beside the process's own ``port``), the placeholders where they must be, exactly
one switch (``[model.deploy.nginx]`` or ``[model.deploy.switch_command]``) with what it needs,
and no port of a blue-green model used by another process, another model's copies or the
agent's API.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping

from agent.config.records import AgentConfig, DeployConfig, ModelConfig, ProcessConfig
from agent.config.schema import NginxTable, SwitchCommandTable
from agent.config.switches import (
    CHECK_PLACEHOLDERS,
    SWITCH_PLACEHOLDERS,
    CommandSwitchSettings,
    ConfirmSettings,
    NginxSettings,
)
from storage.tomlschema import Invalid

__all__ = [
    "ARTIFACT",
    "PORT",
    "check_blue_green",
    "check_blue_green_ports",
    "command_settings",
    "nginx_settings",
]

PORT = "{port}"
ARTIFACT = "{artifact}"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")

Fail = Callable[[str, str], Invalid]
"""Makes the error about a key of the model's ``[model.deploy]``."""


def nginx_settings(t: NginxTable) -> NginxSettings:
    """``[model.deploy.nginx]`` as the nginx switch's settings."""
    return NginxSettings(
        include_dir=t.include_dir,
        nginx=t.nginx,
        conf=t.conf,
        prefix=t.prefix,
        extra_args=tuple(t.extra_args),
        test_argv=tuple(t.test_argv) if t.test_argv else None,
        reload_argv=tuple(t.reload_argv) if t.reload_argv else None,
        dump_argv=tuple(t.dump_argv) if t.dump_argv else None,
        pid_file=t.pid_file,
        confirm=ConfirmSettings(
            url=t.confirm_url,
            header=t.confirm_header,
            streak=t.confirm_streak,
            timeout_s=t.confirm_timeout,
        ),
        command_timeout_s=t.command_timeout,
    )


def command_settings(t: SwitchCommandTable) -> CommandSwitchSettings:
    """``[model.deploy.switch_command]`` as the command switch's settings (its ``state_dir``
    is the agent's to fill in: ``<data_dir>/switch``)."""
    return CommandSwitchSettings(
        argv=tuple(t.argv),
        timeout_s=t.timeout,
        check_argv=tuple(t.check_argv) if t.check_argv else None,
        confirm=ConfirmSettings(
            url=t.confirm_url,
            header=t.confirm_header,
            streak=t.confirm_streak,
            timeout_s=t.confirm_timeout,
        ),
    )


def _uses(texts: tuple[str, ...] | Mapping[str, str], placeholder: str) -> bool:
    values = texts.values() if isinstance(texts, Mapping) else texts
    return any(placeholder in v for v in values)


def check_blue_green(m: ModelConfig, i: int, processes: Mapping[str, ProcessConfig]) -> ModelConfig:
    """The model with its blue-green ports settled (``spare_port`` made into ``ports``), or
    :class:`Invalid` naming what is wrong. A model that is not blue-green may not use what only
    a blue-green deploy fills in."""
    d = m.deploy

    def fail(key: str, reason: str) -> Invalid:
        return Invalid(("model", i, "deploy", key), reason)

    if d is None or not d.blue_green:
        if PORT in m.url:
            raise Invalid(
                ("model", i, "url"),
                f"{PORT} is filled in only for a blue-green model ([model.deploy] strategy = "
                f'"blue-green"): expected the server\'s address, got {m.url!r}',
            )
        if d is not None:
            for key, given in (
                ("ports", d.ports),
                ("spare_port", d.spare_port),
                ("nginx", d.nginx),
                ("switch_command", d.switch_command),
            ):
                if given:
                    raise fail(key, 'applies to strategy = "blue-green" only')
        return m
    if d.link is None:
        raise fail(
            "link",
            "a blue-green deploy keeps the 'current' symlink naming the version the serving "
            "copy runs: expected its absolute path",
        )
    proc = processes[m.deploy_process or ""]
    ports = _ports(d, proc, fail)
    if PORT not in m.url:
        raise Invalid(
            ("model", i, "url"),
            f"a blue-green model is probed on the copy that serves (during a bake, the new "
            f"one): expected {PORT} where its port goes, e.g. 'http://127.0.0.1:{PORT}', "
            f"got {m.url!r}",
        )
    if not _uses(proc.command, PORT):
        raise fail(
            "process",
            f"process {proc.name!r} must be told its port: expected {PORT} in its command "
            f'(e.g. "--port", "{PORT}"; its env may use it too), so that each copy\'s '
            "command line says which copy it is",
        )
    if not _uses(proc.command, ARTIFACT) and not _uses(proc.env, ARTIFACT):
        raise fail(
            "process",
            f"process {proc.name!r} must be told which version to load: expected {ARTIFACT} "
            f'in its command or env (e.g. "--model", "{ARTIFACT}/model.onnx")',
        )
    _check_switch(d, fail)
    return dataclasses.replace(m, deploy=dataclasses.replace(d, ports=ports))


def _ports(d: DeployConfig, proc: ProcessConfig, fail: Fail) -> tuple[int, int]:
    if d.ports and d.spare_port is not None:
        raise fail("spare_port", "expected ports = [A, B] or spare_port, not both")
    if d.spare_port is not None:
        if proc.port is None:
            raise fail(
                "spare_port",
                f"the other port is the serving copy's: expected port in [[process]] "
                f"{proc.name!r}, or ports = [A, B] here",
            )
        ports = (proc.port, d.spare_port)
    elif d.ports:
        ports = (d.ports[0], d.ports[1])
    else:
        raise fail(
            "ports",
            "a blue-green deploy starts the new copy on a spare port beside the old one: "
            "expected ports = [A, B] (the two ports the copies alternate between), or "
            "spare_port with the [[process]]'s port",
        )
    if ports[0] == ports[1]:
        raise fail("ports", f"expected two different ports, got {list(ports)}")
    if proc.port is not None and proc.port not in ports:
        raise fail(
            "ports",
            f"process {proc.name!r} has port = {proc.port}, which is not one of {list(ports)}: "
            "leave it out (each copy listens on its own port of the two)",
        )
    return ports


def _check_switch(d: DeployConfig, fail: Fail) -> None:
    if d.nginx is None and d.switch_command is None:
        raise fail(
            "nginx",
            "a blue-green deploy moves the traffic through a front proxy: expected "
            "[model.deploy.nginx] or [model.deploy.switch_command]",
        )
    if d.nginx is not None and d.switch_command is not None:
        raise fail("switch_command", "expected [model.deploy.nginx] or this, not both")
    if d.nginx is not None:
        n = d.nginx
        if not os.path.isabs(n.include_dir):
            raise fail("nginx", f"include_dir: expected an absolute path, got {n.include_dir!r}")
        if not n.pid_file and not n.confirm.url:
            raise fail(
                "nginx",
                "a switch must be confirmed: expected pid_file (nginx's worker generation) "
                "or confirm_url (answers through the proxy), or both",
            )
        _check_url(n.confirm.url, "nginx", fail)
    if d.switch_command is not None:
        c = d.switch_command
        bad = _unknown(c.argv, SWITCH_PLACEHOLDERS)
        if bad:
            known = ", ".join("{" + p + "}" for p in sorted(SWITCH_PLACEHOLDERS))
            raise fail("switch_command", f"argv: unknown placeholder {bad}; known: {known}")
        if c.check_argv and _unknown(c.check_argv, CHECK_PLACEHOLDERS):
            raise fail(
                "switch_command",
                "check_argv: its only placeholder is {model} (no address is known before a "
                f"deploy); got {_unknown(c.check_argv, CHECK_PLACEHOLDERS)}",
            )
        _check_url(c.confirm.url, "switch_command", fail)


def _unknown(argv: tuple[str, ...], known: frozenset[str]) -> str:
    names = sorted({m[1] for a in argv for m in _PLACEHOLDER.finditer(a)} - known)
    return ", ".join("{" + n + "}" for n in names)


def _check_url(url: str | None, key: str, fail: Fail) -> None:
    if url is not None and not url.startswith(("http://", "https://")):
        raise fail(key, f"confirm_url: expected an http:// or https:// URL, got {url!r}")


def check_blue_green_ports(
    models: tuple[ModelConfig, ...], processes: tuple[ProcessConfig, ...], agent: AgentConfig
) -> None:
    """No port of a blue-green model's copies is another process's, another blue-green model's
    or the agent's own; no process has two blue-green models (which would start two copies)."""
    owners: dict[int, str] = {}
    for p in processes:
        if p.port is not None:
            owners[p.port] = f"process {p.name!r}"
    if agent.listen_port:
        owners[agent.listen_port] = "the agent's API ([agent] listen)"
    seen: dict[str, str] = {}
    for i, m in enumerate(models):
        d = m.deploy
        if d is None or not d.blue_green:
            continue
        proc = m.deploy_process or ""
        if proc in seen:
            raise Invalid(
                ("model", i, "deploy", "process"),
                f"process {proc!r} is deployed blue-green by model {seen[proc]!r} already: "
                "expected one blue-green model per process",
            )
        seen[proc] = m.name
        for port in d.ports:
            owner = owners.get(port)
            if owner is not None and owner != f"process {proc!r}":
                raise Invalid(
                    ("model", i, "deploy", "ports"),
                    f"port {port} is used by {owner}: expected ports no other process of the "
                    "config listens on",
                )
        for port in d.ports:
            owners[port] = f"process {proc!r}"
