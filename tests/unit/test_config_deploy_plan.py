"""Which parts of a reload are config deploys (agent.deploy.configplan), and what their diff
shows (agent.deploy.configdiff): secrets never, changes always."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from agent.config import Config, parse_config
from agent.deploy.configdiff import process_toml, table_hash
from agent.deploy.configplan import canary_key, plan, process_key

PATH = Path("/etc/vigil/vigil.toml")


def cfg(
    env: dict[str, str] | None = None,
    canary: str = "",
    deploy: str = 'link = "/srv/current"',
    extra: str = "",
    command: str = "serve",
) -> Config:
    env_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in (env or {}).items())
    deploy_table = f"[model.deploy]\n{deploy}\n" if deploy is not None else ""
    return parse_config(
        f"""
[[process]]
name = "srv"
command = ["{command}", "--port", "8000"]
[process.env]
{env_lines}

[[model]]
name = "clf"
protocol = "kserve_v2"
url = "http://127.0.0.1:8000"
process = "srv"
{deploy_table}
[model.canary]
{canary}
{extra}
""",
        PATH,
    )


def never_busy(model: str) -> int | None:
    return None


def test_nothing_changed_nothing_to_deploy() -> None:
    p = plan(cfg(), cfg(), never_busy, {})
    assert p.changes == () and p.held == () and p.config == cfg()


def test_a_process_change_is_a_deploy_and_the_running_table_stays_meanwhile() -> None:
    old, new = cfg({"FOO": "1"}), cfg({"FOO": "2"})
    p = plan(old, new, never_busy, {})
    (change,) = p.changes
    assert change.model == "clf" and change.process == "srv" and change.what == "process srv"
    assert change.process_changed and not change.canary_changed
    assert change.old_process == old.processes[0] and change.new_process == new.processes[0]
    assert p.config.processes == old.processes  # the deploy applies the new one itself
    assert p.config.models == new.models
    assert change.diff.splitlines()[:2] == [
        "--- process srv (running)",
        f"+++ process srv ({PATH})",
    ]
    assert '-FOO = "1"' in change.diff and '+FOO = "2"' in change.diff
    assert change.old_hash != change.new_hash


def test_a_canary_change_is_a_deploy_of_the_canary() -> None:
    old, new = cfg(), cfg(canary="check_health = false")
    (change,) = plan(old, new, never_busy, {}).changes
    assert change.canary_changed and not change.process_changed and change.process is None
    assert change.what == "the canary of model clf"
    assert change.new_canary == {"check_health": False} and change.old_canary == {}
    assert "+check_health = false" in change.diff


def test_models_without_a_deploy_table_keep_todays_behaviour() -> None:
    old, new = cfg({"FOO": "1"}, deploy=None), cfg({"FOO": "2"}, deploy=None)  # type: ignore[arg-type]
    p = plan(old, new, never_busy, {})
    assert p.changes == () and p.config == new


def test_a_model_with_a_deploy_in_flight_has_its_change_held() -> None:
    old, new = cfg({"FOO": "1"}), cfg({"FOO": "2"}, extra="")
    p = plan(old, new, lambda m: 7 if m == "clf" else None, {})
    assert p.changes == ()
    assert [(h.model, h.deployment_id, h.what) for h in p.held] == [("clf", 7, "process srv")]
    assert p.config.processes == old.processes


def test_a_rolled_back_table_is_not_deployed_again_until_the_file_changes() -> None:
    old, bad = cfg({"FOO": "1"}), cfg({"FOO": "slow"})
    rejected: dict[str, Any] = {process_key("srv"): bad.processes[0]}
    p = plan(old, bad, never_busy, rejected)
    assert p.changes == () and p.still_rejected == (process_key("srv"),)
    assert p.config.processes == old.processes
    # Another change: deployed.
    p = plan(old, cfg({"FOO": "3"}), never_busy, rejected)
    assert len(p.changes) == 1 and p.still_rejected == ()
    # The file back to what runs: the rejection is forgotten.
    p = plan(old, cfg({"FOO": "1"}), never_busy, rejected)
    assert p.changes == () and p.agreed == (process_key("srv"),)
    canary = {canary_key("clf"): {"check_ready": False}}
    p = plan(old, cfg({"FOO": "1"}, canary="check_ready = false"), never_busy, canary)
    assert p.changes == () and p.still_rejected == (canary_key("clf"),)
    assert p.config.models[0].canary == {}


def test_the_rest_of_a_reload_is_applied_at_once() -> None:
    extra = '[[model]]\nname = "other"\nprotocol = "tcp"\nurl = "tcp://127.0.0.1:9"\n'
    old, new = cfg({"FOO": "1"}), cfg({"FOO": "2"}, extra=extra)
    p = plan(old, new, never_busy, {})
    assert [m.name for m in p.config.models] == ["clf", "other"]
    assert len(p.changes) == 1


def test_blue_green_models_are_left_to_their_strategy() -> None:
    old, new = cfg({"FOO": "1"}), cfg({"FOO": "2"})
    m = new.models[0]
    assert m.deploy is not None
    bg = dataclasses.replace(m, deploy=dataclasses.replace(m.deploy, strategy="blue-green"))
    new = dataclasses.replace(new, models=(bg,))
    p = plan(old, new, never_busy, {})
    assert p.changes == () and p.config == new


def test_secrets_never_reach_the_diff_but_their_change_does() -> None:
    old = cfg({"HF_TOKEN": "hf_one", "API_KEY": "k1", "DB_PASSWORD": "p", "MODE": "a"})
    new = cfg({"HF_TOKEN": "hf_two", "API_KEY": "k1", "DB_PASSWORD": "p", "MODE": "a"})
    (change,) = plan(old, new, never_busy, {}).changes
    assert "hf_one" not in change.diff and "hf_two" not in change.diff and "k1" not in change.diff
    assert '-HF_TOKEN = "(secret)"' in change.diff
    assert '+HF_TOKEN = "(secret, changed)"' in change.diff
    assert ' API_KEY = "(secret)"' in change.diff  # unchanged: context, not a change
    # The hash is of the redacted text: it holds no secret either.
    assert table_hash(process_toml(old.processes[0])) == table_hash(process_toml(new.processes[0]))


def http_cfg(canary: str) -> Config:
    """A model probed over plain HTTP (whose canary may carry headers)."""
    return parse_config(
        f"""
[[process]]
name = "srv"
command = ["serve"]

[[model]]
name = "clf"
protocol = "http"
url = "http://127.0.0.1:8000/health"
process = "srv"
[model.deploy]
link = "/srv/current"
[model.canary]
{canary}
""",
        PATH,
    )


def test_a_canary_secret_and_control_characters_are_not_shown_raw() -> None:
    old = http_cfg('headers = { Authorization = "Bearer s3cret" }')
    new = http_cfg('headers = { Authorization = "Bearer other", X-Mode = "a\\u001b[31m" }')
    (change,) = plan(old, new, never_busy, {}).changes
    assert "s3cret" not in change.diff and "other" not in change.diff
    assert '+headers = { Authorization = "(secret, changed)", X-Mode = "a\\u001b[31m" }' in (
        change.diff
    )
    assert "\x1b" not in change.diff


def test_the_command_change_shows_the_whole_command() -> None:
    (change,) = plan(cfg(command="serve"), cfg(command="serve2"), never_busy, {}).changes
    assert '-command = ["serve", "--port", "8000"]' in change.diff
    assert '+command = ["serve2", "--port", "8000"]' in change.diff
