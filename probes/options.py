"""``[model.canary]`` option schemas: msgspec Structs checked by :mod:`storage.tomlschema`.

A probe names its options as a Struct (``options_schema``); :meth:`probes.base.Probe.check_options`
decodes the table against it, so unknown keys, types, bounds, non-finite numbers and durations
beyond a century are refused the same way as in the agent's config and the fleet file. What a
schema cannot say (a regular expression that compiles, a readable CA file) stays in the probe's
own ``check_options``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, cast

import msgspec
from msgspec import Meta

from storage.tomlschema import Duration, number

MaxDuration = Annotated[
    Duration,
    Meta(extra={"expected": 'a positive duration such as "500ms" or "2s"', "plain": True}),
]
"""A latency bound such as ``max_latency = "500ms"``."""

NonEmpty = Annotated[
    str, Meta(min_length=1, extra={"expected": "a non-empty string", "plain": True})
]
Flag = Annotated[bool, Meta(extra={"expected": "true or false", "plain": True})]


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The base of every probe's options: unknown keys are refused, naming the protocol."""

    unknown_key: ClassVar[str] = "unknown canary option; expected one of: {known}"


class GenerationOptions(Options, frozen=True):
    """Options every text-generating protocol (openai, ollama, tgi) accepts."""

    model: NonEmpty | None = None
    prompt: NonEmpty | None = None
    max_tokens: Annotated[int, Meta(ge=1, extra={"expected": "an integer >= 1", "plain": True})] = (
        16
    )
    temperature: Annotated[float, number(ge=0.0, expected="a number >= 0", plain=True)] = 0.0
    min_tokens_per_s: Annotated[float, number(gt=0.0, expected="a number > 0", plain=True)] = 1.0
    expect_contains: NonEmpty | None = None
    expect_regex: NonEmpty | None = None
    expect_exact: NonEmpty | None = None
    max_latency: MaxDuration | None = None
    max_ttft: MaxDuration | None = None
    max_itl: MaxDuration | None = None


Endpoint = Annotated[
    Literal["chat", "completions"],
    Meta(extra={"expected": '"chat" or "completions"', "plain": True}),
]


def schema_for(
    protocol: str, base: type[Options], fields: dict[str, Any] | None = None
) -> type[Options]:
    """``base`` with ``fields`` added (name -> type, all optional), for ``protocol``.

    Args:
        protocol: named in the message for an unknown key.
        base: the options the protocol shares with others.
        fields: its own options; absent ones are simply not there (the default None is never
            read: the Struct only checks), while an explicit None is refused like any wrong type.
    """
    schema = msgspec.defstruct(
        f"{protocol.title()}Options",
        [(name, kind, None) for name, kind in (fields or {}).items()],
        bases=(base,),
        frozen=True,
        kw_only=True,
        forbid_unknown_fields=True,
    )
    schema.unknown_key = (  # type: ignore[attr-defined]  # a ClassVar of Options
        f"unknown canary option for protocol {protocol!r}; expected one of: {{known}}"
    )
    return cast(type[Options], schema)
