"""The command traffic switch: a configured program moves the traffic (HAProxy, Envoy, Traefik).

Vigil cannot know every proxy's API, so the operator names a command that does the switch (a
``socat`` line to HAProxy's runtime API, an Envoy xDS push, a Traefik file-provider write) as an
argv. Each argument has ``{address}``, ``{host}``, ``{port}``, ``{model}`` and ``{previous}``
replaced; nothing goes through a shell, so an address cannot become a second command, and the
model name and the address are checked (:func:`agent.deploy.proxy.check_model_name`,
:func:`agent.deploy.proxy.parse_address`) before they are put in. The same values are in the
environment as ``VIGIL_MODEL``, ``VIGIL_ADDRESS``, ``VIGIL_HOST``, ``VIGIL_PORT`` and
``VIGIL_PREVIOUS_ADDRESS``.

The command must exit 0 within the timeout; the address it switched to is then remembered in
``<state_dir>/<model>.address`` (what :meth:`CommandSwitch.current` reads, across agent
restarts), and, when a confirm URL is set, the switch waits until the proxy answers from there.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from pathlib import Path

from agent.deploy.proxy import (
    Address,
    Preflight,
    PreflightCheck,
    SerialSwitch,
    SwitchResult,
    SwitchStage,
    check_model_name,
    confirm_through_proxy,
    elapsed_ms,
    log,
    parse_address,
    run_argv,
)
from agent.deploy.proxyfiles import writable_dir, write_atomic
from agent.deploy.proxysettings import CHECK_PLACEHOLDERS, CommandSwitchSettings
from agent.deploy.proxysettings import SWITCH_PLACEHOLDERS as PLACEHOLDERS
from storage.text import printable

_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")


def substitute(template: tuple[str, ...], values: dict[str, str]) -> tuple[str, ...]:
    """Each argument of ``template`` with its ``{name}`` placeholders replaced from ``values``.

    Only ``{word}`` is a placeholder, so JSON or a Go template in an argument (``{"a": 1}``,
    ``{{ .Name }}``) passes as it is.
    """
    return tuple(_PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), arg) for arg in template)


def unknown_placeholders(template: tuple[str, ...], known: frozenset[str]) -> list[str]:
    """The ``{name}`` placeholders in ``template`` that are not in ``known`` (a typo)."""
    return sorted({m[1] for arg in template for m in _PLACEHOLDER.finditer(arg)} - known)


class CommandSwitch(SerialSwitch):
    """Switches a model's traffic by running the operator's command with the new address."""

    kind = "command"

    def __init__(self, settings: CommandSwitchSettings) -> None:
        problems = []
        if not settings.argv or not settings.argv[0]:
            problems.append("argv is empty: name the program that switches the traffic")
        bad = unknown_placeholders(settings.argv, PLACEHOLDERS)
        if bad:
            problems.append(
                f"argv has unknown placeholders {', '.join('{' + b + '}' for b in bad)} "
                f"(known: {', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))})"
            )
        if settings.check_argv is not None:
            bad = unknown_placeholders(settings.check_argv, CHECK_PLACEHOLDERS)
            if not settings.check_argv or bad:
                problems.append("check_argv is empty or uses placeholders other than {model}")
        if not os.path.isabs(settings.state_dir):
            problems.append(f"state_dir {settings.state_dir!r} is not an absolute path")
        if settings.timeout_s <= 0 or settings.confirm.timeout_s <= 0:
            problems.append("timeouts must be positive")
        if settings.confirm.streak < 1:
            problems.append(f"confirm.streak {settings.confirm.streak} is not at least 1")
        if problems:
            raise ValueError("switch command: " + "; ".join(problems))
        self.settings = settings
        super().__init__()

    def state_path(self, model: str) -> Path:
        """Where the address ``model`` was last switched to is kept."""
        return Path(self.settings.state_dir) / f"{check_model_name(model)}.address"

    async def current(self, model: str) -> str | None:
        try:
            text = await asyncio.to_thread(self.state_path(model).read_text)
        except FileNotFoundError:
            return None
        return str(parse_address(text.strip()))

    async def _switch(self, model: str, target: Address) -> SwitchResult:
        start = time.perf_counter_ns()
        previous = await self.current(model)
        values = {
            "address": str(target),
            "host": target.host,
            "port": str(target.port),
            "model": model,
            "previous": previous or "",
        }
        argv = substitute(self.settings.argv, values)
        env = {  # over the agent's environment less its secrets (run_argv's child_environ)
            "VIGIL_MODEL": model,
            "VIGIL_ADDRESS": str(target),
            "VIGIL_HOST": target.host,
            "VIGIL_PORT": str(target.port),
            "VIGIL_PREVIOUS_ADDRESS": previous or "",
        }
        shown = printable(argv[0])
        try:
            outcome = await run_argv(argv, self.settings.timeout_s, env)
        except TimeoutError:  # caught before OSError, which it is a subclass of
            raise self.failure(
                f"{shown} ran past {self.settings.timeout_s:g}s and was killed; where traffic "
                f"goes now is unknown: switch back to {previous or 'the previous address'}",
                model,
                target,
                restored=False,
                stage=SwitchStage.COMMAND,
            ) from None
        except OSError as exc:
            raise self.failure(
                f"cannot run {shown}: {exc.strerror or exc}",
                model,
                target,
                restored=True,
                stage=SwitchStage.COMMAND,
            ) from None
        if outcome.returncode != 0:
            raise self.failure(
                f"{shown} exited {outcome.returncode} switching to {target}: {outcome.tail()}\n"
                f"Where traffic goes now is unknown: switch back to "
                f"{previous or 'the previous address'}",
                model,
                target,
                restored=False,
                output=outcome.tail(),
                stage=SwitchStage.COMMAND,
            )
        write_start = time.perf_counter_ns()
        state = self.state_path(model)
        try:
            await asyncio.to_thread(state.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(write_atomic, state, f"{target}\n".encode())
        except OSError as exc:
            # The proxy was switched; only Vigil's note of it failed. Say so, but the switch
            # stands: failing here would make a rollback undo a switch that worked.
            log.warning("switch state not saved path=%s error=%s", state, exc)
        write_ms = elapsed_ms(write_start)
        confirm_start = time.perf_counter_ns()
        confirmed = f"{shown} exited 0"
        conf = self.settings.confirm
        if conf.url:
            try:
                confirmed += "; " + await confirm_through_proxy(
                    conf.url, conf.header, target, streak=conf.streak, timeout_s=conf.timeout_s
                )
            except TimeoutError as exc:
                raise self.failure(
                    f"{shown} exited 0 but the switch to {target} was not confirmed: {exc}",
                    model,
                    target,
                    restored=False,
                    stage=SwitchStage.CONFIRM,
                ) from None
        result = SwitchResult(
            model=model,
            address=str(target),
            previous=previous,
            switch_kind=self.kind,
            written=" ".join(argv),
            check_output=printable(
                (outcome.stdout + outcome.stderr).strip()[-2000:], keep_newlines=True
            ),
            confirmed_by=confirmed,
            write_ms=write_ms,
            check_ms=outcome.elapsed_ms,
            reload_ms=0.0,
            confirm_ms=elapsed_ms(confirm_start),
            total_ms=elapsed_ms(start),
        )
        log.info(
            "proxy switched model=%s address=%s previous=%s by=command total_ms=%.1f",
            model,
            target,
            previous,
            result.total_ms,
        )
        return result

    async def preflight(self, model: str | None = None) -> Preflight:
        """Before a deploy: the program exists, the state can be kept, the check passes."""
        s = self.settings
        checks: list[PreflightCheck] = []
        program = shutil.which(s.argv[0])
        checks.append(
            PreflightCheck(
                "switch command",
                program is not None,
                program or f"{printable(s.argv[0])} not found or not executable",
            )
        )
        state = Path(s.state_dir)
        ok = await asyncio.to_thread(writable_dir, state, may_create=True)
        checks.append(
            PreflightCheck(
                "state directory",
                ok,
                f"{state} is writable" if ok else f"{state} cannot be written by this agent",
            )
        )
        if s.check_argv:
            argv = substitute(s.check_argv, {"model": model or ""})
            try:
                outcome = await run_argv(argv, s.timeout_s)
                tail = outcome.tail()
                passed = outcome.returncode == 0
                detail = f"exit {outcome.returncode}" + (f": {tail}" if tail else "")
            except (OSError, TimeoutError) as exc:
                passed, detail = False, f"cannot run {printable(argv[0])}: {exc}"
            checks.append(PreflightCheck("check command", passed, detail))
        return Preflight(self.kind, tuple(checks))
