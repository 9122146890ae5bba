"""Token masking in logs: named fields, and token values echoed inside free text."""

from __future__ import annotations

import pytest

from auth_module.logs import RecentSecrets, mask, mask_tokens, remember_token

pytestmark = pytest.mark.timeout(10)


def test_mask_keeps_only_the_ends() -> None:
    assert mask("VALID_RFID_1") == "VA…_1"
    assert mask("ABC") == "***"


def test_named_fields_are_masked() -> None:
    event = mask_tokens(None, "info", {"event": "token received", "token": "VALID_RFID_1"})
    assert event["token"] == "VA…_1"


def test_a_token_echoed_in_free_text_is_masked_case_insensitively() -> None:
    remember_token("SECRET_CARD_0123456789")
    event = mask_tokens(None, "warning", {
        "event": "validator failed", "reason": "cannot handle card secret_card_0123456789 now"})
    assert "secret_card_0123456789" not in event["reason"].casefold()
    assert event["reason"] == "cannot handle card se…89 now"


def test_recent_secrets_forget_the_oldest_and_ignore_short_values() -> None:
    secrets = RecentSecrets(size=2)
    for value in ("AAAA1111", "BBBB2222", "CCCC3333", "ab"):
        secrets.add(value)
    assert secrets.scrub("AAAA1111 BBBB2222 CCCC3333 ab") == "AAAA1111 BB…22 CC…33 ab"


def test_a_token_at_the_end_of_a_sentence_is_masked() -> None:
    secrets = RecentSecrets()
    secrets.add("CARD_77889900")
    assert secrets.scrub("unknown card CARD_77889900.") == "unknown card CA…00."
