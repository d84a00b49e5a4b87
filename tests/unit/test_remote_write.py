"""remote_write's parts without a receiver: the wire format (a protobuf WriteRequest, snappy
block-compressed) decoded back, the names and labels series are sent with (as /metrics names
them), the cursor over stored samples (blocks and head, limits, retention's dropped count) and
the [remote_write] config's refusals."""

from __future__ import annotations

import math
import sqlite3
import struct
from pathlib import Path

import cramjam
import pytest

from agent.config import ConfigError, parse_config
from agent.forward import Catalog, prometheus_labels, wire
from agent.forward.remotewrite import _Part
from agent.serve.metrics import metric_name
from storage import forwardcursor as fc
from storage.db import open_database
from storage.ingest import SampleStore
from storage.records import Sample, make_labels
from storage.retention import RetentionPolicy, run_retention

T0 = 1_700_000_000_000


# --- the wire format ---------------------------------------------------------------------------


def test_a_write_request_decodes_back_to_what_was_encoded() -> None:
    labels = (("__name__", "vigil_host_cpu_percent"), ("instance", "gpu-1"), ("job", "vigil"))
    series = [
        (labels, [T0, T0 + 1000, T0 + 2000], [12.5, 0.0, -3.25]),
        ((("__name__", "vigil_probe_up"), ("model", "llama")), [T0 + 5], [1.0]),
    ]
    body = wire.encode(series)
    assert wire.decode(body) == [
        (labels, [(T0, 12.5), (T0 + 1000, 0.0), (T0 + 2000, -3.25)]),
        ((("__name__", "vigil_probe_up"), ("model", "llama")), [(T0 + 5, 1.0)]),
    ]
    # Snappy's block format (not the framed one), around the protobuf: its first byte is the
    # tag of WriteRequest.timeseries (field 1, length-delimited).
    raw = bytes(cramjam.snappy.decompress_raw(body))
    assert raw[0] == (1 << 3) | 2
    assert len(body) < len(raw)


def test_the_fields_are_the_ones_prometheus_reads() -> None:
    """One series with one sample, laid out by hand from prompb's field numbers."""
    body = wire.encode([((("a", "b"),), [T0], [2.5])])
    raw = bytes(cramjam.snappy.decompress_raw(body))
    label = b"\x0a\x01a\x12\x01b"  # Label.name = 1, Label.value = 2
    sample = b"\x09" + struct.pack("<d", 2.5) + b"\x10" + _varint(T0)  # value = 1, timestamp = 2
    ts = b"\x0a" + bytes([len(label)]) + label + b"\x12" + bytes([len(sample)]) + sample
    assert raw == b"\x0a" + bytes([len(ts)]) + ts
    assert wire.HEADERS == {
        "Content-Encoding": "snappy",
        "Content-Type": "application/x-protobuf",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
    }


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_special_values_survive_the_wire() -> None:
    body = wire.encode([((("__name__", "x"),), [1, 2, 3], [math.inf, -0.0, 1e-300])])
    [(_, points)] = wire.decode(body)
    assert points == [(1, math.inf), (2, -0.0), (3, 1e-300)]


# --- names and labels ----------------------------------------------------------------------


def test_names_are_the_ones_metrics_gives() -> None:
    catalog = Catalog("gpu-1", (("job", "vigil"), ("region", "eu")))
    catalog.add(
        [
            (1, "host.cpu.percent", "{}"),
            (2, "host.cpu.percent", '{"core":"0"}'),
            (3, "host.disk.used_bytes", '{"mount":"/"}'),
            (4, "model.metric.vllm:num_requests", '{"model":"m","instance":"x:1","9x":"y"}'),
        ]
    )
    assert dict(catalog.labels(1)) == {
        "__name__": metric_name("host.cpu.percent"),
        "instance": "gpu-1",
        "job": "vigil",
        "region": "eu",
    }
    # A labelled part beside an unlabelled total: as /metrics names it.
    assert dict(catalog.labels(2))["__name__"] == "vigil_host_cpu_percent_by_core"
    assert dict(catalog.labels(3))["__name__"] == "vigil_host_disk_used_bytes"
    four = dict(catalog.labels(4))
    assert four["__name__"] == "vigil_model_metric_vllm_num_requests"
    assert four["exported_instance"] == "x:1" and four["instance"] == "gpu-1"
    assert four["_9x"] == "y"
    assert list(catalog.labels(4)) == sorted(catalog.labels(4))  # sorted by name, as required


def test_a_series_own_label_wins_over_a_configured_one() -> None:
    labels = prometheus_labels(
        "probe.up", [("job", "mine")], by_parts=False, host="h", extra=(("job", "vigil"),)
    )
    assert dict(labels)["job"] == "mine"


def test_a_new_total_renames_its_parts() -> None:
    catalog = Catalog("h", ())
    catalog.add([(1, "gpu.util.percent", '{"gpu":"0"}')])
    assert dict(catalog.labels(1))["__name__"] == "vigil_gpu_util_percent"
    catalog.add([(2, "gpu.util.percent", "{}")])
    assert dict(catalog.labels(1))["__name__"] == "vigil_gpu_util_percent_by_gpu"
    assert catalog.last_id == 2 and catalog.ids == [1, 2]


def test_a_part_splits_in_halves_in_order() -> None:
    part = _Part([(1, (), [1, 2, 3], [1.0, 2.0, 3.0]), (2, (), [4, 5], [4.0, 5.0])])
    left, right = part.halves()
    assert [c[2] for c in left.chunks] == [[1, 2]]
    assert [c[2] for c in right.chunks] == [[3], [4, 5]]
    assert left.ends() == {1: 2} and right.ends() == {1: 3, 2: 5}


# --- the cursor ------------------------------------------------------------------------------


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return open_database(tmp_path / "vigil.db")


def _store(conn: sqlite3.Connection, samples: list[Sample], block_samples: int = 16) -> None:
    store = SampleStore(block_samples=block_samples)
    conn.execute("BEGIN")
    staged = store.write(conn, samples)
    conn.execute("COMMIT")
    store.applied(staged)


def _series(n: int, name: str = "s", labels: dict[str, str] | None = None) -> list[Sample]:
    lab = make_labels(labels or {})
    return [Sample(name, lab, T0 + i * 1000, float(i)) for i in range(n)]


def test_a_read_takes_blocks_and_head_after_the_cursor(conn: sqlite3.Connection) -> None:
    _store(conn, _series(40))  # 16-sample blocks: two sealed, the rest in the head
    assert conn.execute("SELECT count(*) FROM sample_blocks").fetchone()[0] >= 2
    (sid,) = conn.execute("SELECT id FROM series").fetchone()
    everything = fc.read_batch(conn, [sid], {}, T0 - 1, 1000)
    assert everything.samples == 40 and not everything.full
    assert everything.chunks[0].ts == [T0 + i * 1000 for i in range(40)]
    assert everything.chunks[0].values == [float(i) for i in range(40)]
    # From inside the first block, at most 10.
    part = fc.read_batch(conn, [sid], {sid: T0 + 5_000}, T0 - 1, 10)
    assert part.full and part.chunks[0].ts == [T0 + i * 1000 for i in range(6, 16)]
    # Across the last block into the head.
    tail = fc.read_batch(conn, [sid], {sid: T0 + 30_000}, T0 - 1, 1000)
    assert tail.chunks[0].ts == [T0 + i * 1000 for i in range(31, 40)]
    assert fc.read_batch(conn, [sid], {sid: T0 + 39_000}, T0 - 1, 1000).samples == 0


def test_a_read_fills_its_limit_series_after_series(conn: sqlite3.Connection) -> None:
    _store(conn, _series(5, "a") + _series(5, "b") + _series(5, "c"))
    ids = [r[0] for r in conn.execute("SELECT id FROM series ORDER BY id")]
    batch = fc.read_batch(conn, ids, {}, T0 - 1, 7)
    assert batch.full and [len(c.ts) for c in batch.chunks] == [5, 2]
    # Without a cursor a series starts after the target's start.
    late = fc.read_batch(conn, ids, {}, T0 + 2_000, 100)
    assert [len(c.ts) for c in late.chunks] == [2, 2, 2]


def test_cursors_only_move_forward(conn: sqlite3.Connection) -> None:
    fc.open_target(conn, fc.TARGET, T0)
    fc.advance(conn, fc.TARGET, {1: T0 + 10, 2: T0 + 5})
    fc.advance(conn, fc.TARGET, {1: T0 + 3})
    state = fc.load_target(conn, fc.TARGET)
    assert state is not None and state.cursors == {1: T0 + 10, 2: T0 + 5}
    assert state.start_ms == T0
    fc.open_target(conn, fc.TARGET, T0 + 99)  # already there: kept as it is
    assert fc.load_target(conn, fc.TARGET).start_ms == T0  # type: ignore[union-attr]
    fc.forget_targets(conn)
    assert fc.load_target(conn, fc.TARGET) is None
    assert conn.execute("SELECT count(*) FROM remote_write_cursor").fetchone()[0] == 0


def test_retention_counts_what_was_never_sent_as_dropped(conn: sqlite3.Connection) -> None:
    _store(conn, _series(100, "a") + _series(100, "b"))
    ids = [r[0] for r in conn.execute("SELECT id FROM series ORDER BY id")]
    fc.open_target(conn, fc.TARGET, T0 - 1)
    fc.advance(conn, fc.TARGET, {ids[0]: T0 + 9_000})  # "a" sent up to its 10th sample
    # Raw samples older than T0 + 50 s go: 40 unsent of "a" (10..49), 50 of "b" (0..49).
    now = T0 + 50_000 + 86_400_000
    policy = RetentionPolicy(raw_ms=86_400_000, rollup_1m_ms=10**12, rollup_1h_ms=10**12)
    result = run_retention(conn, now, policy)
    assert result.deleted["samples"] == 100
    assert result.deleted["remote_write_dropped"] == 90
    assert fc.dropped_counts(conn, fc.TARGET) == (90, 0)
    state = fc.load_target(conn, fc.TARGET)
    assert state is not None and state.cursors == {ids[0]: T0 + 49_999, ids[1]: T0 + 49_999}
    # What is left is read from there, and nothing is counted twice.
    assert fc.read_batch(conn, ids, state.cursors, state.start_ms, 1000).samples == 100
    assert "remote_write_dropped" not in run_retention(conn, now, policy).deleted
    fc.mark_reported(conn, fc.TARGET, 90)
    assert fc.dropped_counts(conn, fc.TARGET) == (90, 90)


def test_retention_without_a_target_counts_nothing(conn: sqlite3.Connection) -> None:
    _store(conn, _series(50))
    policy = RetentionPolicy(raw_ms=1, rollup_1m_ms=10**12, rollup_1h_ms=10**12)
    result = run_retention(conn, T0 + 10**9, policy)
    assert result.deleted["samples"] == 50 and "remote_write_dropped" not in result.deleted


def test_count_between_decodes_only_the_edge_blocks(conn: sqlite3.Connection) -> None:
    _store(conn, _series(100))
    (sid,) = conn.execute("SELECT id FROM series").fetchone()
    assert fc.count_between(conn, sid, T0 + 4_500, T0 + 70_000) == 65  # 5..69
    assert fc.count_between(conn, sid, T0 - 1, T0 + 10**9) == 100


# --- the config ----------------------------------------------------------------------------


def _config(body: str, tmp_path: Path) -> str:
    return f'[agent]\ndata_dir = "{tmp_path}"\n\n[remote_write]\n{body}\n'


def test_the_config_fills_in_defaults(tmp_path: Path) -> None:
    cfg = parse_config(
        _config('url = "https://user:pw@mimir.example:443/api/v1/push?x=1"', tmp_path)
    )
    rw = cfg.remote_write
    assert rw is not None
    assert (rw.interval_s, rw.max_samples, rw.timeout_s) == (10.0, 2000, 30.0)
    assert rw.labels == ()
    assert rw.where == "https://mimir.example:443/api/v1/push"  # no credentials, no query
    assert parse_config(f'[agent]\ndata_dir = "{tmp_path}"\n').remote_write is None


def test_secrets_are_read_and_never_shown(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    body = f'url = "http://127.0.0.1:9090/api/v1/write"\nbearer_token_file = "{token}"'
    rw = parse_config(_config(body, tmp_path)).remote_write
    assert rw is not None and rw.bearer_token == "s3cret" and "s3cret" not in repr(rw)


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ('url = "ftp://x/y"', 5, "remote_write.url: expected an http:// or https:// URL"),
        ('url = "http://a"\ninterval = "10ms"', 6, "remote_write.interval: expected at least"),
        (
            'url = "http://a"\nmax_samples_per_request = 0',
            6,
            "remote_write.max_samples_per_request: expected a whole number of 1 or more",
        ),
        (
            'url = "http://a"\nbackoff_initial = "2m"\nbackoff_max = "1m"',
            6,
            "remote_write.backoff_initial: expected a delay no longer than backoff_max",
        ),
        ('url = "http://a"\nlabels = { instance = "x" }', 6, "'instance' is set by the agent"),
        ('url = "http://a"\nlabels = { "a-b" = "x" }', 6, "label name 'a-b': expected"),
        ('url = "http://a"\nlabels = { team = "" }', 6, "label 'team': expected a value"),
        ('url = "http://a"\nusername = "u"', 6, "remote_write.username: a username needs"),
        ('url = "http://a"\nca_file = "/etc/ca.pem"', 6, "remote_write.ca_file: a CA file is for"),
        ('url = "http://a"\nbatch = 5', 6, "remote_write.batch: unknown key"),
        (
            'url = "http://a"\nbearer_token_env = "VIGIL_NO_SUCH_VAR"',
            6,
            "remote_write.bearer_token_env: the environment variable VIGIL_NO_SUCH_VAR",
        ),
    ],
)
def test_a_bad_table_is_refused_with_file_line_and_field(
    tmp_path: Path, body: str, line: int, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_config(body, tmp_path), "/etc/vigil/vigil.toml")
    assert f"/etc/vigil/vigil.toml:{line}:" in str(err.value)
    assert message in str(err.value)


def test_a_url_with_credentials_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_config('url = "ftp://me:hunter2@x/"', tmp_path))
    assert "hunter2" not in str(err.value)


def test_remote_write_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"remote_write: expected a table \[remote_write\]"):
        parse_config('remote_write = "http://x"\n')


def test_an_agent_loads_the_wire_libraries_only_when_it_sends() -> None:
    import json
    import subprocess
    import sys

    from tests.helpers import ROOT, child_env

    code = (
        "import sys, json\n"
        "import agent.runtime.daemon\n"
        "from agent.config import parse_config\n"
        "parse_config('[remote_write]\\nurl = \"http://127.0.0.1:9/api/v1/write\"\\n')\n"
        "wire = ('google.protobuf', 'cramjam')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(wire))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
