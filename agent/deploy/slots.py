"""Where a blue-green model's copies are: each copy's slot, and the config filled in for it.

A blue-green model's ``[[process]]`` and ``url`` are templates (:mod:`agent.config.bluegreen`):
``{port}`` and ``{artifact}`` are filled in per copy. A copy is a :class:`Slot`, its port (one
of the model's two ``ports``) and the path of the version it runs, and everything about it
follows from the slot: its command line and env (:func:`copy_config`), the address the proxy
sends traffic to (:func:`copy_address`), the URL its canaries go to (:func:`probe_url`).

The version's path goes into the command line itself, not through a shared ``current`` link:
a copy restarted after a crash (by the supervisor, in the middle of a deploy or later) loads its
own version, never the other copy's, and the command line an agent records for adoption says
which slot and which version a running process is.

:class:`Routes` holds, per blue-green model, the slot that serves and the port its probes go to
now (the serving one, or the new copy's during a bake); :meth:`Routes.resolve` fills the
config's templates from it, which is the config the supervisor and the model monitors run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from agent.config import Config, ModelConfig, ProcessConfig
from agent.config.bluegreen import ARTIFACT, PORT
from agent.deploy.link import LinkError, read_link
from agent.deploy.proxy import Address, parse_address

__all__ = [
    "Routes",
    "Slot",
    "copy_address",
    "copy_config",
    "fill",
    "probe_url",
    "spare_port",
]


@dataclass(frozen=True, slots=True)
class Slot:
    """One copy of a blue-green model's process: the port it listens on, the version it runs."""

    port: int
    artifact: str

    def to_json(self) -> dict[str, Any]:
        """JSON form, as a deployment's evidence keeps it."""
        return {"port": self.port, "artifact": self.artifact}

    @classmethod
    def from_json(cls, data: object) -> Slot | None:
        """Read one back leniently (None when it is not a slot)."""
        if not isinstance(data, Mapping):
            return None
        port, artifact = data.get("port"), data.get("artifact")
        if not isinstance(port, int) or isinstance(port, bool) or not isinstance(artifact, str):
            return None
        return cls(port, artifact)


def fill(text: str, slot: Slot) -> str:
    """``text`` with ``{port}`` and ``{artifact}`` filled in for ``slot``."""
    return text.replace(PORT, str(slot.port)).replace(ARTIFACT, slot.artifact)


def copy_config(proc: ProcessConfig, slot: Slot) -> ProcessConfig:
    """The process of the copy in ``slot``: command and env filled in, ``port`` its own (a
    restart waits for that port to be free, and the startup gate may watch it)."""
    return dataclasses.replace(
        proc,
        command=tuple(fill(a, slot) for a in proc.command),
        env={k: fill(v, slot) for k, v in proc.env.items()},
        port=slot.port,
    )


def probe_url(m: ModelConfig, port: int) -> str:
    """The model's URL pointing at the copy on ``port``."""
    return m.url.replace(PORT, str(port))


def copy_address(m: ModelConfig, port: int) -> str:
    """The ``host:port`` the front proxy sends the model's traffic to for the copy on
    ``port`` (the host of the model's URL, which the copies listen on)."""
    host = urlsplit(probe_url(m, port)).hostname or "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return str(parse_address(f"{shown}:{port}"))


def address_port(address: str) -> int | None:
    """The port of a ``host:port`` (None when it is not one)."""
    try:
        parsed: Address = parse_address(address)
    except ValueError:
        return None
    return parsed.port


def spare_port(m: ModelConfig, serving: int) -> int:
    """The port of the two that the serving copy does not use."""
    assert m.deploy is not None
    first, second = m.deploy.ports
    return second if serving == first else first


def link_artifact(m: ModelConfig) -> str:
    """The version the model's ``current`` link names (the link itself when it names none)."""
    assert m.deploy is not None and m.deploy.link is not None
    link = m.deploy.link
    try:
        target = read_link(link)
    except LinkError:
        target = None
    return str(target if target is not None else link)


def blue_green_models(config: Config) -> list[ModelConfig]:
    """The config's blue-green models (``[model.deploy] strategy = "blue-green"``)."""
    return [m for m in config.models if m.deploy is not None and m.deploy.blue_green]


class Routes:
    """Per blue-green model: the slot serving it, and the port its probes go to now."""

    def __init__(self) -> None:
        self.serving: dict[str, Slot] = {}
        self.probing: dict[str, int] = {}
        """Models whose probes go to another copy than the serving one (a bake)."""

    def slot(self, m: ModelConfig) -> Slot:
        """The model's serving slot; before anything is known, its first port with the
        version its link names."""
        found = self.serving.get(m.name)
        if found is not None:
            return found
        assert m.deploy is not None
        return Slot(m.deploy.ports[0], link_artifact(m))

    def probe_port(self, m: ModelConfig) -> int:
        """The port the model's probes go to now."""
        return self.probing.get(m.name, self.slot(m).port)

    def resolve(self, config: Config) -> Config:
        """``config`` with every blue-green model's process and URL filled in: the process as
        its serving copy, the URL as where its probes go now."""
        models = blue_green_models(config)
        if not models:
            return config
        by_process = {m.deploy_process: m for m in models}
        processes = tuple(
            copy_config(p, self.slot(by_process[p.name])) if p.name in by_process else p
            for p in config.processes
        )
        filled = {
            m.name: dataclasses.replace(m, url=probe_url(m, self.probe_port(m))) for m in models
        }
        return dataclasses.replace(
            config,
            processes=processes,
            models=tuple(filled.get(m.name, m) for m in config.models),
        )

    def forget(self, config: Config) -> None:
        """Drop what is known of models no longer blue-green in ``config``."""
        names = {m.name for m in blue_green_models(config)}
        for table in (self.serving, self.probing):
            for name in [n for n in table if n not in names]:
                del table[name]
