"""Hostile input and a hostile environment, against a real agent process (issue 17)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from storage.records import Event, ProbeRun
from storage.writer import Writer
from tests.helpers import child_env, running_agent, vigil_cmd, wait_for, write_config
from tests.report_samples import CONTROL_HOST, T0, fill_charts

pytestmark = pytest.mark.integration


def raw_request(url: str, head: bytes) -> tuple[int, bytes]:
    """Send ``head`` (a request's bytes, sent as they are) and read the whole answer."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(head)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), body


def test_non_utf8_bytes_in_the_authorization_header_are_a_401(tmp_path: Path) -> None:
    # Such a header used to crash the token check: an unauthenticated 500 and a traceback
    # logged for every request, which anyone who reaches the port could repeat.
    with running_agent(write_config(tmp_path)) as agent:
        for token in (b"\xff\xfe\xfd", agent.token.encode() + b"\xff", b"\xc3\xa9t\xc3\xa9"):
            head = (
                b"GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\n"
                b"Authorization: Bearer " + token + b"\r\nConnection: close\r\n\r\n"
            )
            status, body = raw_request(agent.url, head)
            assert status == 401, body
            assert json.loads(body)["error"].startswith("token rejected ("), body
        assert agent.get("/api/v1/status")[0] == 200  # still serving
        log = agent.log()
        assert "Traceback" not in log and "UnicodeEncodeError" not in log, log


# --- file modes whatever the umask (defect 5) --------------------------------------------------

# Says which umask it got, then more than log_max_bytes: the agent's periodic rotation (every
# 5 s) makes chatty.log.1.
CHATTY = (
    "import os, sys, time; m = os.umask(0); print('umask=%03o' % m);"
    " print('x' * 5000, flush=True); time.sleep(600)"
)


def modes_under(root: Path) -> dict[str, int]:
    """Every path under ``root`` (``root`` itself as ``.``) -> its permission bits."""
    out = {".": root.stat().st_mode & 0o7777}
    for path in sorted(root.rglob("*")):
        out[str(path.relative_to(root))] = path.lstat().st_mode & 0o7777
    return out


def expected_mode(name: str) -> int:
    if name == ".":
        return 0o700
    if name == "logs":
        return 0o750  # process logs are 0640, for the operators' group (the installer's 0750)
    if name.startswith("logs/"):
        return 0o640
    return 0o600


@pytest.mark.parametrize("umask", [0o000, 0o022], ids=["umask000", "umask022"])
def test_everything_in_the_data_dir_is_private_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    # Under umask 022 vigil.db, -wal, -shm were 0644 and the data dir and logs/ 0755; under
    # umask 000 supervisor.json and api.json 0666 and the directories 0777.
    body = f"""
[[process]]
name = "chatty"
command = ["{sys.executable}", "-c", "{CHATTY}"]
log_max_bytes = 4096
log_keep = 1
"""
    with running_agent(write_config(tmp_path, body), umask=umask) as agent:
        assert agent.get("/api/v1/status")[0] == 200
        logs = agent.data_dir / "logs"
        wait_for((logs / "chatty.log.1").exists, what="chatty's log rotated")
        wait_for((agent.data_dir / "supervisor.json").exists, what="supervisor.json")
        assert (agent.data_dir / "vigil.db-wal").exists()
        modes = modes_under(agent.data_dir)
        # A model server keeps the umask the agent was started with: its own files are its
        # business, not the agent's.
        assert (logs / "chatty.log.1").read_text().startswith(f"umask={umask:03o}\n")
    wrong = {name: oct(m) for name, m in modes.items() if m != expected_mode(name)}
    assert not wrong, f"not private under umask {umask:03o}: {wrong}"
    assert {"vigil.db", "vigil.db-shm", "api.json", "api-token", "api-token.read"} <= set(modes)


# --- the agent's secrets stay with the agent (defect 7) ----------------------------------------

WRITE_ENV = "import json, os, sys, time; open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))"


def test_the_agents_token_and_config_secrets_do_not_reach_its_children(tmp_path: Path) -> None:
    # VIGIL_TOKEN in the agent's environment reached every supervised process; only
    # NOTIFY_SOCKET was scrubbed.
    plain, own = tmp_path / "plain.json", tmp_path / "own.json"
    body = f"""
[[model]]
name = "m"
protocol = "openai"
url = "http://127.0.0.1:1"
api_key_env = "MODEL_API_KEY"

[[process]]
name = "plain"
command = ["{sys.executable}", "-c", "{WRITE_ENV}", "{plain}"]
restart = "never"

[[process]]
name = "own"
command = ["{sys.executable}", "-c", "{WRITE_ENV}", "{own}"]
restart = "never"
env = {{ VIGIL_TOKEN = "set-by-its-config" }}
"""
    secrets = {"VIGIL_TOKEN": "tok-123", "VIGIL_EXTRA": "x", "MODEL_API_KEY": "sk-456"}
    with running_agent(write_config(tmp_path, body), env={**secrets, "PLAIN_VAR": "kept"}):
        envs = wait_for(
            lambda: plain.exists() and own.exists() and (plain.read_text(), own.read_text()),
            what="both processes' environments",
        )
    plain_env, own_env = (json.loads(text) for text in envs)
    assert not set(secrets) & set(plain_env), plain_env
    assert plain_env["PLAIN_VAR"] == "kept"
    assert own_env["VIGIL_TOKEN"] == "set-by-its-config"
    assert not {"VIGIL_EXTRA", "MODEL_API_KEY"} & set(own_env)
    assert not [v for v in plain_env.values() if "tok-123" in v or "sk-456" in v]


# --- control characters and formulas in every report format (defect 6) ------------------------

RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")
"""A C0 control but tab and newline, DEL, or a C1 control (UTF-8 encoded) in a file's bytes."""
FORMULA_MODEL = '=HYPERLINK("http://x")'


def test_the_report_command_writes_no_control_character_in_any_format(tmp_path: Path) -> None:
    # An error body or a host name holding ESC/BEL must not reach report.html raw: `cat` of
    # the report would drive the terminal (retitle it, recolour it, clear it).
    db = tmp_path / "data" / "vigil.db"
    writer = Writer(db, flush_interval_s=0.01)
    writer.start()
    try:
        fill_charts(writer)  # control characters in a run's error, a restart's reason, a cause
        writer.submit(
            [
                Event(
                    ts_ms=T0 + 1,
                    kind="agent.started",
                    subject="agent",
                    message="agent started",
                    data={"host": CONTROL_HOST},
                ),
                ProbeRun(
                    model=FORMULA_MODEL,
                    ts_ms=T0 + 2,
                    ok=False,
                    category="http_error",
                    status=500,
                    error="boom \x1b[2J\x07",
                ),
                ProbeRun(model="m\x1b[2J\x1bc\x00\r\x85!", ts_ms=T0 + 3, ok=True, category="ok"),
            ]
        )
        assert writer.flush()
    finally:
        writer.close()
    written: list[Path] = []
    for fmt in ("html", "md", "json", "csv"):
        out = tmp_path / f"report-{fmt}"
        argv = ["report", "--db", str(db), "--since", "3000d", "--format", fmt, "-o", str(out)]
        done = subprocess.run(
            vigil_cmd(*argv), capture_output=True, env=child_env(), timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        written += sorted(out.iterdir()) if fmt == "csv" else [out]
    for path in written:
        raw = path.read_bytes()
        assert not RAW_CONTROL.search(raw), (path.name, RAW_CONTROL.findall(raw)[:5])
    page = (tmp_path / "report-html").read_text(encoding="utf-8")
    assert "gpu?]0;pwned?-01" in page  # the host, its controls made visible
    assert "m?[2J?c???!" in page  # a model's name
    assert "exit 1 ?[31mred?[0m? ?2J ?" in page  # a restart's reason
    # JSON keeps the exact text, escaped (a reader gets back what the server sent).
    doc = json.loads((tmp_path / "report-json").read_text(encoding="utf-8"))
    assert doc["host"] == CONTROL_HOST
    # A spreadsheet must not run a model's name as a formula (OWASP: prefix with ').
    models = (tmp_path / "report-csv" / "models.csv").read_text(encoding="utf-8")
    assert "'=HYPERLINK" in models and ",=HYPERLINK" not in models
