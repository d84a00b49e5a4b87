"""The traffic switch a blue-green deploy calls: point a model's front proxy at a new address.

A blue-green deploy starts the new copy of a model beside the old one, gates it there, and then
asks a :class:`TrafficSwitch` to send the model's traffic to the new copy's ``host:port``. The
switch answers only when the change is *confirmed* (new requests reach the new address), with
the evidence the deploy records: what was written, the proxy's own check output, how long each
step took. :meth:`TrafficSwitch.drain` then says when the old copy has no connection from the
proxy left, so the deploy may stop it without cutting a request off.

Two switches implement it: :class:`agent.deploy.nginx.NginxSwitch` (a Vigil-owned upstream
include, ``nginx -t``, a graceful reload) and :class:`agent.deploy.commandswitch.CommandSwitch`
(a configured argv, for HAProxy, Envoy or Traefik users). This module holds what both share: the
protocol and its records, the checks on what goes into a proxy's config (a model name, an
address), running an argv with a timeout, confirming through the proxy,
waiting for the old address to drain (counted by :mod:`agent.deploy.connections`), and the
switch's locked entry point (:class:`SerialSwitch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from agent.config.schema import NAME_EXPECTED, NAME_PATTERN
from agent.deploy.connections import others_connections, resolved_hosts
from agent.supervise.childenv import child_environ
from probes.httpclient import HttpClient, InvalidURL, WireError
from storage import private
from storage.text import printable

log = logging.getLogger("vigil.deploy")

OUTPUT_TAIL = 2000
"""How much of a command's output an error or a result keeps (its end: where the cause is)."""
CONFIRM_BODY_LIMIT = 64 * 1024
"""A confirm URL's answer is read (and dropped) up to this much: only its header counts."""


# --- what goes into a proxy's config --------------------------------------------------------


class InvalidTarget(ValueError):
    """A model name or an address that may not go into a proxy's config (or a command's argv)."""


_MODEL = re.compile(NAME_PATTERN)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def check_model_name(model: str) -> str:
    """``model`` itself, if it may name a file and an argument; :class:`InvalidTarget` if not.

    The name becomes part of a file name in the proxy's config directory and an argument of a
    switch command, so it gets the config's own rule for names (no ``/``, no leading ``-`` or
    ``.``, no spaces or quotes that could end an nginx token).
    """
    if not isinstance(model, str) or not _MODEL.fullmatch(model):
        raise InvalidTarget(f"model name {printable(repr(model))} is not {NAME_EXPECTED}")
    return model


@dataclass(frozen=True, slots=True)
class Address:
    """A ``host:port`` a proxy may send traffic to: an IP literal or a DNS name, and a port."""

    host: str
    port: int

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an IP address, or None for a DNS name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    def __str__(self) -> str:
        ip = self.ip
        if ip is not None and ip.version == 6:
            return f"[{ip}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """``host:port`` (``127.0.0.1:8001``, ``[::1]:8001``, ``gpu-02.internal:8001``) checked.

    Only what a proxy can route to passes, written so that it cannot carry anything else into a
    config line: an IPv4 address, an IPv6 address in brackets, or a DNS name (letters, digits and
    ``-`` in dot-separated labels), then a port 1-65535. Raises :class:`InvalidTarget` naming
    what was wrong and what was expected.
    """
    expected = "expected host:port, e.g. 127.0.0.1:8001, [::1]:8001 or gpu-02.internal:8001"
    shown = printable(repr(text))
    if not isinstance(text, str) or not text.isascii() or not text.isprintable():
        raise InvalidTarget(f"address {shown} is not host:port ({expected})")
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise InvalidTarget(f"address {shown} is not [ipv6]:port ({expected})")
        try:
            ip6 = ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidTarget(f"address {shown}: {host!r} is not an IPv6 address") from None
        host = ip6.compressed
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise InvalidTarget(f"address {shown} has no port ({expected})")
        if ":" in host:
            raise InvalidTarget(f"address {shown}: an IPv6 host goes in brackets ({expected})")
        host = _check_host(host, shown, expected)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535 or port_text.startswith("0"):
        raise InvalidTarget(f"address {shown}: port {port_text!r} is not 1-65535")
    return Address(host, int(port_text))


def _check_host(host: str, shown: str, expected: str) -> str:
    labels = host.split(".")
    if labels[-1].isdigit():  # looks like an IPv4 address: it must be one
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise InvalidTarget(f"address {shown}: {host!r} is not an IPv4 address") from None
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidTarget(f"address {shown}: {host!r} is not a host name ({expected})")
    return host.lower()


# --- the protocol and its records -----------------------------------------------------------


class SwitchStage(StrEnum):
    """Where a switch failed."""

    WRITE = "write"
    TEST = "test"
    RELOAD = "reload"
    COMMAND = "command"
    CONFIRM = "confirm"


class SwitchError(Exception):
    """A switch that did not happen, or whose effect could not be confirmed.

    ``restored`` says the proxy's config is as it was before the call (the previous include put
    back byte for byte, no reload sent): traffic still goes where it went. When it is False (a
    reload was sent but never confirmed, or a switch command failed half way), where traffic
    goes is unknown, and the caller must switch back to the old address to know again (the
    deploy state machine's rollback does).
    """

    def __init__(
        self,
        message: str,
        *,
        stage: SwitchStage,
        model: str,
        address: str,
        restored: bool,
        output: str = "",
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.model = model
        self.address = address
        self.restored = restored
        self.output = output


@dataclass(frozen=True, slots=True)
class SwitchResult:
    """A confirmed switch: the evidence a deploy records.

    ``written`` is what the switch wrote (the include file's text, or the command's argv);
    ``check_output`` what the proxy's check said (``nginx -t``, the command's output);
    ``confirmed_by`` how the switch knows new requests reach ``address``.
    """

    model: str
    address: str
    previous: str | None
    switch_kind: str
    written: str
    check_output: str
    confirmed_by: str
    write_ms: float
    check_ms: float
    reload_ms: float
    confirm_ms: float
    total_ms: float


@dataclass(frozen=True, slots=True)
class PreflightCheck:
    """One thing a switch needs before a deploy starts, and what was found."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Preflight:
    """Whether a switch can be used now: each check, and ``ok`` when all passed."""

    switch_kind: str
    checks: tuple[PreflightCheck, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def problems(self) -> list[str]:
        """One line per failed check, for the refusal a deploy prints."""
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.ok]


@dataclass(frozen=True, slots=True)
class DrainResult:
    """Whether the proxy still holds connections to an old address, after waiting."""

    address: str
    drained: bool
    open_connections: int
    waited_ms: float


@runtime_checkable
class TrafficSwitch(Protocol):
    """What the deploy state machine calls to move a model's traffic between two copies.

    One switch instance fronts one proxy; its calls are serialized (a proxy reload is global).
    """

    kind: str

    async def preflight(self, model: str | None = None) -> Preflight:
        """Check, before a deploy starts, that a switch could be made (for ``model``)."""
        ...

    async def switch(self, model: str, address: str) -> SwitchResult:
        """Send ``model``'s traffic to ``address``; return once confirmed.

        Raises:
            InvalidTarget: the model name or the address may not go into the proxy's config.
            SwitchError: the switch failed; its ``restored`` says whether traffic is unchanged.
        """
        ...

    async def current(self, model: str) -> str | None:
        """The address ``model``'s traffic is switched to now, or None if never switched."""
        ...

    async def drain(self, address: str, timeout_s: float) -> DrainResult:
        """Wait until no connection to ``address`` is left open (the old copy may stop)."""
        ...


# --- shared steps ---------------------------------------------------------------------------


def elapsed_ms(start_ns: int) -> float:
    return round((time.perf_counter_ns() - start_ns) / 1e6, 3)


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """A finished command: its exit status and output (decoded, control characters made safe)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    elapsed_ms: float

    def tail(self) -> str:
        """The end of stderr (or of stdout when stderr is empty): where a program says why."""
        text = (self.stderr.strip() or self.stdout.strip())[-OUTPUT_TAIL:]
        return printable(text, keep_newlines=True)


async def run_argv(
    argv: Sequence[str], timeout_s: float, env: Mapping[str, str] | None = None
) -> CommandOutcome:
    """Run ``argv`` (no shell) to its end within ``timeout_s``.

    The command gets its own process group, killed whole at the timeout (a wrapper script's
    children too), the agent's environment less its secrets with ``env`` over it
    (:func:`~agent.supervise.childenv.child_environ`: ``nginx -t`` or a switch script has no
    business with the API token), and the umask every child of the agent gets
    (:func:`storage.private.child_umask`). Raises OSError when the program cannot be started
    and TimeoutError when it ran too long.
    """
    start = time.perf_counter_ns()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_environ(env),
        start_new_session=True,
        umask=private.child_umask(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    return CommandOutcome(
        tuple(argv),
        proc.returncode if proc.returncode is not None else -1,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        elapsed_ms(start),
    )


def _upstream_entries(header: str) -> list[str]:
    # nginx's $upstream_addr: "a, b" for the servers one request tried, "x : y" across an
    # internal redirect. The last one answered.
    return [e.strip() for e in re.split(r",|\s:\s", header) if e.strip()]


def answered_by(header: str, address: Address, hosts: set[str] | None = None) -> bool:
    """Whether an upstream header (nginx's ``$upstream_addr``) names ``address`` last.

    ``hosts`` are the IPs ``address`` resolves to (:func:`resolved_hosts`, looked up once by
    the caller off the event loop); nginx names the IP it connected to, never the host name.
    """
    entries = _upstream_entries(header)
    if not entries:
        return False
    try:
        seen = parse_address(entries[-1])
    except InvalidTarget:
        return False
    if hosts is None:
        hosts = resolved_hosts(address)
    return seen.port == address.port and seen.host in hosts


async def confirm_through_proxy(
    url: str, header: str, address: Address, *, streak: int, timeout_s: float
) -> str:
    """Poll ``url`` through the proxy until ``streak`` answers in a row came from ``address``.

    Each poll opens a new connection (an old keep-alive connection could still be held by an
    old proxy worker) and reads the upstream the proxy names in ``header``; a 2xx answer from
    the new address counts. Returns how the switch was confirmed; raises TimeoutError with the
    last answer seen.
    """
    deadline = time.monotonic() + timeout_s
    hosts = await asyncio.to_thread(resolved_hosts, address)
    in_a_row = polls = 0
    last = "no answer yet"
    while True:
        polls += 1
        remaining = deadline - time.monotonic()
        try:
            # A client per poll, closed after it: its one connection is never reused.
            async with (
                HttpClient(user_agent="vigil-switch-confirm") as client,
                client.get(
                    url, timeout_s=max(0.1, min(2.0, remaining)), follow_redirects=False
                ) as resp,
            ):
                await resp.read(CONFIRM_BODY_LIMIT)
                value = resp.headers.get(header, "")
                ok = 200 <= resp.status < 300 and answered_by(value, address, hosts)
                last = f"HTTP {resp.status}, {header}: {value or '(none)'}"
        except (WireError, InvalidURL, TimeoutError, OSError) as exc:
            ok, last = False, f"{type(exc).__name__}: {exc}"
        in_a_row = in_a_row + 1 if ok else 0
        if in_a_row >= streak:
            return f"{url} answered from {address} {streak} times in a row ({polls} polls)"
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{url} did not answer from {address} {streak} times in a row within "
                f"{timeout_s:g}s; last: {printable(last)}"
            )
        await asyncio.sleep(0.02)


async def wait_drained(address: str, timeout_s: float, interval_s: float = 0.1) -> DrainResult:
    """Wait until nothing on this host holds a connection to ``address`` (or ``timeout_s``).

    After a confirmed switch the proxy sends new requests to the new copy, but its old workers
    (nginx) or sessions (HAProxy) finish the requests they were serving on the old one, and
    close their keep-alive connections to it when they are done. When the count reaches zero
    the old copy serves nobody and may be stopped. The calling process's own connections (the
    agent's kept-alive canary connection to the old copy) are not counted:
    :func:`own_connections`.
    """
    addr = parse_address(address)
    start = time.perf_counter_ns()
    deadline = time.monotonic() + timeout_s
    hosts = await asyncio.to_thread(resolved_hosts, addr)
    while True:
        count = await asyncio.to_thread(others_connections, addr, hosts)
        if count == 0 or time.monotonic() >= deadline:
            return DrainResult(str(addr), count == 0, count, elapsed_ms(start))
        await asyncio.sleep(interval_s)


class SerialSwitch:
    """What both switches do alike: check the model name and the address before anything is
    written, switch one model at a time (two deploys switching at once would race on the
    proxy's config and its reload), and drain by this host's socket tables. A subclass does
    the switch itself in :meth:`_switch`, under the lock."""

    kind: str
    """The switch's name in the deploy's record and the log (``nginx``, ``command``)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def drain(self, address: str, timeout_s: float) -> DrainResult:
        return await wait_drained(address, timeout_s)

    async def switch(self, model: str, address: str) -> SwitchResult:
        model = check_model_name(model)
        target = parse_address(address)
        async with self._lock:
            return await self._switch(model, target)

    async def _switch(self, model: str, target: Address) -> SwitchResult:
        raise NotImplementedError

    def failure(
        self,
        message: str,
        model: str,
        target: Address,
        *,
        stage: SwitchStage,
        restored: bool,
        output: str = "",
    ) -> SwitchError:
        """The error a failed switch raises, logged once here (the deploy records it too, but
        the log is where an operator looks when the proxy misbehaves outside a deploy)."""
        log.warning(
            "proxy switch failed model=%s address=%s by=%s stage=%s restored=%s error=%s",
            model,
            target,
            self.kind,
            stage,
            restored,
            printable(message),
        )
        return SwitchError(
            message,
            stage=stage,
            model=model,
            address=str(target),
            restored=restored,
            output=output,
        )
