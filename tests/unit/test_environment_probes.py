"""What the serving-environment fingerprint reads: this host (real /proc and os-release, and
fixture files), a model server's Python (a real venv made here, real processes running from
it, package metadata directories written here, this checkout's own .venv checked against
importlib.metadata), GPUs through a fake NVML (the only thing faked), and server versions from
real loopback HTTP servers standing in for vLLM, llama.cpp, TGI, Ollama and KServe."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from probes.gpu import GpuCollector
from probes.hostenv import host_items, read_os_release
from probes.httpclient import HttpClient
from probes.pyenv import python_at, python_env, read_packages
from probes.serverversion import server_items
from tests.helpers import wait_for
from tests.unit.test_gpu import FakeNVML, FakeNVMLError, two_gpus

# --- the host -------------------------------------------------------------------------------


def test_host_items_on_this_host_match_proc_and_os_release() -> None:
    items = host_items()
    assert items["kernel"] == platform.release()
    assert items["arch"] == platform.machine()
    assert items["cpu.count"] == str(os.cpu_count())
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    if model:
        assert items["cpu.model"] == model.group(1).strip()
    release = read_os_release()
    if release:
        assert items["os.id"] == release["ID"]
        assert items["os"] == release.get("PRETTY_NAME", release.get("NAME"))
    assert items["libc"].startswith("glibc ")


def test_host_items_from_fixture_files(tmp_path: Path) -> None:
    rel = tmp_path / "os-release"
    rel.write_text(
        '# a comment\nNAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\n'
        "PRETTY_NAME='Ubuntu 22.04.4 LTS\x1b[31m'\nbroken line\n"
    )
    cpu = tmp_path / "cpuinfo"
    # arm64: no "model name", the board says "Model" after the per-core blocks.
    cpu.write_text(
        "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nModel\t: Raspberry Pi 4\n"
    )
    items = host_items(os_release=(tmp_path / "missing", rel), cpuinfo=cpu)
    assert items["os"] == "Ubuntu 22.04.4 LTS?[31m"  # a terminal escape is data: made printable
    assert (items["os.id"], items["os.version"]) == ("ubuntu", "22.04")
    assert items["cpu.model"] == "Raspberry Pi 4"
    none = host_items(os_release=(tmp_path / "missing",), cpuinfo=tmp_path / "missing")
    assert "os" not in none and "cpu.model" not in none and none["kernel"]


# --- a server's Python ----------------------------------------------------------------------


def _dist(site: Path, dirname: str, metadata: str | None) -> None:
    d = site / dirname
    d.mkdir(parents=True)
    if metadata is not None:
        d.joinpath("METADATA" if dirname.endswith(".dist-info") else "PKG-INFO").write_text(
            metadata
        )


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real venv (``python -m venv``, no pip) with package metadata written into it."""
    root = tmp_path_factory.mktemp("env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    (site,) = root.glob("lib/python3*/site-packages")
    _dist(
        site,
        "torch-2.4.0.dist-info",
        "Metadata-Version: 2.1\nName: torch\nVersion: 2.4.0\n"
        "Summary: x\n\nVersion: 9.9 (the description, not a header)\n",
    )
    _dist(site, "Foo_Bar-1.0.dist-info", "Name: Foo_Bar\nVersion: 1.0\n")
    _dist(site, "vllm-0.6.3.dist-info", None)  # no METADATA: the directory's name says
    _dist(site, "legacy-0.1.egg-info", "Metadata-Version: 1.0\nName: legacy\nVersion: 0.1\n")
    (site / "single-2.0.egg-info").write_text("Name: single\nVersion: 2.0\n")  # a file
    script = root / "bin" / "serve"
    script.write_text(f"#!{root}/bin/python\nimport sys\n")
    script.chmod(0o755)
    return root


EXPECTED = {"foo-bar": "1.0", "legacy": "0.1", "single": "2.0", "torch": "2.4.0", "vllm": "0.6.3"}


def test_a_real_venv_read_from_disk(venv: Path) -> None:
    env = python_at(str(venv / "bin" / "python"))
    assert env is not None and env.venv
    assert env.prefix == str(venv)
    assert env.python_version == platform.python_version()  # pyvenv.cfg's version
    assert env.packages == EXPECTED
    items = env.items()
    assert items["pkg:torch"] == "2.4.0" and items["packages"] == "5"
    assert items["python"] == platform.python_version()
    assert items["interpreter"] == str(venv / "bin" / "python")


def test_scripts_are_followed_to_their_interpreter(venv: Path, tmp_path: Path) -> None:
    assert python_at(str(venv / "bin" / "serve")).packages == EXPECTED  # type: ignore[union-attr]
    via_env = tmp_path / "via-env"
    via_env.write_text("#!/usr/bin/env python3\n")
    env = python_at(str(via_env), path_env=str(venv / "bin"))
    assert env is not None and env.prefix == str(venv)
    # pip's launcher when the interpreter's path is too long for a #! line.
    launcher = tmp_path / "launcher"
    launcher.write_text(f"#!/bin/sh\n'''exec' {venv}/bin/python \"$0\" \"$@\"\n' '''\n")
    assert python_at(str(launcher)).prefix == str(venv)  # type: ignore[union-attr]
    assert python_at(shutil.which("sleep") or "/bin/sleep") is None  # no Python
    assert python_at(str(tmp_path / "missing")) is None


def test_system_site_packages_come_after_the_venvs_own(venv: Path, tmp_path: Path) -> None:
    other = tmp_path / "v2"
    shutil.copytree(venv, other, symlinks=True)
    cfg = other / "pyvenv.cfg"
    cfg.write_text(
        cfg.read_text().replace(
            "include-system-site-packages = false", "include-system-site-packages = true"
        )
    )
    env = python_at(str(other / "bin" / "python"))
    assert env is not None and len(env.site_packages) >= 2
    assert env.site_packages[0].startswith(str(other))
    assert env.packages["torch"] == "2.4.0"  # the venv's own copy, first on the path


def test_this_checkouts_venv_agrees_with_importlib_metadata() -> None:
    env = python_at(sys.executable)
    assert env is not None
    site = [p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix)]
    expected: dict[str, str] = {}
    for dist in importlib.metadata.distributions(path=site):
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        expected.setdefault(name, dist.version)
    assert env.packages == expected


def test_the_package_list_is_capped(venv: Path) -> None:
    (site,) = venv.glob("lib/python3*/site-packages")
    packages, truncated = read_packages([str(site)], limit=2)
    assert truncated and len(packages) == 2
    assert read_packages([str(site)], limit=5) == (EXPECTED, False)


@contextmanager
def _running(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"  # it has exec'd and runs
        yield proc
    finally:
        proc.kill()
        proc.wait()


SLEEPER = "import sys, time; print('ready', flush=True); time.sleep(60)"


def test_a_running_process_is_read_through_proc(venv: Path) -> None:
    with _running([str(venv / "bin" / "python"), "-c", SLEEPER]) as proc:
        env, exe = python_env(proc.pid)
    assert env is not None and env.prefix == str(venv) and env.packages == EXPECTED
    # /proc/PID/exe names the base interpreter the venv's python links to ...
    assert exe == os.path.realpath(venv / "bin" / "python")
    # ... which is why argv[0] is read first: the base has none of the venv's packages.
    base = python_at(exe)
    assert base is not None and not base.venv and "torch" not in base.packages


def test_a_wrapper_process_is_looked_through(venv: Path) -> None:
    # "; true" keeps sh from exec-ing the command: the Python is sh's child.
    cmd = f'{venv}/bin/python -c "{SLEEPER}"; true'
    with _running(["sh", "-c", cmd]) as proc:
        env, exe = python_env(proc.pid)
    assert env is not None and env.prefix == str(venv)
    assert exe is not None and os.path.basename(exe) in ("dash", "sh", "bash")


def test_a_process_that_is_no_python_and_one_not_running(venv: Path) -> None:
    sleep = os.path.realpath(shutil.which("sleep") or "")
    proc = subprocess.Popen([sleep, "60"])
    try:
        wait_for(lambda: os.readlink(f"/proc/{proc.pid}/exe") == sleep, what="sleep's exec")
        env, exe = python_env(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert env is None and exe == sleep
    # Not running: the configured command's argv[0], found on the command's PATH.
    env, exe = python_env(None, ["serve", "--port", "1"], path_env=str(venv / "bin"))
    assert env is not None and env.packages == EXPECTED and exe == str(venv / "bin" / "serve")
    assert python_env(None, ["no-such-command-here"], path_env=str(venv / "bin")) == (None, None)
    assert python_env(None, []) == (None, None)


# --- GPUs ------------------------------------------------------------------------------------


class FakeSystemNVML(FakeNVML):
    """The fake NVML of test_gpu with the system queries the fingerprint asks."""

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetNVMLVersion(self) -> bytes:
        return b"12.550.54.15"  # older pynvml releases return bytes

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040


def test_gpu_inventory_through_fake_nvml() -> None:
    assert GpuCollector(nvml=FakeSystemNVML(two_gpus())).inventory() == {
        "driver": "550.54.15",
        "nvml": "12.550.54.15",
        "cuda_driver": "12.4",
        "count": "2",
        "device.0": "NVIDIA A100-SXM4-80GB",
        "device.1": "NVIDIA L4",
    }


def test_gpu_inventory_skips_what_the_driver_refuses_and_is_empty_without_nvml() -> None:
    class NoCuda(FakeSystemNVML):
        def nvmlSystemGetCudaDriverVersion(self) -> int:
            raise FakeNVMLError(3)

    inv = GpuCollector(nvml=NoCuda(two_gpus())).inventory()
    assert "cuda_driver" not in inv and inv["driver"] == "550.54.15"
    assert GpuCollector(nvml=FakeSystemNVML([], init_error=12)).inventory() == {}


def test_gpu_inventory_with_the_real_pynvml_on_a_host_without_a_gpu() -> None:
    pytest.importorskip("pynvml")
    collector = GpuCollector()
    if collector.available:  # pragma: no cover - a GPU host: the real driver answers
        inv = collector.inventory()
        assert inv["driver"] and int(inv["count"]) >= 1
    else:
        assert collector.inventory() == {}


# --- model servers' own versions -------------------------------------------------------------


@asynccontextmanager
async def _serving(routes: dict[str, Any], seen: list[dict[str, str]]) -> AsyncIterator[str]:
    app = web.Application()

    def handler(answer: Any) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            seen.append({"path": request.path, "auth": request.headers.get("Authorization", "")})
            if isinstance(answer, int):
                return web.Response(status=answer, text="no")
            return web.json_response(answer)

        return handle

    for path, answer in routes.items():
        app.router.add_get(path, handler(answer))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


TGI_INFO = {
    "model_id": "meta-llama/Llama-3.1-8B-Instruct",
    "model_sha": "0e9e39f",
    "version": "2.4.0",
    "sha": "0a655a0",
    "docker_label": "sha-0a655a0",
}
LLAMA_PROPS = {
    "default_generation_settings": {"n_ctx": 4096},
    "build_info": "b4273-c9c6e01d",
    "model_path": "/models/qwen2.5-0.5b-q4.gguf",
    "chat_template": "x" * 5000,
}


@pytest.mark.parametrize(
    ("protocol", "routes", "suffix", "expected"),
    [
        (
            "openai",
            {"/version": {"version": "0.6.3"}},
            "/v1",
            {"server": "vllm", "server.version": "0.6.3"},
        ),
        (
            "openai",
            {"/props": LLAMA_PROPS},
            "",
            {
                "server": "llama.cpp",
                "server.version": "b4273-c9c6e01d",
                "server.model": "/models/qwen2.5-0.5b-q4.gguf",
            },
        ),
        (
            "openai",
            {"/info": TGI_INFO},
            "/",
            {
                "server": "tgi",
                "server.version": "2.4.0",
                "server.sha": "0a655a0",
                "server.model": "meta-llama/Llama-3.1-8B-Instruct",
                "server.model_sha": "0e9e39f",
            },
        ),
        (
            "tgi",
            {"/info": TGI_INFO},
            "",
            {
                "server": "tgi",
                "server.version": "2.4.0",
                "server.sha": "0a655a0",
                "server.model": "meta-llama/Llama-3.1-8B-Instruct",
                "server.model_sha": "0e9e39f",
            },
        ),
        (
            "ollama",
            {"/api/version": {"version": "0.4.7"}},
            "",
            {"server": "ollama", "server.version": "0.4.7"},
        ),
        (
            "kserve_v2",
            {
                "/v2": {
                    "name": "triton",
                    "version": "2.41.0",
                    "extensions": ["model_repository", "binary_tensor_data"],
                }
            },
            "",
            {
                "server": "triton",
                "server.version": "2.41.0",
                "server.extensions": "binary_tensor_data,model_repository",
            },
        ),
        ("openai", {}, "", {}),  # answers, but none of the routes: known to say nothing
        (
            "openai",
            {"/version": {"version": "\x1b]0;owned\x07"}},
            "",
            {"server": "vllm", "server.version": "?]0;owned?"},
        ),
    ],
)
async def test_server_versions_from_real_servers(
    protocol: str, routes: dict[str, Any], suffix: str, expected: dict[str, str]
) -> None:
    seen: list[dict[str, str]] = []
    async with _serving(routes, seen) as url, HttpClient() as client:
        got = await server_items(
            client, protocol, url + suffix, headers={"Authorization": "Bearer k"}, timeout_s=5
        )
    assert got == expected
    assert (seen or not routes) and all(s["auth"] == "Bearer k" for s in seen)


async def test_a_server_that_gives_no_answer_leaves_its_items_unknown() -> None:
    seen: list[dict[str, str]] = []
    async with _serving({"/version": 503}, seen) as url, HttpClient() as client:
        assert await server_items(client, "openai", url) is None
    async with HttpClient() as client:
        # Nothing listens there any more: refused.
        assert await server_items(client, "ollama", url, timeout_s=2) is None
        assert await server_items(client, "http", url) == {}  # nothing to ask
        assert await server_items(client, "tcp", "tcp://127.0.0.1:1") == {}
