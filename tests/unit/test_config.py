"""Unit tests for the agent's TOML config (agent.config) and the shared units (storage.units)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import (
    DEFAULT_PORT,
    Config,
    ConfigError,
    default_data_dir,
    load_config,
    parse_config,
)
from storage.units import UNITS_S, format_bytes, format_duration, parse_duration

CFG = Path("/etc/vigil/test.toml")

FULL = """\
# Vigil test configuration
[agent]
host = "gpu-07"
data_dir = "/var/tmp/vigil-test"
listen = "0.0.0.0:9000"
allow_insecure_listen = true
sample_interval = "500ms"
retention = "2d"
log_level = "debug"

[[process]]
name = "llama-server"
command = ["llama-server", "--port", "8080", "-m", "model.gguf"]
cwd = "/srv/llama"
env = { CUDA_VISIBLE_DEVICES = "0", OMP_NUM_THREADS = "8" }
restart = "always"
stop_signal = "SIGINT"
stop_timeout = "30s"
backoff_initial = "500ms"
backoff_max = "5m"

[[process]]
name = "triton"
command = ["tritonserver", "--model-repository=/models"]
restart = "never"

[[model]]
name = "llama"
protocol = "http"
url = "http://127.0.0.1:8080/health"
interval = "5m"
timeout = "1h30m"
process = "llama-server"

[model.canary]
method = "POST"
body = '{"prompt": "hi"}'
expect_status = [200, "2xx"]
expect_body_regex = "ok"
max_latency = "250ms"
headers = { Authorization = "Bearer x" }

[[model]]
name = "resnet"
protocol = "kserve_v2"
url = "https://triton.local:8000"
process = "triton"
canary = { model = "resnet50", check_ready = false, max_latency = "1s" }
"""


def line_of(text: str, needle: str, nth: int = 0) -> int:
    """1-based line of the ``nth`` line containing ``needle``."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return hits[nth]


def refused(text: str, path: Path | str = CFG) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, path)
    return info.value


def check_error(err: ConfigError, *, field: str | None, line: int | None, expected: str) -> None:
    """The error names the file, the field, the line and what was expected."""
    msg = str(err)
    assert str(CFG) in msg
    assert err.path == CFG
    assert err.field == field
    if field is not None:
        assert field in msg
    assert err.line == line, msg
    if line is not None:
        assert f"{CFG}:{line}:" in msg
    assert expected in msg, msg


# --- valid files ----------------------------------------------------------------------------


def test_full_config_parses_into_typed_values() -> None:
    cfg = parse_config(FULL, CFG)
    assert isinstance(cfg, Config)
    assert cfg.path == CFG

    a = cfg.agent
    assert a.host == "gpu-07"
    assert a.data_dir == Path("/var/tmp/vigil-test")
    assert (a.listen_host, a.listen_port) == ("0.0.0.0", 9000)
    assert a.sample_interval_s == 0.5
    assert a.retention_s == 2 * 86400
    assert a.log_level == "debug"

    assert [p.name for p in cfg.processes] == ["llama-server", "triton"]
    p0, p1 = cfg.processes
    assert p0.command == ("llama-server", "--port", "8080", "-m", "model.gguf")
    assert isinstance(p0.command, tuple)
    assert p0.cwd == Path("/srv/llama")
    assert dict(p0.env) == {"CUDA_VISIBLE_DEVICES": "0", "OMP_NUM_THREADS": "8"}
    assert p0.restart == "always"
    assert p0.stop_signal == "SIGINT"
    assert p0.stop_timeout_s == 30.0
    assert p0.backoff_initial_s == 0.5
    assert p0.backoff_max_s == 300.0
    # Defaults where the file says nothing.
    assert p1.command == ("tritonserver", "--model-repository=/models")
    assert p1.cwd is None
    assert dict(p1.env) == {}
    assert p1.restart == "never"
    assert p1.stop_signal == "SIGTERM"
    assert (p1.stop_timeout_s, p1.backoff_initial_s, p1.backoff_max_s) == (10.0, 1.0, 300.0)

    assert [m.name for m in cfg.models] == ["llama", "resnet"]
    m0, m1 = cfg.models
    assert (m0.protocol, m0.url) == ("http", "http://127.0.0.1:8080/health")
    assert m0.interval_s == 300.0
    assert m0.timeout_s == 5400.0
    assert m0.process == "llama-server"
    assert dict(m0.canary) == {
        "method": "POST",
        "body": '{"prompt": "hi"}',
        "expect_status": [200, "2xx"],
        "expect_body_regex": "ok",
        "max_latency": "250ms",
        "headers": {"Authorization": "Bearer x"},
    }
    assert (m1.protocol, m1.url, m1.process) == ("kserve_v2", "https://triton.local:8000", "triton")
    assert (m1.interval_s, m1.timeout_s) == (10.0, 5.0)
    assert dict(m1.canary) == {"model": "resnet50", "check_ready": False, "max_latency": "1s"}


def test_config_objects_are_frozen() -> None:
    cfg = parse_config(FULL, CFG)
    with pytest.raises(AttributeError):
        cfg.agent.host = "other"  # type: ignore[misc]


def test_agent_defaults() -> None:
    cfg = parse_config('[[model]]\nname = "m"\nprotocol = "http"\nurl = "http://h/"\n', CFG)
    a = cfg.agent
    assert a.host == socket.gethostname()
    assert (a.listen_host, a.listen_port) == ("127.0.0.1", DEFAULT_PORT)
    assert DEFAULT_PORT == 8470
    assert a.data_dir == default_data_dir()
    assert (a.sample_interval_s, a.retention_s, a.log_level) == (1.0, 2 * 86400.0, "info")
    assert cfg.processes == ()
    m = cfg.models[0]
    assert (m.interval_s, m.timeout_s, m.process, dict(m.canary)) == (10.0, 5.0, None, {})


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file_is_valid_with_defaults(text: str) -> None:
    cfg = parse_config(text, CFG)
    assert cfg.models == () and cfg.processes == ()
    assert cfg.agent.host == socket.gethostname()
    assert cfg.agent.listen_port == DEFAULT_PORT


def test_ipv6_listen_and_port_zero() -> None:
    cfg = parse_config('[agent]\nlisten = "[::1]:0"\n', CFG)
    assert (cfg.agent.listen_host, cfg.agent.listen_port) == ("::1", 0)


def test_data_dir_expands_user() -> None:
    cfg = parse_config('[agent]\ndata_dir = "~/vigil-data"\n', CFG)
    assert cfg.agent.data_dir == Path.home() / "vigil-data"


def test_default_data_dir_follows_xdg_for_non_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert default_data_dir() == tmp_path / "vigil"
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert default_data_dir() == Path("/var/lib/vigil")


def test_load_config_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "vigil.toml"
    path.write_text(FULL, encoding="utf-8")
    cfg = load_config(path)
    assert cfg.path == path
    assert cfg == parse_config(FULL, path)


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "cannot read" in str(info.value)


def test_load_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'[agent]\nhost = "\xff\xfe"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "UTF-8" in str(info.value)


def test_load_config_reports_its_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "vigil.toml"
    path.write_text('[agent]\nlog_level = "loud"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:2: agent.log_level: expected one of")


# --- every kind of mistake ------------------------------------------------------------------

TWO_MODELS = """\
[[model]]
name = "a"
protocol = "http"
url = "http://127.0.0.1:1/"

[[model]]
name = "b"
protocol = "http"
url = "http://127.0.0.1:2/"
{extra}
"""


def second_model(extra: str) -> str:
    return TWO_MODELS.replace("{extra}", extra)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("interval = 10", "expected a duration such as '500ms'"),
        ("interval = 2.5", "got a float 2.5"),
        ("interval = true", "got a boolean"),
        ('interval = "10 sec"', "expected a duration"),
        ('interval = "-5s"', "expected a positive duration"),
        ('interval = "0s"', "expected a positive duration"),
        ('interval = ""', "expected a duration"),
        ('interval = "5"', "expected a duration"),
    ],
)
def test_bad_model_interval(extra: str, expected: str) -> None:
    text = second_model(extra)
    err = refused(text)
    check_error(err, field="model[1].interval", line=line_of(text, "interval"), expected=expected)


@pytest.mark.parametrize("jitter", ["10s", "12s"])
def test_jitter_not_shorter_than_the_interval_is_refused(jitter: str) -> None:
    text = second_model(f'interval = "10s"\njitter = "{jitter}"')
    err = refused(text)
    check_error(
        err,
        field="model[1].jitter",
        line=line_of(text, "jitter"),
        expected="expected a duration shorter than the interval (10.0s)",
    )


def test_integer_interval_message_names_the_type() -> None:
    text = second_model("interval = 10")
    msg = str(refused(text))
    assert "got an integer 10" in msg
    assert "units: ms s m h d w y" in msg


def test_wrong_type_name() -> None:
    text = '[[model]]\nname = 5\nprotocol = "http"\nurl = "http://h/"\n'
    check_error(
        refused(text), field="model[0].name", line=2, expected="expected a name, got an integer 5"
    )


@pytest.mark.parametrize("name", ["", "-lead", "has space", "x" * 65, "a/b"])
def test_bad_name_syntax(name: str) -> None:
    text = f'[[process]]\nname = "{name}"\ncommand = ["x"]\n'
    check_error(refused(text), field="process[0].name", line=2, expected="expected a name of")


def test_shell_string_command_is_refused() -> None:
    text = '[[process]]\nname = "srv"\ncommand = "python server.py"\n'
    err = refused(text)
    check_error(err, field="process[0].command", line=3, expected="expected an argv list")
    assert "shell string" in str(err)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["python", 3]', "item 1 is an integer 3"),
        ("[]", "expected a non-empty list of strings"),
        ("5", "expected a list of strings, got an integer"),
    ],
)
def test_bad_command_list(value: str, expected: str) -> None:
    text = f'[[process]]\nname = "srv"\ncommand = {value}\n'
    check_error(refused(text), field="process[0].command", line=3, expected=expected)


def test_unknown_key_in_model_typo() -> None:
    text = second_model('intervall = "10s"')
    err = refused(text)
    check_error(
        err,
        field="model[1].intervall",
        line=line_of(text, "intervall"),
        expected="unknown key; expected one of:",
    )
    # The list of what was expected includes the key the user meant.
    assert "interval" in str(err).split("expected one of:")[1]


def test_unknown_key_in_agent() -> None:
    text = '[agent]\nhost = "h"\nlisten_port = 9000\n'
    err = refused(text)
    check_error(err, field="agent.listen_port", line=3, expected="unknown key; expected one of:")
    assert "listen" in str(err).split("expected one of:")[1]


def test_unknown_key_in_process() -> None:
    text = '[[process]]\nname = "p"\ncommand = ["x"]\nrestart_policy = "always"\n'
    check_error(
        refused(text),
        field="process[0].restart_policy",
        line=4,
        expected="unknown key; expected one of:",
    )


def test_unknown_top_level_table() -> None:
    text = '[agent]\nhost = "h"\n\n[modle]\nname = "x"\n'
    check_error(
        refused(text), field="modle", line=4, expected="expected [agent], [[model]] or [[process]]"
    )


def test_unknown_top_level_array_of_tables() -> None:
    text = '[[proces]]\nname = "x"\n'
    check_error(
        refused(text), field="proces", line=1, expected="expected [agent], [[model]] or [[process]]"
    )


def test_unknown_top_level_key() -> None:
    text = "# vigil configuration\nvigil = 1\n[agent]\n"
    check_error(
        refused(text), field="vigil", line=2, expected="expected [agent], [[model]] or [[process]]"
    )


def test_unknown_subtable_in_agent() -> None:
    text = '[agent]\nhost = "h"\n\n[agent.extra]\nx = 1\n'
    check_error(refused(text), field="agent.extra", line=4, expected="unknown key")


@pytest.mark.parametrize(
    ("extra", "field", "expected"),
    [
        ('sample_interval = "10 sec"', "agent.sample_interval", "expected a duration"),
        ('sample_interval = "50ms"', "agent.sample_interval", "expected at least 100ms"),
        ('retention = "-5s"', "agent.retention", "expected a positive duration"),
        ('retention = "0s"', "agent.retention", "expected a positive duration"),
        ("retention = false", "agent.retention", "got a boolean"),
        ('log_level = "verbose"', "agent.log_level", "expected one of 'debug', 'info'"),
        ("host = 5", "agent.host", "expected a string, got an integer 5"),
    ],
)
def test_bad_agent_values(extra: str, field: str, expected: str) -> None:
    text = f'# comment\n[agent]\nhost = "h"\n{extra}\n'
    if extra.startswith("host"):
        text = f"# comment\n[agent]\n{extra}\n"
    check_error(refused(text), field=field, line=line_of(text, extra), expected=expected)


@pytest.mark.parametrize(
    "listen", ["localhost", "1.2.3.4:99999", "1.2.3.4:", ":8470", "1.2.3.4:http", "1.2.3.4:-1"]
)
def test_bad_listen(listen: str) -> None:
    text = f'[agent]\nhost = "h"\nlisten = "{listen}"\n'
    check_error(
        refused(text), field="agent.listen", line=3, expected="expected 'HOST:PORT' (port 0-65535"
    )


DUP_MODELS = TWO_MODELS.replace('name = "b"', 'name = "a"').replace("{extra}", "")
DUP_PROCESSES = """\
[[process]]
name = "p"
command = ["x"]

[[process]]
name = "q"
command = ["y"]

[[process]]
name = "p"
command = ["z"]
"""


@pytest.mark.parametrize(
    ("kind", "text", "index"),
    [
        ("model", DUP_MODELS, 1),
        ("process", DUP_PROCESSES, 2),
    ],
)
def test_duplicate_names(kind: str, text: str, index: int) -> None:
    err = refused(text)
    check_error(
        err,
        field=f"{kind}[{index}].name",
        line=line_of(text, "name = ", index),
        expected=f"expected every {kind} to have its own name",
    )
    assert "duplicate name" in str(err)
    assert f"also {kind}[0]" in str(err)


@pytest.mark.parametrize(
    ("missing", "expected"),
    [
        ("url", "missing required field; expected a string"),
        ("protocol", "missing required field; expected one of"),
        ("name", "missing required field; expected a name"),
    ],
)
def test_model_missing_field(missing: str, expected: str) -> None:
    lines = ['name = "b"', 'protocol = "http"', 'url = "http://127.0.0.1:2/"']
    body = "\n".join(x for x in lines if not x.startswith(missing))
    text = f'[[model]]\nname = "a"\nprotocol = "http"\nurl = "http://h/"\n\n[[model]]\n{body}\n'
    # A missing key cannot be pointed at: the error points at its table's header.
    check_error(refused(text), field=f"model[1].{missing}", line=6, expected=expected)


def test_process_missing_command() -> None:
    text = '[agent]\n\n[[process]]\nname = "p"\nrestart = "always"\n'
    check_error(
        refused(text),
        field="process[0].command",
        line=3,
        expected="missing required field; expected a list of strings",
    )


def test_bad_restart_policy() -> None:
    text = '[[process]]\nname = "p"\ncommand = ["x"]\nrestart = "sometimes"\n'
    check_error(
        refused(text),
        field="process[0].restart",
        line=4,
        expected="expected one of 'always', 'on-failure', 'never'",
    )


@pytest.mark.parametrize("sig", ["TERM", "SIGFOO", "sigterm", "SIG_DFL", "SIG_IGN", "SIG_BLOCK"])
def test_bad_stop_signal(sig: str) -> None:
    text = f'[[process]]\nname = "p"\ncommand = ["x"]\nstop_signal = "{sig}"\n'
    check_error(
        refused(text),
        field="process[0].stop_signal",
        line=4,
        expected="expected a signal name such as 'SIGTERM'",
    )


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGKILL", "SIGQUIT", "SIGUSR1"])
def test_good_stop_signal(sig: str) -> None:
    text = f'[[process]]\nname = "p"\ncommand = ["x"]\nstop_signal = "{sig}"\n'
    assert parse_config(text, CFG).processes[0].stop_signal == sig


@pytest.mark.parametrize(
    ("extra", "field", "expected"),
    [
        ("env = { A = 1 }", "process[0].env", "expected a table of strings; 'A' is an integer 1"),
        ('env = "A=1"', "process[0].env", "expected a table of strings, got a string"),
        ("cwd = 5", "process[0].cwd", "expected a string, got an integer"),
        ('stop_timeout = "soon"', "process[0].stop_timeout", "expected a duration"),
        ("backoff_max = 300", "process[0].backoff_max", "expected a duration"),
    ],
)
def test_bad_process_values(extra: str, field: str, expected: str) -> None:
    text = f'[[process]]\nname = "p"\ncommand = ["x"]\n{extra}\n'
    check_error(refused(text), field=field, line=4, expected=expected)


def test_unknown_protocol() -> None:
    text = second_model("").replace(
        'protocol = "http"\nurl = "http://127.0.0.1:2/"',
        'protocol = "grpc"\nurl = "http://127.0.0.1:2/"',
    )
    err = refused(text)
    check_error(
        err,
        field="model[1].protocol",
        line=line_of(text, "grpc"),
        expected="expected one of 'http', 'kserve_v2', ",
    )
    assert "'grpc'" in str(err)
    for protocol in ("ollama", "openai", "tcp", "tgi"):
        assert repr(protocol) in str(err)


@pytest.mark.parametrize(
    ("protocol", "url", "expected"),
    [
        ("http", "ftp://h/", "expected an http:// or https:// URL"),
        ("http", "127.0.0.1:8080", "expected an http:// or https:// URL"),
        ("tcp", "http://h:1/", "expected 'tcp://HOST:PORT'"),
    ],
)
def test_bad_url_for_protocol(protocol: str, url: str, expected: str) -> None:
    text = f'[[model]]\nname = "m"\nprotocol = "{protocol}"\nurl = "{url}"\n'
    check_error(refused(text), field="model[0].url", line=4, expected=expected)


def test_unknown_canary_option_in_subtable() -> None:
    text = second_model('\n[model.canary]\nmethod = "GET"\nexpect_stauts = 200\n')
    err = refused(text)
    check_error(
        err,
        field="model[1].canary.expect_stauts",
        line=line_of(text, "expect_stauts"),
        expected="unknown canary option for protocol 'http'; expected one of:",
    )
    assert "expect_status" in str(err)


def test_unknown_canary_option_inline() -> None:
    text = (
        '[[model]]\nname = "m"\nprotocol = "kserve_v2"\nurl = "http://h/"\n'
        'canary = { model = "x", temperature = 0.5 }\n'
    )
    check_error(
        refused(text),
        field="model[0].canary.temperature",
        line=5,
        expected="unknown canary option for protocol 'kserve_v2'",
    )


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ('method = "FETCH"', "expected one of DELETE, GET"),
        ('expect_status = [200, "7xx"]', "expected HTTP statuses (100-599)"),
        ("max_latency = -1", "expected a positive duration"),
        ('expect_body_regex = "("', "expected a regular expression"),
    ],
)
def test_bad_canary_option_value(option: str, expected: str) -> None:
    text = (
        '[[model]]\nname = "m"\nprotocol = "http"\nurl = "http://h/"\n\n'
        f'[model.canary]\nbody = "x"\n{option}\n'
    )
    key = option.split(" ", maxsplit=1)[0]
    check_error(refused(text), field=f"model[0].canary.{key}", line=8, expected=expected)


def test_canary_must_be_a_table() -> None:
    text = '[[model]]\nname = "m"\nprotocol = "http"\nurl = "http://h/"\ncanary = "GET /"\n'
    check_error(
        refused(text), field="model[0].canary", line=5, expected="expected a table, got a string"
    )


def test_model_names_unknown_process() -> None:
    text = '[[process]]\nname = "srv"\ncommand = ["x"]\n\n' + second_model('process = "svr"')
    err = refused(text)
    check_error(
        err,
        field="model[1].process",
        line=line_of(text, 'process = "svr"'),
        expected="expected one of: srv",
    )
    assert "'svr'" in str(err)


def test_model_names_process_when_there_are_none() -> None:
    text = '[[model]]\nname = "m"\nprotocol = "tcp"\nurl = "tcp://h:1"\nprocess = "x"\n'
    check_error(refused(text), field="model[0].process", line=5, expected="expected one of: none")


# --- API keys ---------------------------------------------------------------------------------


def keyed_model(extra: str) -> str:
    """A model whose API key setting (``extra``) is on line 5."""
    return f'[[model]]\nname = "m"\nprotocol = "http"\nurl = "http://h/"\n{extra}\n'


def test_api_key_file_is_read_and_stripped(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("  sk-file-123 \n\n", encoding="utf-8")  # as `echo` and editors leave it
    cfg = parse_config(keyed_model(f'api_key_file = "{key}"'), CFG)
    model = cfg.models[0]
    assert model.api_key == "sk-file-123"
    assert model.api_key_file == key and model.api_key_env is None
    assert "sk-file-123" not in repr(cfg)  # never printed, not even in a debug dump


def test_api_key_file_expands_the_home_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "key").write_text("sk-home\n", encoding="utf-8")
    model = parse_config(keyed_model('api_key_file = "~/key"'), CFG).models[0]
    assert (model.api_key_file, model.api_key) == (tmp_path / "key", "sk-home")


@pytest.mark.parametrize("content", ["", "\n", "  \t\n\n"])
def test_empty_api_key_file_is_refused(tmp_path: Path, content: str) -> None:
    key = tmp_path / "key"
    key.write_text(content, encoding="utf-8")
    check_error(
        refused(keyed_model(f'api_key_file = "{key}"')),
        field="model[0].api_key_file",
        line=5,
        expected=f"{key} is empty (expected the API key)",
    )


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda key: None, "No such file or directory"),
        (lambda key: key.mkdir(), "Is a directory"),
    ],
    ids=["missing", "a-directory"],
)
def test_unreadable_api_key_file_is_refused(
    tmp_path: Path, make: Callable[[Path], object], reason: str
) -> None:
    key = tmp_path / "key"
    make(key)
    check_error(
        refused(keyed_model(f'api_key_file = "{key}"')),
        field="model[0].api_key_file",
        line=5,
        expected=f"cannot read {key}: {reason}",
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_api_key_file_without_read_permission_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-x\n", encoding="utf-8")
    key.chmod(0)
    check_error(
        refused(keyed_model(f'api_key_file = "{key}"')),
        field="model[0].api_key_file",
        line=5,
        expected=f"cannot read {key}: Permission denied",
    )


def test_api_key_file_that_is_not_text_is_refused(tmp_path: Path) -> None:
    # A ConfigError, not a UnicodeDecodeError: a reload keeps the running config only on the
    # former, and `vigil agent run` exits 2 naming the field rather than with a traceback.
    key = tmp_path / "key"
    key.write_bytes(b"\xff\xfe\x00k\x00e\x00y")  # UTF-16, as some Windows editors save
    check_error(
        refused(keyed_model(f'api_key_file = "{key}"')),
        field="model[0].api_key_file",
        line=5,
        expected=f"{key} is not UTF-8 text (expected the API key)",
    )


def test_api_key_env_and_api_key_file_together_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refused even when both would work: which one wins is not for the reader to guess.
    monkeypatch.setenv("VIGIL_TEST_KEY", "sk-env")
    key = tmp_path / "key"
    key.write_text("sk-file\n", encoding="utf-8")
    text = keyed_model(f'api_key_env = "VIGIL_TEST_KEY"\napi_key_file = "{key}"')
    check_error(
        refused(text),
        field="model[0].api_key_file",
        line=6,
        expected="expected api_key_env or api_key_file, not both",
    )


def test_api_key_env_is_read_and_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_TEST_KEY", " sk-env-456\n")
    model = parse_config(keyed_model('api_key_env = "VIGIL_TEST_KEY"'), CFG).models[0]
    assert model.api_key == "sk-env-456"


@pytest.mark.parametrize("value", [None, "", "  \n"], ids=["unset", "empty", "blank"])
def test_api_key_env_without_a_key_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("VIGIL_TEST_KEY", raising=False)
    else:
        monkeypatch.setenv("VIGIL_TEST_KEY", value)
    check_error(
        refused(keyed_model('api_key_env = "VIGIL_TEST_KEY"')),
        field="model[0].api_key_env",
        line=5,
        expected="the environment variable VIGIL_TEST_KEY is unset or empty",
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[agent]\nhost = "h"\nlisten = \n', 3),
        ('[agent]\nhost = "h"\n\n[[model]\nname = "x"\n', 4),
        ('[agent]\nhost = "unterminated\n', 2),
        ('[agent]\nhost = "a"\nhost = "b"\n', 3),
    ],
)
def test_toml_syntax_error_reports_the_line(text: str, line: int) -> None:
    err = refused(text)
    assert err.line == line
    assert err.field is None
    assert str(err).startswith(f"{CFG}:{line}: not valid TOML")


def test_agent_must_be_a_table() -> None:
    check_error(
        refused('agent = "x"\n'), field="agent", line=None, expected="expected a table [agent]"
    )


def test_model_must_be_an_array_of_tables() -> None:
    check_error(
        refused('model = "x"\n'),
        field="model",
        line=None,
        expected="expected an array of tables [[model]]",
    )


def test_error_without_a_file_uses_a_placeholder_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[agent]\nbogus = 1\n")
    assert str(info.value).startswith("<config>:2: agent.bogus:")


def test_config_error_attributes() -> None:
    err = ConfigError("/x.toml", "bad", field="agent.host", line=7)
    assert (err.path, err.field, err.line, err.reason) == (Path("/x.toml"), "agent.host", 7, "bad")
    assert str(err) == "/x.toml:7: agent.host: bad"
    assert str(ConfigError("/x.toml", "bad")) == "/x.toml: bad"


# --- storage.units ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("1y", 365 * 86400.0),
        ("1.5s", 1.5),
        ("1m30s500ms", 90.5),
        (" 10s ", 10.0),
        ("-5m", -300.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "junk",
    [
        "",
        " ",
        "10",
        "10 sec",
        "10sec",
        "s",
        "1h 30m",
        "ten s",
        "--5s",
        "5s-",
        "1.s",
        ".5s",
        "5S",
        "1e3s",
        "-",
    ],
)
def test_parse_duration_refuses_junk(junk: str) -> None:
    with pytest.raises(ValueError, match="expected") as info:
        parse_duration(junk)
    assert repr(junk) in str(info.value)


@given(n=st.integers(min_value=0, max_value=10**6), unit=st.sampled_from(sorted(UNITS_S)))
def test_parse_duration_property(n: int, unit: str) -> None:
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * UNITS_S[unit])


@given(
    parts=st.lists(
        st.tuples(st.integers(0, 1000), st.sampled_from(sorted(UNITS_S))), min_size=1, max_size=5
    )
)
def test_parse_duration_sums_parts(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{u}" for n, u in parts)
    assert parse_duration(text) == pytest.approx(sum(n * UNITS_S[u] for n, u in parts))


@given(junk=st.text(alphabet="abcxyz !?#/,=", min_size=1, max_size=12))
def test_parse_duration_junk_property(junk: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_duration(junk)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.95, "950ms"),
        (0.0004, "0ms"),
        (1, "1s"),
        (42, "42s"),
        (60, "1m"),
        (192, "3m12s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (3661, "1h1m"),
        (86400 * 2 + 4 * 3600 + 59, "2d4h"),
        (86400 + 30, "1d30s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=1, max_value=10**8))
def test_format_duration_output_parses(seconds: int) -> None:
    # Formatting keeps at most two units, so it is not exact, but it is always parseable and
    # never more than the input.
    out = format_duration(seconds)
    assert 0 < parse_duration(out) <= seconds


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0B"),
        (512, "512B"),
        (1023, "1023B"),
        (1024, "1.0KiB"),
        (1536, "1.5KiB"),
        (5 * 1024**2, "5.0MiB"),
        (int(3.2 * 1024**3), "3.2GiB"),
        (2 * 1024**4, "2.0TiB"),
        (5000 * 1024**4, "5000.0TiB"),
        (-2048, "-2.0KiB"),
    ],
)
def test_format_bytes(n: float, text: str) -> None:
    assert format_bytes(n) == text


# --- what the schema refuses that the old validator let through ------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+inf", "-nan"])
@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('[[process]]\nname = "p"\ncommand = ["x"]\n', "backoff_jitter"),
        ('[[process]]\nname = "p"\ncommand = ["x"]\n', "backoff_factor"),
        (
            '[[model]]\nname = "m"\nprotocol = "tcp"\nurl = "tcp://h:1"\n[model.drift]\n',
            "ratio",
        ),
    ],
)
def test_non_finite_numbers_are_refused(table: str, key: str, value: str) -> None:
    # TOML has nan and inf; no setting means either (inf slips past "at least 1", nan past
    # every comparison), so the schema refuses them for every float.
    text = f"{table}{key} = {value}\n"
    err = refused(text)
    assert err.field is not None and err.field.endswith(key)
    assert err.line == line_of(text, f"{key} =")
    assert "expected a finite number" in err.reason


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('[agent]\nsample_interval = "99999999999999999999999y"\n', "agent.sample_interval"),
        ('[agent]\nretention = "101y"\n', "agent.retention"),
        ('[agent]\nretention_events = "5000000w"\n', "agent.retention_events"),
        (second_model('interval = "200y"'), "model[1].interval"),
        (second_model('timeout = "99999999999d"'), "model[1].timeout"),
        (
            '[[process]]\nname = "p"\ncommand = ["x"]\nbackoff_max = "1000y"\n',
            "process[0].backoff_max",
        ),
    ],
)
def test_durations_beyond_a_century_are_refused(extra: str, field: str) -> None:
    # Such a duration used to pass check-config and then crash the agent's scheduler
    # (OverflowError in datetime arithmetic).
    err = refused(extra)
    assert err.field == field
    assert "expected a duration of at most 100y" in err.reason
    assert err.line == line_of(extra, field.rsplit(".", 1)[1] + " =")


def test_a_century_is_still_a_duration() -> None:
    cfg = parse_config('[agent]\nretention_events = "100y"\n', CFG)
    assert cfg.agent.retention_events_s == 100 * 365 * 86400.0


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    ("protocol", "key"),
    [
        ("openai", "temperature"),
        ("openai", "min_tokens_per_s"),
        ("ollama", "temperature"),
        ("tgi", "min_tokens_per_s"),
        ("onnx", "rtol"),
        ("onnx", "atol"),
    ],
)
def test_non_finite_canary_numbers_are_refused(protocol: str, key: str, value: str) -> None:
    url = "file:///m.onnx" if protocol == "onnx" else "http://h/"
    text = (
        f'[[model]]\nname = "m"\nprotocol = "{protocol}"\nurl = "{url}"\n\n'
        f"[model.canary]\n{key} = {value}\n"
    )
    check_error(refused(text), field=f"model[0].canary.{key}", line=7, expected="expected")
    assert value.lstrip("+-") in str(refused(text))


@pytest.mark.parametrize("protocol", ["openai", "tcp", "http", "kserve_v2"])
def test_canary_latency_bounds_beyond_a_century_are_refused(protocol: str) -> None:
    url = "tcp://h:1" if protocol == "tcp" else "http://h/"
    text = (
        f'[[model]]\nname = "m"\nprotocol = "{protocol}"\nurl = "{url}"\n\n'
        '[model.canary]\nmax_latency = "101y"\n'
    )
    check_error(refused(text), field="model[0].canary.max_latency", line=7, expected="got '101y'")
