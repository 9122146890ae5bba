"""Keyed token labels and digests: stable per key, case-insensitive, revealing nothing."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from auth_module.privacy import KeyFileError, TokenPrivacy, is_digest, load_or_create_key

pytestmark = pytest.mark.timeout(10)

KEY = bytes(range(32))


def test_label_is_stable_case_insensitive_and_shows_no_character() -> None:
    p = TokenPrivacy(KEY)
    label = p.label("04A1B2C3")
    assert label.startswith("tok:") and len(label) == len("tok:") + 6
    assert p.label("04a1b2c3") == label
    assert p.label("04A1B2C4") != label
    assert TokenPrivacy(bytes(reversed(KEY))).label("04A1B2C3") != label  # another station


def test_digest_matches_case_insensitively() -> None:
    p = TokenPrivacy(KEY)
    d = p.digest("Card-One")
    assert is_digest(d) and "Card-One".casefold() not in d and len(d) > 36
    assert p.digest(d) == d  # already a digest
    assert p.matches(d, "CARD-ONE") and p.matches("card-one", d) and p.matches("a", "A")
    assert not p.matches(d, "Card-Two") and not p.matches(None, "x") and not p.matches(d, None)
    assert p.label(d) == p.label("card-one")  # a stored token logs as the live one does


def test_repr_shows_no_key() -> None:
    assert KEY.hex() not in repr(TokenPrivacy(KEY))


def test_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "auth-privacy.key"
    key, notes = load_or_create_key(path)
    assert len(key) == 32 and notes and stat.S_IMODE(path.stat().st_mode) == 0o600
    again, notes = load_or_create_key(path)
    assert again == key and not notes
    assert list(path.parent.iterdir()) == [path]  # no temp file left


def test_key_file_mode_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "k"
    load_or_create_key(path)
    path.chmod(0o644)
    _, notes = load_or_create_key(path)
    assert notes and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_file_that_is_not_a_key_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("hello\n")
    with pytest.raises(KeyFileError, match="not a privacy key"):
        load_or_create_key(path)
    assert path.read_text() == "hello\n"


def test_store_keeps_keyed_hashes_and_matches_them(tmp_path: Path) -> None:
    from auth_module.store import ReservationStore
    from auth_module.types import Reservation

    p = TokenPrivacy(KEY)
    store = ReservationStore(tmp_path / "r.json", privacy=p)
    r = Reservation(reservation_id=1, id_token="Card-One", expiry_time="2030-01-01T00:00:00Z",
                    parent_id_token="Group-Two")
    assert store.save([(1, r)])
    text = (tmp_path / "r.json").read_text()
    assert "card-one" not in text.lower() and "group-two" not in text.lower()
    [(evse_id, loaded)] = store.load()
    assert evse_id == 1 and is_digest(loaded.id_token) and is_digest(loaded.parent_id_token)
    assert store.token_matches(loaded.id_token, "CARD-ONE")
    assert store.token_matches(loaded.parent_id_token, "group-two")
    assert not store.token_matches(loaded.id_token, "Card-Two")
    stat_mode = stat.S_IMODE((tmp_path / "r.json").stat().st_mode)
    assert stat_mode & 0o077 == 0


def test_store_with_raw_values_is_rewritten_when_read(tmp_path: Path) -> None:
    from auth_module.store import ReservationStore
    from auth_module.types import Reservation

    r = Reservation(reservation_id=1, id_token="Card-One", expiry_time="2030-01-01T00:00:00Z")
    ReservationStore(tmp_path / "r.json").save([(None, r)])  # an old module: raw values
    assert "Card-One" in (tmp_path / "r.json").read_text()
    store = ReservationStore(tmp_path / "r.json", privacy=TokenPrivacy(KEY))
    [(_, loaded)] = store.load()
    assert "Card-One" not in (tmp_path / "r.json").read_text()
    assert loaded.id_token == "Card-One"  # this run still knows it; the file does not
    assert store.token_matches(store.load()[0][1].id_token, "card-one")
