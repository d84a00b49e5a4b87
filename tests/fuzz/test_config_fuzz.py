"""The agent's config: valid files with one field mutated, through ``parse_config`` and
``load_config``. The documented outcome of a bad file is :class:`agent.config.ConfigError`
(file, line, field, what was expected); anything else escaping is a bug, and so is a hang.

The seeds are every whole config the docs show (docs/configuration.md, docs/deploy.md: the
same blocks tests/unit/test_docs.py runs through check-config, so they cover every table the
docs describe) and one written here with every process kind. What a docs block needs of the
host (an environment variable, a user, a file) is provided for the module's duration.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import Config, ConfigError, load_config, parse_config
from tests.fuzz.mutate import dump_toml, mutate
from tests.fuzz.support import budget, deadline, outcome
from tests.unit.test_docs import TEST_CA_PEM

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "docs" / "configuration.md", ROOT / "docs" / "deploy.md"]
FENCE = re.compile(r"^```toml\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--[ \t]*([^\n]*?)[ \t]*-->[ \t]*\n\Z")

HERE_SEED = """
[agent]
host = "gpu-07"
data_dir = "/var/tmp/vigil-fuzz"
listen = "127.0.0.1:0"
sample_interval = "500ms"
retention = "2d"
retention_1m = "30d"

[[process]]
name = "llama"
command = ["llama-server", "--port", "8080"]
env = { CUDA_VISIBLE_DEVICES = "0" }
cwd = "~/models"
user = "root"
restart = "always"
stop_signal = "SIGINT"
backoff_initial = "500ms"
backoff_factor = 1.5
backoff_jitter = 0.2
backoff_max = "5m"
depends_on = ["helper"]
port = 8080

[[process]]
name = "helper"
match = "^helper( |$)"
remediation = ["systemctl", "restart", "helper"]

[[process]]
name = "unit"
systemd_unit = "triton.service"
restart = "never"

[[model]]
name = "llama"
protocol = "openai"
url = "http://127.0.0.1:8080"
process = "llama"
interval = "10s"
jitter = "2s"
timeout = "5s"
api_key_env = "VIGIL_FUZZ_API_KEY"
canary = { prompt = "Say hi", max_tokens = 4, max_ttft = "2s", expect_regex = "^[Hh]i" }
drift = { window = 20, baseline = 100, ratio = 1.5 }

[[model]]
name = "probe-tcp"
protocol = "tcp"
url = "tcp://127.0.0.1:9000"
"""


def _blocks() -> Iterator[tuple[str, str]]:
    """(the marker's text, the block) for every ```toml block of the pages."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            marker = MARKER.search(text, 0, m.start())
            yield (marker.group(1) if marker else ""), m.group(1)


@pytest.fixture(scope="module")
def seeds() -> Iterator[list[dict[str, Any]]]:
    """The valid configs mutations start from, as TOML documents (each one parses)."""
    files = Path(tempfile.mkdtemp(prefix="vigil-fuzz-config-"))
    with pytest.MonkeyPatch.context() as mp:
        real, me = pwd.getpwnam, pwd.getpwuid(os.getuid()).pw_name
        users: set[str] = set()
        mp.setattr(pwd, "getpwnam", lambda user: real(me if user in users else user))
        mp.setenv("VIGIL_FUZZ_API_KEY", "fuzz-secret")
        docs: list[dict[str, Any]] = [tomllib.loads(HERE_SEED)]
        for marker, block in _blocks():
            kind, _, arg = marker.partition(":")
            needs = [n.strip().partition(" ") for n in arg.split(";") if n.strip()]
            if kind.strip() not in ("", "needs") or any(
                what not in ("env", "process", "user", "golden", "ca") for what, _, _ in needs
            ):
                continue  # fragments, refused files, fleet files, needs not provided here
            text = block
            for what, _, value in needs:
                if what == "env":
                    mp.setenv(value, "fuzz-secret")
                elif what == "process":
                    text += f'\n[[process]]\nname = "{value}"\ncommand = ["true"]\n'
                elif what == "user":
                    users.add(value)
                else:  # golden, ca: a file at that path
                    local = files / Path(value).name
                    golden = json.dumps({"outputs": {"y": [[0.1, 0.2, 0.7]]}})
                    local.write_text(TEST_CA_PEM if what == "ca" else golden, "utf-8")
                    text = text.replace(value, str(local))
            docs.append(tomllib.loads(text))
        for doc in docs:
            parse_config(dump_toml(doc))  # each seed is valid as written back
        assert len(docs) >= 8, "the docs lost their config examples"
        yield docs


def check(text: str, target: str) -> None:
    """Parse ``text``: a Config or a ConfigError, within the deadline."""
    with deadline(f"parse_config of {text[:200]!r}"):
        try:
            config = parse_config(text, "/etc/vigil/fuzz.toml")
        except ConfigError as exc:
            assert str(exc), "a refusal says what was wrong"
            outcome(target, "refused")
            return
    assert isinstance(config, Config)
    outcome(target, "accepted")


@budget(ci=200, fuzz=20_000)
@given(data=st.data())
def test_config_with_one_field_mutated(seeds: list[dict[str, Any]], data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(seeds), label="seed")
    label, doc = data.draw(mutate(seed), label="mutation")
    check(dump_toml(doc), "config")


@budget(ci=50, fuzz=5_000)
@given(data=st.data())
def test_config_file_bytes(seeds: list[dict[str, Any]], data: st.DataObject) -> None:
    """``load_config`` on a file: a valid config's bytes cut, spliced or made non-UTF-8."""
    raw = dump_toml(data.draw(st.sampled_from(seeds), label="seed")).encode("utf-8")
    at = data.draw(st.integers(0, len(raw)), label="at")
    insert = data.draw(
        st.one_of(
            st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xef\xbb\xbf", b"\r", b"[", b'"', b"="]),
            st.binary(max_size=8),
        ),
        label="insert",
    )
    cut = data.draw(st.booleans(), label="cut")
    blob = raw[:at] + insert + (b"" if cut else raw[at:])
    with tempfile.NamedTemporaryFile(suffix=".toml", delete=False) as fh:
        fh.write(blob)
    path = Path(fh.name)
    try:
        with deadline(f"load_config of {blob[:200]!r}"):
            try:
                load_config(path)
            except ConfigError:
                outcome("config file", "refused")
                return
        outcome("config file", "accepted")
    finally:
        path.unlink()
