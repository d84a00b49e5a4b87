"""The fleet file of ``vigil tui --fleet``: valid files with one field mutated, through
``parse_fleet`` and ``load_fleet``. The documented outcome of a bad file is
:class:`tui.fleet.FleetError` (file, line, field, what was expected); anything else escaping is
a bug, and so is a hang. Token files named relative to the fleet file exist beside it."""

from __future__ import annotations

import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.mutate import dump_toml, mutate
from tests.fuzz.support import budget, deadline, outcome
from tui.fleet import FleetEntry, FleetError, load_fleet, parse_fleet

SEED = """
[defaults]
timeout = "3s"
connect_timeout = "20s"
token_file = "tokens/read"

[[agent]]
name = "gpu-01"
url = "http://10.0.0.11:8470"

[[agent]]
name = "gpu-02.internal"
url = "ssh://ops@gpu-02.internal:2222/var/lib/vigil"
data_dir = "~/state/vigil"
ssh_options = ["-J", "bastion", "-o", "ConnectTimeout=5"]

[[agent]]
name = "gpu-03"
url = "https://[fd00::3]:8470/"
token = "inline-read-token"
timeout = "500ms"

[[agent]]
name = "lab@host:1"
url = "ssh://lab-host"
"""


@pytest.fixture(scope="module")
def fleet_dir() -> Path:
    """A directory holding the token file the seed names (relative to the fleet file)."""
    root = Path(tempfile.mkdtemp(prefix="vigil-fuzz-fleet-"))
    (root / "tokens").mkdir()
    (root / "tokens" / "read").write_text("a-read-token\n", encoding="utf-8")
    (root / "tokens" / "empty").write_text("\n", encoding="utf-8")
    (root / "tokens" / "binary").write_bytes(b"\xff\xfe\x00")
    return root


@pytest.fixture(scope="module")
def seed(fleet_dir: Path) -> Iterator[dict[str, Any]]:
    doc = tomllib.loads(SEED)
    assert len(parse_fleet(dump_toml(doc), fleet_dir / "fleet.toml")) == 4
    yield doc


TOKEN_FILES = st.sampled_from(["tokens/empty", "tokens/binary", "tokens", "missing", "/"])


@budget(ci=200, fuzz=10_000)
@given(data=st.data())
def test_fleet_file_with_one_field_mutated(
    seed: dict[str, Any], fleet_dir: Path, data: st.DataObject
) -> None:
    label, doc = data.draw(mutate(seed), label="mutation")
    defaults = doc.get("defaults")
    if isinstance(defaults, dict) and data.draw(st.integers(0, 9), label="swap token file") == 0:
        defaults["token_file"] = data.draw(TOKEN_FILES, label="token file")
    text = dump_toml(doc)
    with deadline(f"parse_fleet of {text[:200]!r}"):
        try:
            entries = parse_fleet(text, fleet_dir / "fleet.toml")
        except FleetError as exc:
            assert str(exc)
            outcome("fleet", "refused")
            return
    assert entries and all(isinstance(e, FleetEntry) for e in entries)
    for entry in entries:
        if entry.is_ssh:
            entry.ssh_address()  # valid once loaded, as FleetEntry promises
    outcome("fleet", "accepted")


@budget(ci=50, fuzz=5_000)
@given(data=st.data())
def test_fleet_file_bytes(seed: dict[str, Any], fleet_dir: Path, data: st.DataObject) -> None:
    """``load_fleet`` on a file: the seed's bytes cut, spliced or made non-UTF-8."""
    raw = dump_toml(seed).encode("utf-8")
    at = data.draw(st.integers(0, len(raw)), label="at")
    insert = data.draw(
        st.one_of(st.sampled_from([b"\xff", b"\x00", b"[", b'"', b"=", b"\n["]), st.binary()),
        label="insert",
    )
    blob = raw[:at] + insert + raw[at + data.draw(st.integers(0, 8), label="cut") :]
    path = fleet_dir / "fleet-bytes.toml"
    path.write_bytes(blob)
    with deadline(f"load_fleet of {blob[:200]!r}"):
        try:
            load_fleet(path)
        except FleetError:
            outcome("fleet file", "refused")
            return
    outcome("fleet file", "accepted")
