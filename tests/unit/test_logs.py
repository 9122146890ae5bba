"""Tokens in logs as keyed hashes: named fields, and token values echoed inside free text."""

from __future__ import annotations

import pytest

import re

from auth_module.logs import RecentSecrets, mask, mask_tokens, remember_token
from auth_module.privacy import current

LABEL = re.compile(r"^tok:[0-9a-f]{6}$")

pytestmark = pytest.mark.timeout(10)


def test_mask_is_a_keyed_hash_that_keeps_nothing_of_the_value() -> None:
    assert LABEL.match(mask("VALID_RFID_1")) and LABEL.match(mask("ABC"))
    assert mask("04A1B2C3") == mask("04a1b2c3") == current().label("04A1B2C3")
    assert mask("04A1B2C3") != mask("04A1B2C4")


def test_named_fields_are_masked() -> None:
    event = mask_tokens(None, "info", {"event": "token received", "token": "VALID_RFID_1"})
    assert event["token"] == mask("VALID_RFID_1")


def test_a_token_echoed_in_free_text_is_masked_case_insensitively() -> None:
    remember_token("SECRET_CARD_0123456789")
    event = mask_tokens(None, "warning", {
        "event": "validator failed", "reason": "cannot handle card secret_card_0123456789 now"})
    assert "secret_card_0123456789" not in event["reason"].casefold()
    assert event["reason"] == f"cannot handle card {mask('SECRET_CARD_0123456789')} now"


def test_recent_secrets_forget_the_oldest_and_ignore_short_values() -> None:
    secrets = RecentSecrets(size=2)
    for value in ("AAAA1111", "BBBB2222", "CCCC3333", "ab"):
        secrets.add(value)
    assert secrets.scrub("AAAA1111 BBBB2222 CCCC3333 ab") == \
        f"AAAA1111 {mask('BBBB2222')} {mask('CCCC3333')} ab"


def test_a_token_at_the_end_of_a_sentence_is_masked() -> None:
    secrets = RecentSecrets()
    secrets.add("CARD_77889900")
    assert secrets.scrub("unknown card CARD_77889900.") == f"unknown card {mask('CARD_77889900')}."
