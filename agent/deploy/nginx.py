"""The nginx traffic switch: a Vigil-owned upstream include, ``nginx -t``, a graceful reload.

Vigil owns one small file per model, ``<include_dir>/<model>.upstream.conf``, holding only the
``server host:port;`` line of the model's current copy. The operator's own ``upstream`` block
includes it and keeps everything else (``keepalive``, its timeout, the balancing method), so a
deploy changes the address and nothing the operator tuned (docs/deploy.md shows a site).

A switch: write the new include atomically, run ``nginx -t``; if nginx refuses the config, put
the previous include back byte for byte and raise with nginx's words, the running nginx never
having seen the change. Otherwise reload gracefully (nginx starts workers with the new config
and lets the old ones finish their requests) and confirm the reload took: the master's new
worker generation is up and the old workers no longer accept, and/or a URL through the proxy
answers from the new address. Switches through one instance are serialized, since a reload and
``nginx -t`` cover every model's include at once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import time
from pathlib import Path
from typing import NoReturn

from agent.deploy.proxy import (
    Address,
    CommandOutcome,
    InvalidTarget,
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
from agent.deploy.proxyfiles import restore_file, writable_dir, write_atomic
from agent.deploy.proxysettings import NginxSettings
from storage.text import printable

INCLUDE_SUFFIX = ".upstream.conf"
SERVER_PREFIX = "server "


def render_include(model: str, address: Address) -> str:
    """The include's text: who wrote it, and the one ``server`` line."""
    return (
        f"# Written by Vigil for model {model}: the address its traffic goes to.\n"
        "# Blue-green deploys rewrite this file; edits here are lost at the next switch.\n"
        "# Include it inside the model's upstream block (docs/deploy.md).\n"
        f"{SERVER_PREFIX}{address};\n"
    )


def read_include_address(text: str) -> Address | None:
    """The address in an include Vigil wrote (None when it holds no ``server`` line)."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(SERVER_PREFIX) and stripped.endswith(";"):
            return parse_address(stripped[len(SERVER_PREFIX) : -1].split()[0])
    return None


class NginxSwitch(SerialSwitch):
    """Switches a model's traffic by rewriting its upstream include and reloading nginx."""

    kind = "nginx"

    def __init__(self, settings: NginxSettings) -> None:
        problems = _check_settings(settings)
        if problems:
            raise ValueError("nginx switch: " + "; ".join(problems))
        self.settings = settings
        super().__init__()
        base = [settings.nginx]
        if settings.prefix:
            base += ["-p", settings.prefix]
        if settings.conf:
            base += ["-c", settings.conf]
        base += list(settings.extra_args)
        # Not -q: nginx's "syntax is ok ... test is successful" (and any warning) is the
        # evidence a deploy records.
        self.test_argv = settings.test_argv or (*base, "-t")
        self.dump_argv = settings.dump_argv or (*base, "-T")
        self.reload_argv = settings.reload_argv or (
            None if settings.pid_file else (*base, "-s", "reload")
        )

    def include_path(self, model: str) -> Path:
        """The file Vigil owns for ``model``."""
        return Path(self.settings.include_dir) / f"{check_model_name(model)}{INCLUDE_SUFFIX}"

    async def current(self, model: str) -> str | None:
        path = self.include_path(model)
        try:
            text = await asyncio.to_thread(path.read_text)
        except FileNotFoundError:
            return None
        try:
            address = read_include_address(text)
        except InvalidTarget as exc:
            raise InvalidTarget(f"{path}: {exc}") from None
        return None if address is None else str(address)

    async def _switch(self, model: str, target: Address) -> SwitchResult:
        start = time.perf_counter_ns()
        path = self.include_path(model)
        new_text = render_include(model, target)

        def fail(stage: SwitchStage, message: str, *, restored: bool, output: str = "") -> NoReturn:
            raise self.failure(
                message, model, target, stage=stage, restored=restored, output=output
            )

        try:
            previous, mode = await asyncio.to_thread(_read_for_restore, path)
            previous_addr = _address_or_none(previous)
            await asyncio.to_thread(write_atomic, path, new_text.encode(), mode)
        except OSError as exc:
            fail(SwitchStage.WRITE, f"cannot write {path}: {exc.strerror or exc}", restored=True)
        write_ms = elapsed_ms(start)

        tested = await self._run(self.test_argv)
        check_ms = tested.elapsed_ms
        if tested.returncode != 0:
            await asyncio.to_thread(restore_file, path, previous, mode)
            again = await self._run(self.test_argv)
            cause = (
                "it fails with the previous include too, so the fault is in the nginx config "
                "around it, not in the new address"
                if again.returncode != 0
                else "the previous include passes, so nginx refused the new address"
            )
            fail(
                SwitchStage.TEST,
                f"{_show(self.test_argv)} refused the config with {path} switched to {target} "
                f"(exit {tested.returncode}): {tested.tail()}\nThe previous include is back "
                f"and nginx was not reloaded; {cause}.",
                restored=True,
                output=tested.tail(),
            )

        reload_start = time.perf_counter_ns()
        old_workers: set[int] = set()
        master: int | None = None
        try:
            if self.settings.pid_file:
                master = await asyncio.to_thread(read_master_pid, self.settings.pid_file)
                old_workers = set(await asyncio.to_thread(worker_titles, master))
            if self.reload_argv is None and master is not None:
                os.kill(master, signal.SIGHUP)
            elif self.reload_argv is not None:
                reloaded = await self._run(self.reload_argv)
                if reloaded.returncode != 0:
                    raise OSError(f"exit {reloaded.returncode}: {reloaded.tail()}")
        except (OSError, ValueError) as exc:
            await asyncio.to_thread(restore_file, path, previous, mode)
            fail(
                SwitchStage.RELOAD,
                f"could not reload nginx: {exc}\nThe previous include is back.",
                restored=True,
            )
        reload_ms = elapsed_ms(reload_start)

        confirm_start = time.perf_counter_ns()
        confirmed: list[str] = []
        conf = self.settings.confirm
        try:
            if master is not None:
                confirmed.append(await self._confirm_generation(master, old_workers))
            if conf.url:
                confirmed.append(
                    await confirm_through_proxy(
                        conf.url, conf.header, target, streak=conf.streak, timeout_s=conf.timeout_s
                    )
                )
        except TimeoutError as exc:
            fail(
                SwitchStage.CONFIRM,
                f"nginx was reloaded with {path} switched to {target}, but the switch was not "
                f"confirmed: {exc}. Where traffic goes now is unknown: switch back to "
                f"{previous_addr or 'the previous address'} (see nginx's error log).",
                restored=False,
            )
        result = SwitchResult(
            model=model,
            address=str(target),
            previous=previous_addr,
            switch_kind=self.kind,
            written=new_text,
            check_output=tested.tail(),
            confirmed_by="; ".join(confirmed),
            write_ms=write_ms,
            check_ms=check_ms,
            reload_ms=reload_ms,
            confirm_ms=elapsed_ms(confirm_start),
            total_ms=elapsed_ms(start),
        )
        log.info(
            "proxy switched model=%s address=%s previous=%s total_ms=%.1f confirm_ms=%.1f",
            model,
            target,
            previous_addr,
            result.total_ms,
            result.confirm_ms,
        )
        return result

    async def _confirm_generation(self, master: int, old: set[int]) -> str:
        """Wait until the master runs new workers and none of ``old`` accepts connections.

        An nginx worker told to stop closes its listening sockets and renames itself "worker
        process is shutting down" at once; from then on, new connections reach only the new
        generation, which was started with the new config.
        """
        timeout_s = self.settings.confirm.timeout_s
        deadline = time.monotonic() + timeout_s
        while True:
            titles = await asyncio.to_thread(worker_titles, master)
            new = [p for p, t in titles.items() if p not in old and "shutting down" not in t]
            accepting = [p for p in old if p in titles and "shutting down" not in titles[p]]
            if new and not accepting:
                return (
                    f"nginx master {master} runs {len(new)} new worker(s); "
                    f"{len(old)} old worker(s) stopped accepting"
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"nginx master {master} started no new worker generation within "
                    f"{timeout_s:g}s (new: {len(new)}, old still accepting: {len(accepting)})"
                )
            await asyncio.sleep(0.005)

    async def _run(self, argv: tuple[str, ...]) -> CommandOutcome:
        try:
            return await run_argv(argv, self.settings.command_timeout_s)
        except TimeoutError:
            return CommandOutcome(
                argv, -1, "", f"ran past {self.settings.command_timeout_s:g}s", 0.0
            )
        except OSError as exc:
            return CommandOutcome(
                argv, -1, "", f"cannot run {printable(argv[0])}: {exc.strerror or exc}", 0.0
            )

    async def preflight(self, model: str | None = None) -> Preflight:
        """Before a deploy: nginx is there, the include can be written, the config passes.

        With ``model``: its include exists with an address, and ``nginx -T`` shows nginx loads
        it (an include no ``upstream`` block names would switch nothing).
        """
        s = self.settings
        checks: list[PreflightCheck] = []
        binary = shutil.which(self.test_argv[0])
        checks.append(
            PreflightCheck(
                "nginx binary",
                binary is not None,
                binary or f"{printable(self.test_argv[0])} not found (Debian: apt install nginx)",
            )
        )
        inc = Path(s.include_dir)
        writable = await asyncio.to_thread(writable_dir, inc)
        checks.append(
            PreflightCheck(
                "include directory",
                writable,
                f"{inc} is writable"
                if writable
                else f"{inc} is not a directory this agent may write to",
            )
        )
        if model is not None:
            checks.append(await self._include_check(model))
        tested = await self._run(self.test_argv)
        checks.append(
            PreflightCheck(
                "nginx -t",
                tested.returncode == 0,
                f"{_show(self.test_argv)} passes"
                if tested.returncode == 0
                else f"{_show(self.test_argv)} exit {tested.returncode}: {tested.tail()}",
            )
        )
        if model is not None and tested.returncode == 0:
            dumped = await self._run(self.dump_argv)
            path = self.include_path(model)
            loaded = f"# configuration file {path}:" in dumped.stdout
            checks.append(
                PreflightCheck(
                    "include loaded",
                    loaded,
                    f"nginx loads {path}"
                    if loaded
                    else f"{_show(self.dump_argv)} does not show {path}: no upstream block "
                    "includes it (docs/deploy.md)",
                )
            )
        if s.pid_file:
            try:
                master = await asyncio.to_thread(read_master_pid, s.pid_file)
                checks.append(PreflightCheck("nginx master", True, f"pid {master} runs"))
            except (OSError, ValueError) as exc:
                checks.append(PreflightCheck("nginx master", False, str(exc)))
        return Preflight(self.kind, tuple(checks))

    async def _include_check(self, model: str) -> PreflightCheck:
        path = self.include_path(model)
        try:
            address = await self.current(model)
        except (OSError, InvalidTarget) as exc:
            return PreflightCheck("include file", False, f"{path}: {exc}")
        if address is None:
            return PreflightCheck(
                "include file",
                False,
                f"{path} is missing or has no server line: write the model's current address "
                f"there first (server HOST:PORT;)",
            )
        return PreflightCheck("include file", True, f"{path} points at {address}")


def _check_settings(s: NginxSettings) -> list[str]:
    problems = []
    if not os.path.isabs(s.include_dir):
        problems.append(f"include_dir {s.include_dir!r} is not an absolute path")
    if not s.pid_file and not s.confirm.url:
        problems.append(
            "set pid_file (confirm by nginx's worker generation) or confirm.url (confirm "
            "through the proxy): without either a switch cannot be confirmed"
        )
    if s.confirm.url and not s.confirm.url.startswith(("http://", "https://")):
        problems.append(f"confirm.url {s.confirm.url!r} is not an http(s) URL")
    if s.confirm.streak < 1:
        problems.append(f"confirm.streak {s.confirm.streak} is not at least 1")
    if s.confirm.timeout_s <= 0 or s.command_timeout_s <= 0:
        problems.append("timeouts must be positive")
    for name in ("test_argv", "reload_argv", "dump_argv"):
        if getattr(s, name) == ():
            problems.append(f"{name} is empty")
    return problems


def _read_for_restore(path: Path) -> tuple[bytes | None, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None, 0o644
    return path.read_bytes(), stat.S_IMODE(st.st_mode)


def _address_or_none(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        address = read_include_address(data.decode(errors="replace"))
    except InvalidTarget:
        return None
    return None if address is None else str(address)


def _show(argv: tuple[str, ...]) -> str:
    return printable(" ".join(argv))


def read_master_pid(pid_file: str) -> int:
    """The nginx master's pid from its pid file; ValueError if it is not a running nginx."""
    import psutil

    try:
        text = Path(pid_file).read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read nginx pid file {pid_file}: {exc.strerror or exc}") from None
    if not text.isdigit():
        raise ValueError(f"nginx pid file {pid_file} holds {printable(text[:40])!r}, not a pid")
    pid = int(text)
    try:
        name = psutil.Process(pid).name()
    except psutil.Error:
        raise ValueError(f"nginx pid file {pid_file} names pid {pid}, not running") from None
    if not name.startswith("nginx"):
        raise ValueError(f"nginx pid file {pid_file} names pid {pid}, which is {name!r}")
    return pid


def worker_titles(master: int) -> dict[int, str]:
    """The master's worker processes and their titles ("nginx: worker process [is shutting
    down]"); cache managers and loaders left out."""
    import psutil

    titles: dict[int, str] = {}
    try:
        children = psutil.Process(master).children()
    except psutil.Error:
        return titles
    for child in children:
        try:
            title = " ".join(child.cmdline()).strip()
        except psutil.Error:
            continue
        if "worker process" in title:
            titles[child.pid] = title
    return titles
