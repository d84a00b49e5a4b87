"""The nginx traffic switch against a real nginx (Debian's package) on loopback.

Two colour servers stand for the blue and green copies of a model; the test's own nginx (its
prefix, pid file and logs in a tmp dir, never a system nginx) fronts them through the include
Vigil owns. A switch is confirmed before it returns, a steady client sees no failed request
across ten switches, a request in flight on the old copy finishes there and the drain waits for
it, and every refusal (nginx -t failing, a reload that cannot be sent, an include no upstream
loads) leaves a clear error and traffic where it was.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.deploy.nginx import NginxSwitch
from agent.deploy.proxy import InvalidTarget, SwitchError, SwitchStage, TrafficSwitch
from tests.helpers import ROOT
from tests.nginx import (
    Backend,
    RunningNginx,
    SteadyClient,
    color_backend,
    get,
    nginx_missing,
    running_nginx,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(nginx_missing() is not None, reason=str(nginx_missing())),
]


@pytest.fixture
def blue_green(tmp_path: Path) -> Iterator[tuple[Backend, Backend, RunningNginx]]:
    with (
        color_backend("blue") as blue,
        color_backend("green") as green,
        running_nginx(tmp_path, {"m": blue.address}) as nginx,
    ):
        yield blue, green, nginx


def colors(nginx: RunningNginx, n: int = 10) -> set[str]:
    return {get(nginx.url, "/m/")[1] for _ in range(n)}


async def test_switch_is_confirmed_then_every_request_reaches_green(
    blue_green: tuple[Backend, Backend, RunningNginx],
) -> None:
    blue, green, nginx = blue_green
    switch = NginxSwitch(nginx.settings())
    assert isinstance(switch, TrafficSwitch)
    assert colors(nginx) == {"blue"}
    preflight = await switch.preflight("m")
    assert preflight.ok, preflight.problems()
    assert [c.name for c in preflight.checks] == [
        "nginx binary",
        "include directory",
        "include file",
        "nginx -t",
        "include loaded",
        "nginx master",
    ]
    assert await switch.current("m") == blue.address

    result = await switch.switch("m", green.address)

    assert colors(nginx, 20) == {"green"}
    assert result.previous == blue.address and result.address == green.address
    assert f"server {green.address};" in result.written
    assert (nginx.include_dir / "m.upstream.conf").read_text() == result.written
    assert "new worker" in result.confirmed_by and "3 times in a row" in result.confirmed_by
    assert "test is successful" in result.check_output
    assert 0 < result.check_ms < result.total_ms and result.confirm_ms > 0
    assert await switch.current("m") == green.address
    # No temporary file is left beside the include.
    assert sorted(p.name for p in nginx.include_dir.iterdir()) == ["m.upstream.conf"]


async def test_steady_client_sees_no_failed_request_across_ten_switches(
    blue_green: tuple[Backend, Backend, RunningNginx],
) -> None:
    blue, green, nginx = blue_green
    switch = NginxSwitch(nginx.settings())
    client = SteadyClient(nginx.url, "/m/", rate_per_s=150).start()
    # (switch started, switch confirmed, colour from then on)
    switches: list[tuple[float, float, str]] = []
    try:
        await asyncio.sleep(0.3)
        for i in range(10):
            target = green if i % 2 == 0 else blue
            started = time.monotonic()
            await switch.switch("m", target.address)
            switches.append((started, time.monotonic(), target.color))
            await asyncio.sleep(0.3)
    finally:
        client.stop()
    answers = client.answers
    assert len(answers) > 300, len(answers)
    assert client.failures() == [], client.failures()[:5]
    # From each confirmed switch until the next one starts, every request answers the new
    # colour (keep-alive ones included: the old workers closed theirs).
    ends = [started for started, _, _ in switches[1:]] + [float("inf")]
    for (_, confirmed, color), until in zip(switches, ends, strict=True):
        after = {a.body for a in answers if confirmed < a.start < until}
        assert after == {color}, (color, after)
    assert any(a.keepalive for a in answers) and any(not a.keepalive for a in answers)


async def test_request_in_flight_finishes_on_the_old_copy_and_drain_waits_for_it(
    blue_green: tuple[Backend, Backend, RunningNginx],
) -> None:
    blue, green, nginx = blue_green
    switch = NginxSwitch(nginx.settings())
    slow = asyncio.create_task(asyncio.to_thread(get, nginx.url, "/m/?delay_ms=3000"))
    await asyncio.sleep(0.3)  # the slow request is on blue now

    await switch.switch("m", green.address)
    assert colors(nginx) == {"green"}
    early = await switch.drain(blue.address, timeout_s=0.2)
    assert not early.drained and early.open_connections >= 1

    assert await slow == (200, "blue")  # nginx's old worker finished it
    drained = await switch.drain(blue.address, timeout_s=10)
    assert drained.drained and drained.open_connections == 0, drained


async def test_nginx_t_failing_restores_the_include_and_traffic_stays(
    blue_green: tuple[Backend, Backend, RunningNginx],
) -> None:
    blue, green, nginx = blue_green
    switch = NginxSwitch(nginx.settings())
    include = nginx.include_dir / "m.upstream.conf"
    before = include.read_bytes()
    nginx.operator_conf.write_text("proxy_buffers_typo 8 16k;\n")  # a broken operator config

    with pytest.raises(SwitchError) as err:
        await switch.switch("m", green.address)

    assert err.value.stage is SwitchStage.TEST and err.value.restored
    message = str(err.value)
    assert 'unknown directive "proxy_buffers_typo"' in message
    assert "previous include is back" in message and "fails with the previous include" in message
    assert include.read_bytes() == before
    assert colors(nginx) == {"blue"}
    preflight = await switch.preflight("m")
    assert not preflight.ok and any("nginx -t" in p for p in preflight.problems())


async def test_reload_that_cannot_be_sent_restores_the_include(
    blue_green: tuple[Backend, Backend, RunningNginx], tmp_path: Path
) -> None:
    blue, green, nginx = blue_green
    stale = tmp_path / "stale.pid"
    stale.write_text("999999999\n")
    switch = NginxSwitch(nginx.settings(pid_file=str(stale)))
    include = nginx.include_dir / "m.upstream.conf"
    before = include.read_bytes()

    with pytest.raises(SwitchError) as err:
        await switch.switch("m", green.address)

    assert err.value.stage is SwitchStage.RELOAD and err.value.restored
    assert "999999999, not running" in str(err.value)
    assert include.read_bytes() == before
    assert colors(nginx) == {"blue"}


async def test_url_confirm_alone_with_nginx_s_reload(
    blue_green: tuple[Backend, Backend, RunningNginx],
) -> None:
    blue, green, nginx = blue_green
    switch = NginxSwitch(nginx.settings(pid_file=None))
    assert switch.reload_argv is not None and switch.reload_argv[-2:] == ("-s", "reload")

    result = await switch.switch("m", green.address)

    assert result.confirmed_by.startswith(nginx.confirm_url("m"))
    assert colors(nginx) == {"green"}
    back = await switch.switch("m", blue.address)
    assert back.previous == green.address and colors(nginx) == {"blue"}


async def test_include_no_upstream_loads_is_caught(
    blue_green: tuple[Backend, Backend, RunningNginx],
) -> None:
    """An operator who never wired the include: preflight says so, and a switch is not
    confirmed (the proxy keeps answering from the old copy), so it is never taken as done."""
    blue, green, nginx = blue_green
    (nginx.include_dir / "other.upstream.conf").write_text(f"server {blue.address};\n")
    settings = nginx.settings()
    switch = NginxSwitch(
        replace(settings, confirm=replace(settings.confirm, timeout_s=1.0))  # m's URL
    )
    preflight = await switch.preflight("other")
    assert not preflight.ok
    assert any(p.startswith("include loaded:") for p in preflight.problems())

    with pytest.raises(SwitchError) as err:
        await switch.switch("other", green.address)
    assert err.value.stage is SwitchStage.CONFIRM and not err.value.restored
    assert "not confirmed" in str(err.value) and f"switch back to {blue.address}" in str(err.value)


async def test_bad_names_and_addresses_never_reach_the_config(
    blue_green: tuple[Backend, Backend, RunningNginx],
) -> None:
    blue, _, nginx = blue_green
    switch = NginxSwitch(nginx.settings())
    before = sorted(p.name for p in nginx.include_dir.iterdir())
    for model, address in [
        ("../etc/passwd", blue.address),
        ("m; include /etc/shadow", blue.address),
        ("m", "127.0.0.1:1; } server { listen 80"),
        ("m", "127.0.0.1"),
        ("m", "evil.example:80;\nserver 10.0.0.1:80"),
    ]:
        with pytest.raises(InvalidTarget):
            await switch.switch(model, address)
    assert sorted(p.name for p in nginx.include_dir.iterdir()) == before
    assert colors(nginx) == {"blue"}


def docs_site(include_dir: Path, port: int) -> str:
    """docs/deploy.md's nginx site, moved to the test's include dir and a loopback port."""
    page = (ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"^```nginx\n(.*?)^```", page, re.M | re.S)
    site = next(b for b in blocks if "upstream vigil_llama" in b)
    assert "listen 80;" in site and "/etc/nginx/vigil/" in site
    return site.replace("/etc/nginx/vigil/", f"{include_dir}/").replace(
        "listen 80;", f"listen 127.0.0.1:{port};"
    )


async def test_the_documented_nginx_site_switches(tmp_path: Path) -> None:
    with (
        color_backend("blue") as blue,
        color_backend("green") as green,
        running_nginx(tmp_path, {"llama": blue.address}, site=docs_site) as nginx,
    ):
        settings = nginx.settings("llama")
        confirm = replace(settings.confirm, url=f"{nginx.url}/vigil/llama/upstream")
        switch = NginxSwitch(replace(settings, confirm=confirm))
        assert (await switch.preflight("llama")).ok
        assert get(nginx.url, "/v1/models") == (200, "blue")

        await switch.switch("llama", green.address)

        assert {get(nginx.url, "/v1/models")[1] for _ in range(10)} == {"green"}
