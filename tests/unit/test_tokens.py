"""Bearer tokens: the registry the agent checks them with, and the token store that
``vigil token`` edits (named tokens, rotation with a grace period, revocation, expiry)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from agent.serve import tokenfile
from agent.serve.identity import Acting, acting_as, acting_for, annotate
from agent.serve.tokenfile import TokenError
from agent.serve.tokens import AUDITED_FILE, Grant, TokenRegistry, load_or_create
from storage.records import Event

T0 = 1_800_000_000_000
OP, READ = "op-token-abc", "read-token-xyz"


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir(mode=0o700)
    (d / "api-token").write_text(OP + "\n")
    (d / "api-token.read").write_text(READ + "\n")
    return d


@pytest.fixture
def clock() -> Clock:
    return Clock()


def registry(data: Path, clock: Clock, events: list[Event] | None = None) -> TokenRegistry:
    return TokenRegistry(data, events.append if events is not None else None, clock)


def test_each_default_token_has_its_scope_and_name(data: Path, clock: Clock) -> None:
    reg = registry(data, clock)
    assert reg.identify(OP) == Grant("local-operate", "operate", local=True)
    assert reg.identify(READ) == Grant("local-read", "read", local=True)
    assert reg.scope_of(OP) == "operate" and reg.scope_of(READ) == "read"
    assert reg.identify("op-token-ab") is None
    assert reg.identify("") is None


@pytest.mark.parametrize(
    "presented",
    [
        "\udcff\udcfe",  # bytes 0xff 0xfe as a server decodes them with surrogateescape
        "op-token-abc\udc80",
        "\xff\xfe",  # the same bytes decoded as latin-1
        "op-token-abé",
        "jeton-\u00e9\u4e2d",
        "op-token-abc\x00",
    ],
)
def test_a_token_that_is_not_ascii_is_refused_not_a_crash(
    presented: str, data: Path, clock: Clock
) -> None:
    # Non-UTF-8 bytes in the Authorization header used to raise UnicodeEncodeError here: an
    # unauthenticated 500 and a traceback in the agent's log for every such request.
    assert registry(data, clock).identify(presented) is None


def test_load_or_create_makes_the_default_tokens_once(tmp_path: Path) -> None:
    reg = load_or_create(tmp_path / "d")
    op = (tmp_path / "d" / "api-token").read_text().strip()
    assert len(op) >= 40 and reg.scope_of(op) == "operate"
    load_or_create(tmp_path / "d")
    assert (tmp_path / "d" / "api-token").read_text().strip() == op


def test_a_named_token_is_stored_as_a_hash_only(data: Path, clock: Clock) -> None:
    reg = registry(data, clock)
    value = tokenfile.create(data, "alice", "operate", by="root@h", now_ms=clock.ms)
    assert reg.identify(value) == Grant("alice", "operate", local=False)  # no restart
    store = data / tokenfile.STORE_FILE
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    text = store.read_text()
    assert value not in text and tokenfile.digest(value) in text
    listed = tokenfile.list_tokens(data)
    assert [(e.name, e.scope) for e in listed] == [
        ("local-operate", "operate"),
        ("local-read", "read"),
        ("alice", "operate"),
    ]
    assert value not in json.dumps([repr(e) for e in listed])
    read_only = tokenfile.create(data, "dash", "read", by="root@h", now_ms=clock.ms)
    assert reg.identify(read_only) == Grant("dash", "read", local=False)


def test_names_scopes_and_reserved_names_are_checked(data: Path, clock: Clock) -> None:
    tokenfile.create(data, "alice", "read", by="r", now_ms=clock.ms)
    for name, scope, says in [
        ("alice", "read", "exists"),
        ("local-x", "read", "the agent's own"),
        ("bad name", "read", "expected 1-64 characters"),
        ("-x", "read", "starting with a letter"),
        ("x" * 65, "read", "expected 1-64"),
        ("bob", "admin", "expected read or operate"),
    ]:
        with pytest.raises(TokenError, match=says):
            tokenfile.create(data, name, scope, by="r", now_ms=clock.ms)
    with pytest.raises(TokenError, match="known: alice, local-operate, local-read"):
        tokenfile.rotate(data, "bob", grace_s=0, by="r", now_ms=clock.ms)
    with pytest.raises(TokenError, match=r"cannot be revoked.*rotate local-read --grace 0s"):
        tokenfile.revoke(data, "local-read", by="r", now_ms=clock.ms)
    with pytest.raises(TokenError, match="named tokens: alice"):
        tokenfile.revoke(data, "bob", by="r", now_ms=clock.ms)
    with pytest.raises(TokenError, match="no data dir"):
        tokenfile.create(data / "nope", "carol", "read", by="r", now_ms=clock.ms)


def test_a_rotated_named_token_works_through_its_grace_then_not(data: Path, clock: Clock) -> None:
    reg = registry(data, clock)
    old = tokenfile.create(data, "ci", "operate", by="r", now_ms=clock.ms)
    new = tokenfile.rotate(data, "ci", grace_s=60, by="r", now_ms=clock.ms)
    assert new is not None and new != old
    assert reg.identify(new) == reg.identify(old) == Grant("ci", "operate", local=False)
    clock.ms += 59_999
    assert reg.identify(old) is not None
    clock.ms += 1
    assert reg.identify(old) is None  # the grace is over, with no file change
    assert reg.identify(new) is not None
    # A rotation without grace refuses the old value at once.
    newer = tokenfile.rotate(data, "ci", grace_s=0, by="r", now_ms=clock.ms)
    assert newer is not None
    assert reg.identify(new) is None and reg.identify(newer) is not None


def test_a_rotated_default_token_is_rewritten_for_local_tools(data: Path, clock: Clock) -> None:
    reg = registry(data, clock)
    assert tokenfile.rotate(data, "local-operate", grace_s=2, by="r", now_ms=clock.ms) is None
    new = (data / "api-token").read_text().strip()
    assert new != OP and stat.S_IMODE((data / "api-token").stat().st_mode) == 0o600
    assert reg.identify(new) == reg.identify(OP) == Grant("local-operate", "operate", True)
    assert reg.identify(READ) is not None  # the other one is untouched
    clock.ms += 2_000
    assert reg.identify(OP) is None and reg.identify(new) is not None
    entry = next(e for e in tokenfile.list_tokens(data) if e.name == "local-operate")
    assert entry.rotated_ms == T0 and entry.sha256 is None  # its value stays in its file only


def test_revoked_and_expired_tokens_are_refused(data: Path, clock: Clock) -> None:
    reg = registry(data, clock)
    alice = tokenfile.create(data, "alice", "operate", by="r", now_ms=clock.ms)
    temp = tokenfile.create(data, "temp", "read", by="r", now_ms=clock.ms, expires_s=10)
    rotated = tokenfile.rotate(data, "alice", grace_s=3600, by="r", now_ms=clock.ms)
    assert reg.identify(alice) is not None and reg.identify(temp) is not None
    tokenfile.revoke(data, "alice", by="r", now_ms=clock.ms)
    # Revoked: the current value and the one in its grace period both, from the next check.
    assert reg.identify(alice) is None and reg.identify(str(rotated)) is None
    clock.ms += 10_000
    assert reg.identify(temp) is None
    # A name freed by revocation can be used again, with a new value.
    again = tokenfile.create(data, "alice", "read", by="r", now_ms=clock.ms)
    assert reg.identify(again) == Grant("alice", "read", local=False)
    assert reg.identify(alice) is None


def test_a_check_costs_stats_while_nothing_changes(
    data: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenfile.create(data, "alice", "read", by="r", now_ms=clock.ms)
    reads: list[Path] = []
    real = tokenfile.read_store
    monkeypatch.setattr("agent.serve.tokens.read_store", lambda d: (reads.append(d), real(d))[1])
    reg = registry(data, clock)
    for _ in range(100):
        reg.identify(OP)
    assert len(reads) == 1
    bob = tokenfile.create(data, "bob", "read", by="r", now_ms=clock.ms)
    assert reg.identify(bob) is not None and len(reads) == 2


def test_a_broken_store_refuses_named_tokens_and_keeps_the_local_ones(
    data: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    reg = registry(data, clock)
    alice = tokenfile.create(data, "alice", "operate", by="r", now_ms=clock.ms)
    assert reg.identify(alice) is not None
    (data / tokenfile.STORE_FILE).write_text("{not json")
    with caplog.at_level(logging.ERROR):
        assert reg.identify(alice) is None
        assert reg.identify(OP) is not None
        reg.identify(OP)
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "token store refused" in caplog.records[0].getMessage()
    with pytest.raises(tokenfile.TokenFileError, match="not valid JSON"):
        tokenfile.list_tokens(data)


def test_changes_become_audit_events_once_and_never_hold_a_value(data: Path, clock: Clock) -> None:
    events: list[Event] = []
    reg = registry(data, clock, events)
    value = tokenfile.create(data, "alice", "operate", by="ann@h", now_ms=clock.ms, expires_s=60)
    rotated = tokenfile.rotate(data, "alice", grace_s=30, by="bo@h", now_ms=clock.ms + 1)
    tokenfile.rotate(data, "local-read", grace_s=0, by="bo@h", now_ms=clock.ms + 2)
    tokenfile.revoke(data, "alice", by="cy@h", now_ms=clock.ms + 3)
    reg.check()
    assert [(e.kind, e.subject, e.data["by"]) for e in events] == [
        ("token.created", "token:alice", "ann@h"),
        ("token.rotated", "token:alice", "bo@h"),
        ("token.rotated", "token:local-read", "bo@h"),
        ("token.revoked", "token:alice", "cy@h"),
    ]
    assert events[0].data["expires_ms"] == T0 + 60_000
    assert events[1].data["grace_until_ms"] == T0 + 1 + 30_000
    assert events[1].message == "operate token alice rotated by bo@h, old value valid 30s more"
    new_read = (data / "api-token.read").read_text().strip()
    for secret in (value, str(rotated), READ, new_read, OP):
        assert secret not in repr(events)
    # Recorded once: a check with nothing new, and the next agent, record nothing again.
    reg.check()
    registry(data, clock, (again := [])).check()
    assert len(events) == 4 and again == []
    assert stat.S_IMODE((data / AUDITED_FILE).stat().st_mode) == 0o600
    # A store made afresh (the file deleted) is audited from its start.
    (data / tokenfile.STORE_FILE).unlink()
    tokenfile.create(data, "dan", "read", by="r", now_ms=clock.ms)
    reg.check()
    assert [e.subject for e in events[4:]] == ["token:dan"]


def test_the_cli_user_as_root_gives_the_files_to_the_data_dirs_owner(
    data: Path, clock: Clock
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: chown")
    os.chown(data, 65534, 65534)
    tokenfile.create(data, "alice", "read", by="r", now_ms=clock.ms)
    tokenfile.rotate(data, "local-operate", grace_s=1, by="r", now_ms=clock.ms)
    for name in (tokenfile.STORE_FILE, tokenfile.LOCK_FILE, "api-token"):
        st = (data / name).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o600), name


# --- who acts -----------------------------------------------------------------------------------


class FakeRequest:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


def acting(grant: Grant, header: str | None = None) -> Acting:
    headers = {"X-Vigil-Operator": header} if header is not None else {}
    return acting_for(FakeRequest(headers), grant)  # type: ignore[arg-type]


def test_a_named_token_is_who_acts_whatever_the_header_says() -> None:
    alice = Grant("alice", "operate", local=False)
    assert (acting(alice).by, acting(alice).claimed) == ("alice", None)
    assert (acting(alice, "alice").by, acting(alice, "alice").claimed) == ("alice", None)
    said = acting(alice, "bob@laptop\x1b[31m")
    assert (said.by, said.token, said.claimed) == ("alice", "alice", "bob@laptop?[31m")
    # The default tokens name no person: the header does, as before named tokens.
    local = Grant("local-operate", "operate", local=True)
    assert (acting(local, "ann@desk").by, acting(local, "ann@desk").claimed) == ("ann@desk", None)
    assert acting(local).by == "local-operate"
    assert len(acting(local, "x" * 500).by) == 100


async def test_events_of_the_requests_own_task_name_the_token() -> None:
    event = Event(T0, "process.restart_requested", "process:p", "m", {"by": "alice"})
    named = Grant("alice", "operate", local=False)
    assert annotate(event) is event  # no request
    later: list[Event] = []

    async def spawned() -> None:
        later.append(annotate(event))

    with acting_as(acting(named, "bob@laptop")):
        marked = annotate(event)
        # Work the request starts inherits the context but is not the request's doing.
        await asyncio.create_task(spawned())
        in_thread = await asyncio.to_thread(annotate, event)
    assert marked.data == {"by": "alice", "token": "alice", "claimed": "bob@laptop"}
    assert later == [event] and in_thread is event
    assert annotate(event) is event
    keep = Event(T0, "k", "s", "m", {"by": "x", "token": "given"})
    with acting_as(acting(named)):
        assert annotate(keep).data == {"by": "x", "token": "given"}


# --- the command line ---------------------------------------------------------------------------


def test_the_token_commands_print_values_once_and_exit_as_documented(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import commands as cli

    cfg = data.parent / "vigil.toml"
    cfg.write_text(f'[agent]\nhost = "h"\ndata_dir = "{data}"\n', encoding="utf-8")

    def vigil(*args: str) -> tuple[int, str, str]:
        code = cli.main(["token", *args, "--config", str(cfg)])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, err = vigil("create", "ci", "--scope", "operate", "--expires", "90d")
    value = out.strip()
    assert code == 0 and out == value + "\n" and len(value) >= 40  # the value alone on stdout
    assert "expires in 90d" in err and value not in err
    assert tokenfile.digest(value) in (data / tokenfile.STORE_FILE).read_text()
    code, out, _ = vigil("list")
    rows = out.splitlines()
    assert code == 0 and rows[0].split() == [
        "NAME",
        "SCOPE",
        "CREATED",
        "EXPIRES",
        "ROTATED",
        "OLD",
        "VALUE",
        "UNTIL",
    ]
    assert [r.split()[:2] for r in rows[1:]] == [
        ["local-operate", "operate"],
        ["local-read", "read"],
        ["ci", "operate"],
    ]
    assert value not in out and OP not in out
    code, out, err = vigil("rotate", "--grace", "0s")  # bare: the default operate token
    assert code == 0 and "api-token" in out and "refused now" in out
    assert (data / "api-token").read_text().strip() not in out + err
    code, out, err = vigil("rotate", "ci", "--json")
    assert code == 0 and json.loads(out)["rotated"] == "ci" and "works until" not in out
    for args, says in [
        (("create", "ci", "--scope", "read"), "exists"),
        (("create", "x", "--scope", "read", "--expires", "0s"), "--expires: expected more than"),
        (("create", "x", "--scope", "read", "--expires", "200y"), "at most 100y"),
        (("rotate", "ci", "--grace", "soon"), "--grace: expected a duration"),
        (("revoke", "nobody"), "no token named 'nobody'"),
    ]:
        code, out, err = vigil(*args)
        assert (code, out) == (cli.EXIT_USAGE, ""), args
        assert says in err, (args, err)
    (data / tokenfile.STORE_FILE).write_text("[]")
    code, _, err = vigil("list")
    assert code == 1 and "is not a token store" in err  # a failure, not a usage error
