"""A model server's Python: its interpreter, version and installed packages, read from disk.

Nothing is run: the server's own environment is found from what it runs and read as files.

- The interpreter: the running process's ``argv[0]`` (``/proc/PID/cmdline``: for a console
  script such as ``vllm``, the kernel puts the script's ``#!`` interpreter there, which is the
  venv's ``bin/python``), its children's when it is a wrapper (``sh -c``), then
  ``/proc/PID/exe``; or, for a process not running, the configured command's ``argv[0]``
  (found on ``PATH``). A script is followed to its ``#!`` interpreter (``/usr/bin/env python3``
  and pip's ``/bin/sh`` launcher for long paths included). ``/proc/PID/exe`` comes last: a
  venv's ``bin/python`` is a symlink to the base interpreter, which is what ``exe`` names.
- The environment: a venv is the directory above ``bin/`` holding ``pyvenv.cfg``; otherwise
  the interpreter's installation prefix (the directory above the real ``bin/``). Its
  ``lib/pythonX.Y/site-packages`` (and Debian's ``dist-packages``) hold the packages; a venv
  with ``include-system-site-packages = true`` sees its base's too, after its own.
- The version: ``pyvenv.cfg``'s ``version`` (``version_info`` from uv), else
  ``include/pythonX.Y/patchlevel.h``, else ``X.Y`` from the interpreter's or lib's name.
- Each package: the ``Name`` and ``Version`` headers of its ``*.dist-info/METADATA`` (or
  ``*.egg-info``'s ``PKG-INFO``), at most :data:`METADATA_BYTES` read; the first site directory
  that has a package wins, as on ``sys.path``; at most :data:`MAX_PACKAGES` packages.

Blocking file reads: the agent calls :func:`python_env` in a thread.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from probes.hostenv import clean

__all__ = ["MAX_PACKAGES", "PythonEnv", "python_at", "python_env", "read_packages"]

MAX_PACKAGES = 1000
"""Packages listed per environment; a bigger one is marked truncated."""
METADATA_BYTES = 16 * 1024
"""Read of one METADATA file: the headers come first, the long description after them."""
MAX_SHEBANG_HOPS = 3
MAX_SCAN = 20_000
"""Processes read at most when looking for a wrapper's children without ``children`` files."""
_PYTHON_NAME = re.compile(r"^python(\d+(\.\d+)?)?[a-z]*$")
_LIB_PYTHON = re.compile(r"^python(\d+\.\d+)[a-z]*$")
_PY_VERSION = re.compile(rb'#define\s+PY_VERSION\s+"([^"]+)"')
_NORMALIZE = re.compile(r"[-_.]+")


@dataclass(frozen=True, slots=True)
class PythonEnv:
    """One Python environment as found on disk."""

    interpreter: str
    """The interpreter's path as found (a venv's ``bin/python``, not the base it links to)."""
    prefix: str
    venv: bool
    python_version: str | None
    site_packages: tuple[str, ...]
    packages: Mapping[str, str]
    """Normalized name (PEP 503) -> version."""
    truncated: bool

    def items(self) -> dict[str, str]:
        """The fingerprint items: ``interpreter``, ``python``, ``packages`` (how many),
        ``packages.truncated`` when capped, and ``pkg:<name>`` per package."""
        out = {"interpreter": clean(self.interpreter), "packages": str(len(self.packages))}
        if self.python_version:
            out["python"] = clean(self.python_version)
        if self.truncated:
            out["packages.truncated"] = "true"
        for name, version in self.packages.items():
            out[f"pkg:{name}"] = version
        return out


def python_env(
    pid: int | None,
    argv: Sequence[str] = (),
    *,
    path_env: str | None = None,
    cwd: str | None = None,
    proc: Path = Path("/proc"),
) -> tuple[PythonEnv | None, str | None]:
    """The Python environment a process runs in, and its executable.

    Args:
        pid: the running process (None: not running, use ``argv``).
        argv: the configured command; only when the process is not running.
        path_env: ``PATH`` to find a bare ``argv[0]`` on (default the agent's own).
        cwd: the command's working directory, for a relative ``argv[0]``.
        proc: the proc file system (tests).

    Returns:
        ``(env, executable)``: env None when no Python is found (a llama.cpp or Ollama binary,
        or a process this user may not read); executable the path found to run, if any.
    """
    candidates: list[str] = []
    executable: str | None = None
    if pid is not None:
        executable = _readlink(proc / str(pid) / "exe")
        for p in (pid, *_children(proc, pid)):
            first = _cmdline0(proc, p)
            if first:
                found = _resolve(
                    first, _proc_path(proc, p) or path_env, _readlink(proc / str(p) / "cwd")
                )
                if found:
                    candidates.append(found)
        if executable:
            candidates.append(executable.removesuffix(" (deleted)"))
    elif argv:
        found = _resolve(argv[0], path_env, cwd)
        if found:
            candidates.append(found)
            executable = os.path.realpath(found)
    for candidate in candidates:
        env = python_at(candidate, path_env=path_env)
        if env is not None:
            return env, executable
    return None, executable


def python_at(path: str, *, path_env: str | None = None) -> PythonEnv | None:
    """The environment of the interpreter (or script) at ``path``; None when it is no Python."""
    for _ in range(MAX_SHEBANG_HOPS):
        target = _shebang(path, path_env)
        if target is None:
            break
        path = target
    given = Path(path)
    real = Path(os.path.realpath(given))
    if not real.is_file() or not (_PYTHON_NAME.match(given.name) or _PYTHON_NAME.match(real.name)):
        return None
    cfg_path = given.parent.parent / "pyvenv.cfg"
    cfg = _read_cfg(cfg_path)
    if cfg is not None:
        prefix = given.parent.parent
        home = cfg.get("home")
        base = Path(home).parent if home else None
        version = cfg.get("version") or cfg.get("version_info")
        if not version:
            version = _version_from(base, real) if base else _version_from(prefix, real)
        sites = _site_dirs(prefix, version, system=False)
        if base is not None and cfg.get("include-system-site-packages", "").lower() == "true":
            sites += [s for s in _site_dirs(base, version, system=True) if s not in sites]
        venv = True
    else:
        prefix = real.parent.parent
        version = _version_from(prefix, real)
        sites = _site_dirs(prefix, version, system=True)
        venv = False
    packages, truncated = read_packages(sites)
    return PythonEnv(
        interpreter=str(given),
        prefix=str(prefix),
        venv=venv,
        python_version=version,
        site_packages=tuple(sites),
        packages=packages,
        truncated=truncated,
    )


def read_packages(
    site_dirs: Iterable[str], limit: int = MAX_PACKAGES
) -> tuple[dict[str, str], bool]:
    """``{normalized name: version}`` from the dist-info and egg-info of these directories,
    sorted by name; and whether more than ``limit`` were there."""
    found: dict[str, str] = {}
    truncated = False
    for site in site_dirs:
        try:
            with os.scandir(site) as it:
                entries = sorted(e.name for e in it)
        except OSError:
            continue
        for entry in entries:
            if entry.endswith(".dist-info"):
                meta = os.path.join(site, entry, "METADATA")
            elif entry.endswith(".egg-info"):
                full = os.path.join(site, entry)
                meta = os.path.join(full, "PKG-INFO") if os.path.isdir(full) else full
            else:
                continue
            got = _name_version(meta) or _from_dir_name(entry)
            if got is None:
                continue
            name = _NORMALIZE.sub("-", got[0]).lower()
            if name in found:
                continue  # an earlier directory's copy is the one imported
            if len(found) >= limit:
                truncated = True
                break
            found[name] = got[1]
    return dict(sorted(found.items())), truncated


def _name_version(meta: str) -> tuple[str, str] | None:
    try:
        with open(meta, "rb") as fh:
            head = fh.read(METADATA_BYTES)
    except OSError:
        return None
    name = version = None
    for raw in head.split(b"\n"):
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if not line.strip():
            break  # the end of the headers
        key, sep, value = line.partition(":")
        if not sep or line[0] in " \t":
            continue
        key = key.strip().lower()
        if key == "name" and name is None:
            name = value.strip()
        elif key == "version" and version is None:
            version = value.strip()
    if name and version:
        return clean(name), clean(version)
    return None


def _from_dir_name(entry: str) -> tuple[str, str] | None:
    """``torch-2.4.0.dist-info`` -> (torch, 2.4.0): the wheel spec's directory name."""
    stem = entry.rsplit(".", 1)[0]
    name, sep, version = stem.partition("-")
    return (clean(name), clean(version.split("-")[0])) if sep and name and version else None


def _site_dirs(prefix: Path, version: str | None, *, system: bool) -> list[str]:
    lib_names: list[str] = []
    xy = ".".join(version.split(".")[:2]) if version else None
    for lib in ("lib", "lib64"):
        base = prefix / lib
        try:
            names = sorted(n for n in os.listdir(base) if _LIB_PYTHON.match(n))
        except OSError:
            continue
        if xy:
            names = [n for n in names if _LIB_PYTHON.match(n).group(1) == xy] or names  # type: ignore[union-attr]
        lib_names.extend(str(base / n) for n in names)
    out: list[str] = []
    for lib_dir in lib_names:
        for sub in ("site-packages", "dist-packages"):
            d = os.path.join(lib_dir, sub)
            if os.path.isdir(d) and os.path.realpath(d) not in map(os.path.realpath, out):
                out.append(d)
    if system and xy:
        # Debian's layout: /usr/local/lib/python3.X/dist-packages, /usr/lib/python3/dist-packages.
        for extra in (
            prefix / "local" / "lib" / f"python{xy}" / "dist-packages",
            prefix / "lib" / "python3" / "dist-packages",
        ):
            if extra.is_dir() and str(extra) not in out:
                out.append(str(extra))
    return out


def _version_from(prefix: Path, real: Path) -> str | None:
    """``patchlevel.h``'s full version where the headers are installed, else ``X.Y``."""
    xy = None
    m = _PYTHON_NAME.match(real.name)
    if m and m.group(1) and "." in m.group(1):
        xy = m.group(1)
    if xy is None:
        try:
            libs = sorted(n for n in os.listdir(prefix / "lib") if _LIB_PYTHON.match(n))
        except OSError:
            libs = []
        if libs:
            xy = _LIB_PYTHON.match(libs[-1]).group(1)  # type: ignore[union-attr]
    if xy is None:
        return None
    try:
        with open(prefix / "include" / f"python{xy}" / "patchlevel.h", "rb") as fh:
            found = _PY_VERSION.search(fh.read(64 * 1024))
    except OSError:
        found = None
    if found:
        full = found.group(1).decode("ascii", "replace")
        if full.startswith(xy):
            return clean(full)
    return xy


def _read_cfg(path: Path) -> dict[str, str] | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    out: dict[str, str] = {}
    for line in text.splitlines()[:100]:
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


def _shebang(path: str, path_env: str | None) -> str | None:
    """The interpreter a ``#!`` script names (None: not a script)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    lines = head.split(b"\n")
    words = lines[0][2:].decode("utf-8", "replace").split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env":
        rest = [w for w in words[1:] if not w.startswith("-")]
        return shutil.which(rest[0], path=path_env) if rest else None
    if os.path.basename(words[0]) == "sh" and len(lines) > 1:
        # pip's launcher for an interpreter path too long for #!: '''exec' /venv/bin/python ...
        second = lines[1].decode("utf-8", "replace")
        if second.startswith("'''exec' "):
            rest = second.removeprefix("'''exec' ").split()
            return rest[0].strip("'\"") if rest else None
    return words[0]


def _resolve(first: str, path_env: str | None, cwd: str | None) -> str | None:
    if "/" in first:
        path = first if os.path.isabs(first) or cwd is None else os.path.join(cwd, first)
        return path if os.path.exists(path) else None
    return shutil.which(first, path=path_env)


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _cmdline0(proc: Path, pid: int) -> str | None:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()[: 64 * 1024]
    except OSError:
        return None
    first = raw.split(b"\0", 1)[0]
    return os.fsdecode(first) if first else None


def _proc_path(proc: Path, pid: int) -> str | None:
    """The process's own ``PATH`` (readable for a process of the agent's user)."""
    try:
        raw = (proc / str(pid) / "environ").read_bytes()[: 256 * 1024]
    except OSError:
        return None
    for var in raw.split(b"\0"):
        if var.startswith(b"PATH="):
            return os.fsdecode(var[5:])
    return None


def _children(proc: Path, pid: int) -> list[int]:
    """The process's direct children, for a wrapper such as ``sh -c``: from
    ``task/*/children`` where the kernel has it (``CONFIG_PROC_CHILDREN``), else by reading
    each process's parent from its ``stat`` (a few ms on a host of 1,000 processes; only done
    for a process that is no Python itself, once a collection)."""
    out: list[int] = []
    try:
        tasks = os.listdir(proc / str(pid) / "task")
    except OSError:
        return out
    found_file = False
    for tid in tasks[:64]:
        try:
            text = (proc / str(pid) / "task" / tid / "children").read_text()
        except OSError:
            continue
        found_file = True
        out.extend(int(c) for c in text.split() if c.isdigit())
    if not found_file:
        try:
            entries = [e for e in os.listdir(proc) if e.isdigit()][:MAX_SCAN]
        except OSError:
            entries = []
        for entry in entries:
            try:
                stat = (proc / entry / "stat").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 1 and fields[1] == str(pid).encode():
                out.append(int(entry))
    return sorted(out)[:16]
