"""Bearer tokens: what ``Tokens.scope_of`` answers for whatever a client presents."""

from __future__ import annotations

import pytest

from agent.serve.tokens import Tokens

TOKENS = Tokens(operate="op-token-abc", read="read-token-xyz")


def test_each_token_has_its_scope() -> None:
    assert TOKENS.scope_of("op-token-abc") == "operate"
    assert TOKENS.scope_of("read-token-xyz") == "read"
    assert TOKENS.scope_of("op-token-ab") is None
    assert TOKENS.scope_of("") is None


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
def test_a_token_that_is_not_ascii_is_refused_not_a_crash(presented: str) -> None:
    # Non-UTF-8 bytes in the Authorization header used to raise UnicodeEncodeError here: an
    # unauthenticated 500 and a traceback in the agent's log for every such request.
    assert TOKENS.scope_of(presented) is None
