"""The remote-write 1.0 wire format: a protobuf ``prometheus.WriteRequest``, snappy-compressed.

The message classes are built at first use from a descriptor written here, field for field as
Prometheus's ``prompb/remote.proto`` and ``types.proto`` define them (``WriteRequest.timeseries
= 1``; ``TimeSeries.labels = 1``, ``samples = 2``; ``Label.name = 1``, ``value = 2``;
``Sample.value = 1`` (double), ``timestamp = 2`` (int64, milliseconds)), in a descriptor pool of
their own so they cannot clash with another copy of Prometheus's protos in the process. The
body is snappy's *block* format (not its framed one), as the protocol requires.

``protobuf`` and ``cramjam`` (the ``forward`` extra) are imported on the first request, never
by an agent that forwards nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

Labels = tuple[tuple[str, str], ...]

HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
"""What every remote-write request carries."""

_PACKAGE = "prometheus"


@functools.cache
def _classes() -> dict[str, Any]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FileDescriptorProto(
        name="vigil/prometheus_remote.proto", package=_PACKAGE, syntax="proto3"
    )
    f = descriptor_pb2.FieldDescriptorProto
    opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED

    def message(name: str, *fields: tuple[str, int, int, int, str | None]) -> None:
        msg = fd.message_type.add(name=name)
        for field_name, number, label, kind, type_name in fields:
            fld = msg.field.add(name=field_name, number=number, label=label, type=kind)
            if type_name is not None:
                fld.type_name = f".{_PACKAGE}.{type_name}"

    message("Label", ("name", 1, opt, f.TYPE_STRING, None), ("value", 2, opt, f.TYPE_STRING, None))
    message(
        "Sample", ("value", 1, opt, f.TYPE_DOUBLE, None), ("timestamp", 2, opt, f.TYPE_INT64, None)
    )
    message(
        "TimeSeries",
        ("labels", 1, rep, f.TYPE_MESSAGE, "Label"),
        ("samples", 2, rep, f.TYPE_MESSAGE, "Sample"),
    )
    message("WriteRequest", ("timeseries", 1, rep, f.TYPE_MESSAGE, "TimeSeries"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in ("WriteRequest", "TimeSeries", "Label", "Sample")
    }


def encode(series: Iterable[tuple[Labels, Sequence[int], Sequence[float]]]) -> bytes:
    """One request body: each series' labels (sorted by name, ``__name__`` among them) and
    its samples (times in epoch milliseconds, in order), as a snappy-compressed WriteRequest.
    """
    import cramjam

    req = _classes()["WriteRequest"]()
    for labels, ts, values in series:
        out = req.timeseries.add()
        for name, value in labels:
            out.labels.add(name=name, value=value)
        add = out.samples.add
        for t, v in zip(ts, values, strict=True):
            add(value=v, timestamp=t)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def decode(body: bytes) -> list[tuple[Labels, list[tuple[int, float]]]]:
    """A request body back as (labels, [(timestamp ms, value)]) per series: what a receiver
    reads (tests, the benchmark)."""
    import cramjam

    req = _classes()["WriteRequest"]()
    req.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
    return [
        (
            tuple((lab.name, lab.value) for lab in ts.labels),
            [(s.timestamp, s.value) for s in ts.samples],
        )
        for ts in req.timeseries
    ]
