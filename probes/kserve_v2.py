"""The KServe V2 (Open Inference Protocol) probe: Triton, KServe, MLServer, the Vigil demo.

One run asks the server's ``GET /v2/health/live`` and ``/v2/health/ready``, the model's
``GET /v2/models/{model}/ready`` and its metadata ``GET /v2/models/{model}``, then sends one
canary ``POST /v2/models/{model}/infer`` and judges the answer. The metadata (platform,
versions, inputs, outputs) is kept in ``info``; the versions the server lists for the model are
its artifact, so loading a new version is recorded as a deployment. Where the metadata lists no
versions (MLServer answers ``"versions": []``), the ``model_version`` of the inference answer is
the artifact instead. An answered run's outputs, as canonical JSON, are its ``last_output``: a
deterministic model answers the same text each run (output drift and a deploy's golden check
compare them).

A model whose metadata has no signature (no ``inputs``, as MLServer's without a
``model-settings.json`` signature) cannot be given generated inputs: unless ``inputs`` are
configured it is probed for readiness only (its ready endpoint is asked even with
``check_ready = false``), the run is ok when it is ready, and ``info["note"]`` says that no
inference canary runs and how to configure one. Options, all optional:

- ``model``: the model's name on the server; default the target's name.
- ``inputs``: the canary's V2 ``inputs`` list, each ``{name, shape, datatype, data}``. Without
  it the probe fetches the model metadata once and builds inputs from the signature: dynamic
  dimensions (-1) become 1 and the values are the deterministic ramp ``0.1 * i`` (flat index
  ``i``; integer types get ``i % 10``, BOOL alternates). BYTES inputs cannot be generated and
  need explicit ``inputs``. The generated inputs are forgotten after an HTTP 400 (the model was
  probably redeployed with another signature) and fetched again on the next run.
- ``expect_output``: ``{name, shape?, data?, tolerance?}``; the named output must exist, have
  that shape and numbers within ``tolerance`` (absolute, default 1e-4) of ``data`` (flat or
  nested). Any difference is ``wrong_output``.
- ``max_latency``: a duration (``"500ms"``); a slower infer is ``slow`` (ok=False).
- ``check_ready``: ask the model's ready endpoint first; default true.
- ``check_health``: ask the server's live and ready endpoints first; default true. A server
  that is not live or not ready is ``http_error`` before the model is asked anything.

Whatever the options, an output holding NaN is ``wrong_output``: it is how a numerically broken
model usually shows itself. ``e2e_ms`` is the infer request alone (start before sending, end
after the body is read); ``phases_ms`` has ``live``, ``server_ready``, ``ready``, ``metadata``
and ``infer`` (those the run reached). The whole run shares one ``timeout_s`` budget. With
configured ``inputs`` a failing metadata request is not a failure (the canary does not need
it); without, it is.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from probes.base import OptionError, Probe, ProbeTarget, artifact_info, now_ms, register
from probes.common import (
    Deadline,
    body_snippet,
    check_bool,
    check_duration,
    check_str,
    classify_exception,
    duration_ms,
    elapsed_ms,
    is_number,
    make_run,
    over_bound,
)
from probes.httpclient import HttpClient, WireError
from storage.jsontext import loads_json
from storage.records import ProbeRun

DEFAULT_TOLERANCE = 1e-4
MAX_GENERATED_VALUES = 1 << 22
"""Most values one generated input may hold (4,194,304: a 1x3x1024x1024 image); a larger
signature needs configured ``inputs``."""
_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})
_INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
_EXPECT_KEYS = frozenset({"name", "shape", "data", "tolerance"})
READINESS_ONLY_NOTE = (
    "readiness only: the model's metadata lists no inputs, so no inference canary runs; "
    "to run one, configure [model.canary] inputs = [{name, shape, datatype, data}] "
    "(and optionally expect_output)"
)
"""``info["note"]`` of a model probed for readiness only."""


class _Failed(Exception):
    """Ends a run early with a category; internal to :class:`KServeV2Probe`."""

    def __init__(self, category: str, error: str, status: int | None = None) -> None:
        super().__init__(error)
        self.category = category
        self.error = error
        self.status = status


def _is_shape(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    )


def _flatten(value: object) -> list[object]:
    """Row-major flattening of nested lists (V2 allows data flat or nested)."""
    if isinstance(value, list):
        return [leaf for item in value for leaf in _flatten(item)]
    return [value]


def _check_inputs(value: object) -> None:
    if not isinstance(value, list) or not value:
        raise OptionError("inputs", "expected a non-empty list of {name, shape, datatype, data}")
    for i, item in enumerate(value):
        where = f"inputs[{i}]"
        if not isinstance(item, Mapping):
            raise OptionError("inputs", f"{where}: expected a table, got {item!r}")
        missing = sorted({"name", "shape", "datatype", "data"} - set(item))
        if missing:
            raise OptionError(
                "inputs",
                f"{where}: missing {', '.join(missing)}; expected name, shape, datatype and data",
            )
        if not isinstance(item["name"], str) or not isinstance(item["datatype"], str):
            raise OptionError("inputs", f"{where}: name and datatype must be strings")
        if not _is_shape(item["shape"]):
            raise OptionError(
                "inputs",
                f"{where}.shape: expected a list of non-negative integers, got {item['shape']!r}",
            )
        if not isinstance(item["data"], list):
            raise OptionError("inputs", f"{where}.data: expected a list, got {item['data']!r}")
        count = len(_flatten(item["data"]))
        if count != math.prod(item["shape"]):
            raise OptionError(
                "inputs",
                f"{where}: {count} values do not fill shape "
                f"{item['shape']}; expected {math.prod(item['shape'])}",
            )


def _check_expect(value: object) -> None:
    if not isinstance(value, Mapping):
        raise OptionError("expect_output", "expected a table {name, shape?, data?, tolerance?}")
    unknown = sorted(set(value) - _EXPECT_KEYS)
    if unknown:
        raise OptionError(
            "expect_output",
            f"unknown key(s) {', '.join(unknown)}; expected name, shape, data, tolerance",
        )
    if not isinstance(value.get("name"), str) or not value["name"]:
        raise OptionError("expect_output", "expect_output.name: expected the output's name")
    if "shape" in value and not _is_shape(value["shape"]):
        raise OptionError(
            "expect_output", "expect_output.shape: expected a list of non-negative integers"
        )
    if "data" in value and (
        not isinstance(value["data"], list)
        or not all(is_number(x) for x in _flatten(value["data"]))
    ):
        raise OptionError("expect_output", "expect_output.data: expected a list of numbers")
    tol = value.get("tolerance", DEFAULT_TOLERANCE)
    if not is_number(tol) or tol < 0:
        raise OptionError("expect_output", "expect_output.tolerance: expected a number >= 0")


def generate_inputs(metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Build canary inputs from V2 model metadata (see the module docs for the values).

    Raises:
        ValueError: when the metadata has no usable inputs or one cannot be generated.
    """
    specs = metadata.get("inputs")
    if not isinstance(specs, list) or not specs:
        raise ValueError("model metadata lists no inputs")
    inputs = []
    for spec in specs:
        if not isinstance(spec, Mapping) or not isinstance(spec.get("shape"), list):
            raise ValueError(f"malformed input in model metadata: {spec!r}")
        name, datatype = spec.get("name"), spec.get("datatype")
        if not isinstance(datatype, str):  # a list or a table: unhashable in the lookups below
            raise ValueError(f"malformed datatype in model metadata: {datatype!r}")
        # Whole numbers only, -1 (dynamic) or 0 and up: int() of a float, None or a string
        # from a broken server raised OverflowError or TypeError out of the probe.
        if not all(type(d) is int and d >= -1 for d in spec["shape"]):
            raise ValueError(f"malformed shape in model metadata: {spec['shape']!r}")
        shape = [1 if d == -1 else d for d in spec["shape"]]
        count = math.prod(shape)
        if count > MAX_GENERATED_VALUES:
            # A shape of [100000, 100000] built a list of 10**10 values on the event loop: the
            # agent stalled, its memory grew without bound (issue 17, found by tests/fuzz).
            raise ValueError(
                f"input {name!r} of shape {shape} holds {count} values, over the "
                f"{MAX_GENERATED_VALUES} a generated canary may send; configure canary inputs"
            )
        data: list[Any]
        if datatype in _FLOAT_TYPES:
            data = [round(0.1 * i, 6) for i in range(count)]
        elif datatype in _INT_TYPES:
            data = [i % 10 for i in range(count)]
        elif datatype == "BOOL":
            data = [i % 2 == 1 for i in range(count)]
        else:
            raise ValueError(
                f"cannot generate a {datatype} value for input {name!r}; configure canary inputs"
            )
        inputs.append({"name": name, "shape": shape, "datatype": datatype, "data": data})
    return inputs


def compare_output(outputs: Sequence[Mapping[str, Any]], expect: Mapping[str, Any]) -> str | None:
    """What differs between the response ``outputs`` and ``expect``, or None when it matches."""
    name = expect["name"]
    found = next((o for o in outputs if o.get("name") == name), None)
    if found is None:
        return f"output {name!r} missing; got {[o.get('name') for o in outputs]}"
    shape = found.get("shape")
    # A shape that is no list (a number, a string) differs too, rather than raise TypeError.
    if "shape" in expect and (shape or []) != list(expect["shape"]):
        return f"output {name!r} has shape {found.get('shape')}, expected {expect['shape']}"
    if "data" not in expect:
        return None
    want = _flatten(expect["data"])
    got = _flatten(found.get("data"))
    if len(got) != len(want):
        return f"output {name!r} has {len(got)} values, expected {len(want)}"
    tol = float(expect.get("tolerance", DEFAULT_TOLERANCE))
    bad = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if not _close(g, w, tol)]
    if bad:
        i = bad[0]
        return (
            f"output {name!r}: {len(bad)} of {len(want)} values differ by more than {tol}; "
            f"first at [{i}]: got {got[i]!r}, expected {want[i]!r}"
        )
    return None


@register
class KServeV2Probe(Probe):
    """Sends a canary inference over the KServe V2 REST protocol."""

    protocol = "kserve_v2"
    allowed_options = frozenset(
        {"model", "inputs", "expect_output", "max_latency", "check_ready", "check_health"}
    )

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Validate keys and value types; raise OptionError naming the key."""
        super().check_options(options)
        check_str(options, "model")
        if "inputs" in options:
            _check_inputs(options["inputs"])
        if "expect_output" in options:
            _check_expect(options["expect_output"])
        check_duration(options, "max_latency")
        check_bool(options, "check_ready")
        check_bool(options, "check_health")

    def __init__(self, target: ProbeTarget) -> None:
        super().__init__(target)
        opts = target.options
        self._model = str(opts.get("model") or target.name)
        self._server = f"{target.url.rstrip('/')}/v2"
        self._base = f"{self._server}/models/{quote(self._model, safe='')}"
        configured = opts.get("inputs")
        self._configured = configured is not None
        self._inputs: list[dict[str, Any]] | None = list(configured) if configured else None

    async def run(self, session: HttpClient) -> ProbeRun:
        """Probe once: ready check, canary infer, judgement. Never raises."""
        ts = now_ms()
        self.last_output = None
        phases: dict[str, float] = {}
        deadline = Deadline(self.target.timeout_s)
        start: int | None = None
        try:
            if self.target.options.get("check_health", True):
                await self._get(session, "/health/live", deadline, phases, "live", server=True)
                await self._get(
                    session, "/health/ready", deadline, phases, "server_ready", server=True
                )
            check_ready = self.target.options.get("check_ready", True)
            if check_ready:
                await self._get(session, "/ready", deadline, phases, "ready")
            if not await self._metadata(session, deadline, phases):
                # No signature to build a canary from: readiness is all there is to judge.
                if not check_ready:
                    await self._get(session, "/ready", deadline, phases, "ready")
                return make_run(self.target, "ok", ts_ms=ts, phases_ms=phases)
            start = time.perf_counter_ns()
            async with session.post(
                f"{self._base}/infer",
                json={"inputs": self._inputs},
                timeout_s=deadline.timeout(),
                headers=self.target.auth_headers(),
            ) as resp:
                body = await resp.read()
                status = resp.status
            e2e = elapsed_ms(start)
            phases["infer"] = e2e
        except _Failed as failed:
            return make_run(
                self.target,
                failed.category,
                ts_ms=ts,
                error=failed.error,
                status=failed.status,
                phases_ms=phases,
            )
        except (WireError, TimeoutError, ValueError) as exc:
            category, error = classify_exception(exc)
            e2e_failed = elapsed_ms(start) if start is not None and category == "timeout" else None
            return make_run(
                self.target, category, ts_ms=ts, error=error, e2e_ms=e2e_failed, phases_ms=phases
            )

        def result(category: str, error: str | None = None) -> ProbeRun:
            return make_run(
                self.target,
                category,
                ts_ms=ts,
                error=error,
                e2e_ms=e2e,
                status=status,
                phases_ms=phases,
            )

        if not 200 <= status <= 299:
            if status == 400 and not self._configured:
                self._inputs = None  # the signature may have changed: fetch it again next run
            return result("http_error", f"infer: HTTP {status}: {_v2_error(body)}")
        try:
            outputs, version = _parse_answer(body)
        except ValueError as exc:
            return result("protocol_error", f"infer: {exc}")
        if self.info.get("artifact_kind") != "model_versions":
            # The metadata lists no versions (MLServer): the answer's own version is the artifact.
            self.info.update(artifact_info(version, "model_version"))
        wrong = _find_nan(outputs)
        expect = self.target.options.get("expect_output")
        if wrong is None and isinstance(expect, Mapping):
            wrong = compare_output(outputs, expect)
        if wrong is not None:
            return result("wrong_output", wrong)
        # The answer, canonical: a deterministic model's runs compare equal as text (output
        # drift, a deploy's golden check against the previous version).
        self.last_output = json.dumps(
            [{k: o.get(k) for k in ("name", "shape", "datatype", "data")} for o in outputs],
            sort_keys=True,
        )
        slow = over_bound(e2e, duration_ms(self.target.options, "max_latency"), "max_latency")
        return result("slow", slow) if slow else result("ok")

    async def _metadata(
        self, session: HttpClient, deadline: Deadline, phases: dict[str, float]
    ) -> bool:
        """Fetch the model metadata into ``info`` (and the generated inputs, if needed).

        Returns:
            False when there are no canary inputs to send: none are configured and the
            metadata has no signature (the model is probed for readiness only).
        """
        try:
            raw = await self._get(session, "", deadline, phases, "metadata")
            metadata = loads_json(raw)
            if not isinstance(metadata, Mapping):
                raise ValueError("expected a JSON object")
        except (_Failed, ValueError) as exc:
            if self._inputs is not None:
                return True  # the canary's inputs are configured: the metadata is for the record
            if isinstance(exc, _Failed):
                raise
            raise _Failed("protocol_error", f"model metadata: {exc}") from exc
        unsigned = self._inputs is None and metadata.get("inputs") in (None, [])
        if self._inputs is None and not unsigned:
            try:
                self._inputs = generate_inputs(metadata)
            except ValueError as exc:
                raise _Failed("protocol_error", f"model metadata: {exc}") from exc
        info = {k: metadata[k] for k in ("name", "platform", "versions") if k in metadata}
        for key in ("inputs", "outputs"):
            tensors = metadata.get(key)
            if isinstance(tensors, list):
                info[key] = [
                    {k: t.get(k) for k in ("name", "datatype", "shape")}
                    for t in tensors
                    if isinstance(t, Mapping)
                ]
        versions = metadata.get("versions")
        if isinstance(versions, list) and versions:
            info.update(artifact_info(",".join(map(str, versions)), "model_versions"))
        if unsigned:
            info["note"] = READINESS_ONLY_NOTE
        self.info = info
        return not unsigned

    async def _get(
        self,
        session: HttpClient,
        path: str,
        deadline: Deadline,
        phases: dict[str, float],
        phase: str,
        *,
        server: bool = False,
    ) -> bytes:
        """GET a model (or with ``server``, a server) endpoint, timing it as ``phase``;
        non-2xx ends the run."""
        start = time.perf_counter_ns()
        url = (self._server if server else self._base) + path
        async with session.get(
            url, timeout_s=deadline.timeout(), headers=self.target.auth_headers()
        ) as resp:
            body = await resp.read()
        phases[phase] = elapsed_ms(start)
        if not 200 <= resp.status <= 299:
            what = {
                "ready": f"model {self._model!r} not ready",
                "live": "server not live",
                "server_ready": "server not ready",
            }.get(phase, f"model {self._model!r} {phase} unavailable")
            raise _Failed(
                "http_error", f"{what}: HTTP {resp.status}: {_v2_error(body)}", resp.status
            )
        return body


def _v2_error(body: bytes) -> str:
    """The ``error`` text of a V2 error body, else the start of the body."""
    try:
        data = loads_json(body)
    except ValueError:
        return body_snippet(body)
    if isinstance(data, Mapping) and isinstance(data.get("error"), str):
        return body_snippet(data["error"].encode())
    return body_snippet(body)


def _parse_answer(body: bytes) -> tuple[list[Mapping[str, Any]], object]:
    """The ``outputs`` and ``model_version`` of a V2 infer response; ValueError says what is
    malformed (a missing version is not: it is optional)."""
    try:
        data = loads_json(body)
    except ValueError:
        raise ValueError(f"response is not JSON: {body_snippet(body)}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"response has no outputs: {body_snippet(body)}")
    outputs = data.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise ValueError(f"response has no outputs: {body_snippet(body)}")
    for out in outputs:
        if (
            not isinstance(out, Mapping)
            or not isinstance(out.get("name"), str)
            or not isinstance(out.get("data"), list)
        ):
            raise ValueError(f"malformed output {body_snippet(json.dumps(out).encode())}")
    return outputs, data.get("model_version")


def _close(got: object, want: object, tol: float) -> bool:
    """Whether an output value is a number within ``tol`` of the expected one; an integer too
    large for a float (a 400-digit one in a broken answer) is not, rather than an
    OverflowError out of the probe."""
    if not is_number(got):
        return False
    try:
        return abs(float(got) - float(want)) <= tol  # type: ignore[arg-type]
    except OverflowError:
        return False


def _find_nan(outputs: Sequence[Mapping[str, Any]]) -> str | None:
    for out in outputs:
        for i, value in enumerate(_flatten(out["data"])):
            if isinstance(value, float) and math.isnan(value):
                return f"output {out['name']!r} holds NaN (first at [{i}])"
    return None
