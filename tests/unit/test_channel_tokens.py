"""The worker channel's tokens: 256 random bits, only their sha256 kept, only the minted one matches."""

from __future__ import annotations

import base64

from pijobs.shared.channel import ChannelGrant, mint_token, token_matches, token_sha256


def test_a_token_carries_256_random_bits_and_the_grant_only_its_hash() -> None:
    token, grant = mint_token(attempt=3)
    assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) == 32
    assert (
        grant == ChannelGrant(attempt=3, token_sha256=token_sha256(token)) and token not in grant.token_sha256
    )
    assert mint_token(attempt=3)[0] != token


def test_only_the_minted_token_matches_its_grant() -> None:
    token, grant = mint_token(attempt=1)
    other, _ = mint_token(attempt=1)
    assert token_matches(token, grant)
    assert not token_matches(other, grant)
    assert not token_matches(token, None)  # a record without a channel (never dispatched) opens nothing


def test_a_malformed_token_is_refused_before_it_is_hashed() -> None:
    """Even one whose hash were on the record: only the token's own shape is ever compared."""
    for malformed in ("short", "x" * 129, "a" * 42 + "!"):
        assert not token_matches(malformed, ChannelGrant(attempt=1, token_sha256=token_sha256(malformed)))
