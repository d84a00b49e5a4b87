"""The README and the reference pages in docs/ keep telling the truth: their examples go through
the code they describe.

- Every ```toml block is a whole config that ``vigil agent check-config`` accepts, unless an
  HTML comment on the line before it says what else it is:

  - ``<!-- needs: env NAME; process NAME; user NAME; golden PATH; ca PATH; tls CERT KEY -->``:
    a whole config that assumes something of the host it runs on (an environment variable
    holding an API key, a ``[[process]]`` defined elsewhere in the file, a user that exists, a
    golden file, a CA bundle, or a certificate and its key at those paths). The test provides
    each, then runs check-config.
  - ``<!-- fragment: WHY -->``: a piece of a config (one table, shown alone). It is parsed as
    TOML and then skipped, with WHY as the reason.
  - ``<!-- refused: PATH -->``: a bad file. check-config must exit 2, and the line it prints
    (with the file at PATH) must be on the page.
  - ``<!-- fleet-file: TOKEN_FILE ... -->``: a ``vigil tui --fleet`` file, loaded by the fleet
    loader with the token files it names created beside it (a ``.pem`` among them: a CA file).

- Every ``vigil ...`` line of a ```sh block (and every ``$ vigil ...`` line of any block)
  parses, names a whole command, and that command's ``--help`` lists every option it uses; so
  does every ``vigil ...`` a pipeline step of a ```yaml block runs (``- vigil ...``,
  ``run: vigil ...``, ``ssh HOST vigil ...``, continued lines joined). The CLI reference names
  every command, with options its ``--help`` lists.
- Every relative link points at a file that exists and, with an ``#anchor``, at a heading there.

docs/development.md ("The docs are tested") tells contributors the same.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pwd
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from agent.cli import build_parser
from agent.cli import commands as cli
from tests.tls_support import write_pair
from tui.fleet import load_fleet

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```[ \t]*$", re.M | re.S)
# What comes before the command in a CI pipeline's step: a list item, `run:`, `ssh HOST`.
YAML_STEP = re.compile(r"^(?:-\s+)?(?:run:\s*)?(?:ssh\s+\S+\s+)?")
# A marker is an HTML comment alone on the line right before the fence.
MARKER = re.compile(r"<!--[ \t]*([^\n]*?)[ \t]*-->[ \t]*\n\Z")

# A self-signed CA certificate (valid until 2126) for examples that name a `tls_ca_file`.
TEST_CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBkjCCATegAwIBAgIUZVMhRBlm302rksOZBEEA84SI2MowCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSdmlnaWwgZG9jcyB0ZXN0IENBMCAXDTI2MTIwNjA0NTg0M1oY
DzIxMjYxMTEyMDQ1ODQzWjAdMRswGQYDVQQDDBJ2aWdpbCBkb2NzIHRlc3QgQ0Ew
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATEu5p0RYw6q/1EYHpsn5KoFLBChQgr
Jcj1Cr9XMFyC5wHgwTTSrQ8fNN/bz9VYVfcZx9/VkHt4n1DmwaTJHGBgo1MwUTAd
BgNVHQ4EFgQU2/kVVGxPafFDHF4Ge4r1B2r0eCAwHwYDVR0jBBgwFoAU2/kVVGxP
afFDHF4Ge4r1B2r0eCAwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBG
AiEA+BEelmk7GfLksesgdiyY0eE5bKkCiXLsoTYokSiSgR8CIQDFHQ3NA/9gEdsZ
stIbtbv1tDCGZxKNKjcuqtDZNp8wzg==
-----END CERTIFICATE-----
"""

# The files behind docs/configuration.md's "Other examples" of refused configs (the first
# example's file is on the page itself, marked `refused`).
OTHER_BAD_FILES = {
    "bad3.toml": '[agent]\nsample_intervall = "1s"\n',
    "bad2.toml": (
        '[[model]]\nname = "m"\nprotocol = "kserve_v2"\nurl = "http://127.0.0.1:8000"\n'
        "[model.canary]\n"
        'inputs = [{ name = "input", shape = [1, 4], datatype = "FP32", data = [1, 2, 3, 4] }]\n'
        "max_latency = 200\n"
    ),
    "bad4.toml": '[[process]]\nname = "p"\ncommand = "python -m server"\n',
}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page, with the marker comment right before it."""

    page: Path
    line: int
    lang: str
    text: str
    kind: str  # the marker's word ("needs", "fragment", ...), "" without one
    arg: str  # what follows the marker's colon

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def outside_fences(text: str) -> str:
    """The page without its code blocks (their lines blanked, so line numbers still hold)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def all_blocks() -> list[Block]:
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            marker = MARKER.search(text, 0, m.start())
            kind, _, arg = (marker.group(1) if marker else "").partition(":")
            out.append(
                Block(
                    page=page,
                    line=text.count("\n", 0, m.start()) + 1,
                    lang=m.group(1),
                    text=m.group(2),
                    kind=kind.strip(),
                    arg=arg.strip(),
                )
            )
    return out


BLOCKS = all_blocks()
TOML = [b for b in BLOCKS if b.lang == "toml"]


def test_the_pages_are_there() -> None:
    names = {p.name for p in PAGES}
    assert {"configuration.md", "cli.md", "api.md", "tui.md", "reports.md"} <= names
    assert {"metrics.md", "storage.md", "kpi.md", "agent.md", "fleet.md"} <= names
    assert len(TOML) >= 10 and any(b.kind == "" for b in TOML)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250, "the README is the short way in; the rest is docs/"


# --- configs ----------------------------------------------------------------------------------


def pretend_user_exists(name: str) -> Callable[[str], pwd.struct_passwd]:
    """``pwd.getpwnam`` that answers for ``name`` with the current user's entry."""
    real, me = pwd.getpwnam, pwd.getpwuid(os.getuid()).pw_name
    return lambda user: real(me if user == name else user)


def provide(block: Block, text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """What a `needs:` marker asks of the host, provided; returns the config text to check."""
    for need in filter(None, (n.strip() for n in block.arg.split(";"))):
        what, _, value = need.partition(" ")
        value = value.strip()
        if what == "env":
            monkeypatch.setenv(value, "docs-example-api-key")
        elif what == "process":
            text += f'\n[[process]]\nname = "{value}"\ncommand = ["true"]\n'
        elif what == "user":
            monkeypatch.setattr(pwd, "getpwnam", pretend_user_exists(value))
        elif what == "tls":
            # A throwaway certificate and key where the example names them.
            cert_path, key_path = value.split()
            assert cert_path in text and key_path in text, f"{block.where}: needs {need}"
            pair = write_pair(trustme.CA(), tmp_path / "tls")
            text = text.replace(cert_path, str(pair.cert)).replace(key_path, str(pair.key))
        elif what in ("golden", "ca"):
            assert value in text, f"{block.where}: needs {what} {value}, not in the example"
            local = tmp_path / Path(value).name
            if what == "golden":
                local.write_text(json.dumps({"outputs": {"y": [[0.1, 0.2, 0.7]]}}), "utf-8")
            else:
                local.write_text(TEST_CA_PEM, encoding="utf-8")
            text = text.replace(value, str(local))
        else:
            pytest.fail(
                f"{block.where}: unknown need {need!r} (env, process, user, golden, ca, tls)"
            )
    return text


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``vigil agent check-config --config PATH``: its exit code and what it printed."""
    code = cli.main(["agent", "check-config", "--config", str(path)])
    out = capsys.readouterr()
    return code, (out.out + out.err).strip()


@pytest.mark.parametrize("block", TOML, ids=lambda b: b.where)
def test_toml_example(
    block: Block,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if block.kind == "fragment":
        tomllib.loads(block.text)  # a fragment is still TOML
        pytest.skip(f"a fragment, parsed as TOML only: {block.arg}")
    if block.kind == "fleet-file":
        for token_file in block.arg.split():
            (tmp_path / token_file).parent.mkdir(parents=True, exist_ok=True)
            # A .pem is a CA file (`ca`); anything else a token file.
            content = TEST_CA_PEM if token_file.endswith(".pem") else "docs-example-token\n"
            (tmp_path / token_file).write_text(content, encoding="utf-8")
        fleet = tmp_path / "fleet.toml"
        fleet.write_text(block.text, encoding="utf-8")
        assert load_fleet(fleet), block.where
        return
    if block.kind == "refused":
        path = tmp_path / Path(block.arg).name
        path.write_text(block.text, encoding="utf-8")
        code, said = check_config(path, capsys)
        assert code == cli.EXIT_USAGE, f"{block.where}: accepted, but the page says refused"
        said = said.replace(str(path), block.arg)
        page = block.page.read_text(encoding="utf-8")
        assert re.search(rf"^{re.escape(said)}$", page, re.M), f"{block.where}: prints {said}"
        return
    assert block.kind in ("", "needs"), f"{block.where}: unknown marker {block.kind!r}"
    path = tmp_path / "vigil.toml"
    path.write_text(provide(block, block.text, tmp_path, monkeypatch), encoding="utf-8")
    code, said = check_config(path, capsys)
    assert code == cli.EXIT_OK, f"{block.where}: {said}"


def test_the_config_errors_are_what_check_config_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every refusal shown on the configuration page is what check-config prints for its file."""
    page = DOCS / "configuration.md"
    section = page.read_text(encoding="utf-8").split("\n## Errors\n", 1)[1]
    on_page = {Path(b.arg).name for b in TOML if b.page == page and b.kind == "refused"}
    assert on_page == {"bad.toml"}, "the page's bad.toml example moved"
    shown = re.findall(r"^vigil: config refused: /tmp/(\S+?\.toml):.*$", section, re.M)
    assert sorted(shown) == sorted({*on_page, *OTHER_BAD_FILES}), (
        "an example on the page without its file here, or back"
    )
    for name, text in OTHER_BAD_FILES.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        code, said = check_config(path, capsys)
        assert code == cli.EXIT_USAGE
        said = said.replace(str(path), f"/tmp/{name}")
        assert re.search(rf"^{re.escape(said)}$", section, re.M), said


# --- commands ---------------------------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def leaf_commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    subs = subcommands(parser)
    if not subs:
        yield prefix
    for name, sub in subs.items():
        yield from leaf_commands(sub, (*prefix, name))


def command_path(words: list[str]) -> tuple[str, ...]:
    """The command a ``vigil`` line names (``agent run``), from its first words."""
    parser = build_parser()
    path: tuple[str, ...] = ()
    for word in words:
        sub = subcommands(parser).get(word)
        if sub is None:
            break
        parser, path = sub, (*path, word)
    return path


def help_of(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    """``vigil COMMAND --help``, which must exit 0."""
    with pytest.raises(SystemExit) as done:
        cli.main([*command, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def listed(option: str, help_text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text) is not None


def vigil_lines() -> list[tuple[str, str]]:
    """(where, line) for every vigil command shown in a code block."""
    out = []
    for b in BLOCKS:
        text = re.sub(r"\\\n\s*", " ", b.text)  # continued lines are one command
        for offset, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if line.startswith("$ vigil "):
                line = line[2:].split(";")[0]  # a shown session: `$ vigil ...; echo $?`
            elif b.lang == "yaml":
                line = YAML_STEP.sub("", line, count=1)
                if not line.startswith("vigil "):
                    continue
            elif not (b.lang == "sh" and line.startswith("vigil ")):
                continue
            out.append((f"{b.page.relative_to(ROOT)}:{b.line + offset}", line))
    return out


VIGIL_LINES = vigil_lines()


def test_the_pages_show_commands() -> None:
    assert len(VIGIL_LINES) >= 10
    # The pipeline examples' steps are checked too.
    steps = [line for where, line in VIGIL_LINES if where.startswith("docs/deploy.md")]
    assert any(s.startswith("vigil canary --url") for s in steps)
    assert any(s.startswith("vigil deploy start") and "--wait" in s for s in steps)
    assert any(s.startswith("vigil deploy record") for s in steps)


@pytest.mark.parametrize(("where", "line"), VIGIL_LINES, ids=[w for w, _ in VIGIL_LINES])
def test_command_example(where: str, line: str, capsys: pytest.CaptureFixture[str]) -> None:
    words = shlex.split(line, comments=True)[1:]
    command = command_path(words)
    assert command in set(leaf_commands(build_parser())), f"{where}: not a whole command: {line}"
    help_text = help_of(command, capsys)
    for word in words[len(command) :]:
        if word.startswith("-") and word != "-":
            option = word.split("=", 1)[0]
            assert listed(option, help_text), f"{where}: vigil {' '.join(command)} has no {option}"
    build_parser().parse_args(words)  # the whole line parses (a usage error exits 2)


def cli_reference_rows() -> list[tuple[str, str]]:
    """(command cell, flags cell) of each row of docs/cli.md's command table."""
    rows = []
    for row in (DOCS / "cli.md").read_text(encoding="utf-8").splitlines():
        if row.startswith("| `vigil "):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
            rows.append((cells[0].strip("`").replace("\\|", "|"), cells[1]))
    return rows


def test_the_cli_reference_names_every_command_with_options_that_exist(
    capsys: pytest.CaptureFixture[str],
) -> None:
    covered: set[tuple[str, ...]] = set()
    for command_cell, flags_cell in cli_reference_rows():
        words = command_cell.split()[1:]
        # The command's words come first; `process start|stop|restart|release` is four commands.
        head = list(itertools.takewhile(lambda w: w[:1].islower(), words))
        options = re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", " ".join([flags_cell, *words]))
        for path in itertools.product(*(w.split("|") for w in head)):
            assert command_path(list(path)) == path, f"cli.md: no command vigil {' '.join(path)}"
            help_text = help_of(path, capsys)
            for option in options:
                assert listed(option, help_text), f"cli.md: vigil {' '.join(path)} has no {option}"
            covered.add(path)
    missing = set(leaf_commands(build_parser())) - covered
    assert not missing, f"docs/cli.md does not list: {sorted(' '.join(m) for m in missing)}"


# --- links ------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = outside_fences(page.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#+[ \t]+(.+?)[ \t]*$", text, re.M)}


def links() -> list[tuple[str, Path, str]]:
    """(where, page, target) of every relative link outside code blocks."""
    out = []
    for page in PAGES:
        text = outside_fences(page.read_text(encoding="utf-8"))
        for m in re.finditer(r"\]\(([^)\s]+)\)", text):
            if not re.match(r"[a-z][a-z0-9+.-]*:", m.group(1)):  # http:, mailto:, ...
                where = f"{page.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}"
                out.append((where, page, m.group(1)))
    return out


LINKS = links()


@pytest.mark.parametrize(("where", "page", "target"), LINKS, ids=[w for w, _, _ in LINKS])
def test_link(where: str, page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    linked = (page.parent / path).resolve() if path else page
    assert linked.exists(), f"{where}: {target} is not there"
    if anchor and linked.suffix == ".md":
        assert anchor in anchors(linked), f"{where}: no heading #{anchor} in {linked.name}"
