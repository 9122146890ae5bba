"""Token values are personal data: what logs and files show instead of them.

A card UID identifies a person, and a short one (``04A1B2C3``: 4 bytes) is easily guessed
from any part of it, so logs never show a character of it. They show a *keyed hash*
instead, ``tok:9f3a1c``: the first 24 bits of HMAC-SHA256(key, case-folded value). The
same card gives the same label on one station (lines can be correlated), a different one on
another station, and without the key nobody can test guesses against a label: that is why
the hash is keyed, a plain hash of a 4-byte UID is reversed by trying them all.

The reservation store keeps the full keyed hash (:meth:`TokenPrivacy.digest`), which is all
that matching needs (tokens compare case-insensitively, so the value is case-folded first).

The key is 32 random bytes made on first start and kept beside the reservation store with
mode 0600 (:func:`load_or_create_key`). Losing it only means that stored reservations no
longer match their tokens and that labels change; it never exposes a token.

``logging.show_tokens: true`` shows the values in logs again (for a bench, never for a
public charger); the store keeps digests either way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
import threading
from pathlib import Path

__all__ = [
    "DIGEST_PREFIX",
    "TokenPrivacy",
    "current",
    "install",
    "is_digest",
    "load_or_create_key",
]

KEY_BYTES = 32
LABEL_PREFIX = "tok:"
LABEL_HEX = 6
DIGEST_PREFIX = "hmac-sha256:"
"""What a stored token starts with: no token value can (values are at most 36 characters,
a digest is 76)."""


class KeyFileError(Exception):
    """The key file exists but cannot be used; ``str()`` is one line naming it."""


class TokenPrivacy:
    """Labels for logs and digests for files, under one station's key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a privacy key needs at least 16 bytes")
        self._key = key

    def __repr__(self) -> str:  # never the key
        return "TokenPrivacy(<key>)"

    def _mac(self, value: str) -> str:
        return hmac.new(self._key, value.casefold().encode("utf-8"), hashlib.sha256).hexdigest()

    def digest(self, value: str) -> str:
        """What a file keeps instead of ``value``: the full keyed hash, case-folded first."""
        if is_digest(value):
            return value
        return DIGEST_PREFIX + self._mac(value)

    def label(self, value: str) -> str:
        """What a log line shows instead of ``value`` (logs.py leaves values alone with
        ``logging.show_tokens: true``)."""
        if is_digest(value):  # a token known only by its stored digest
            return LABEL_PREFIX + value[len(DIGEST_PREFIX):][:LABEL_HEX]
        return LABEL_PREFIX + self._mac(value)[:LABEL_HEX]

    def matches(self, stored: str | None, value: str | None) -> bool:
        """Whether ``stored`` (a value or a digest) is the token ``value``, case-insensitively."""
        if stored is None or value is None:
            return False
        if is_digest(stored) or is_digest(value):
            return hmac.compare_digest(self.digest(stored), self.digest(value))
        return stored.casefold() == value.casefold()


    def seal(self, data: bytes) -> str:
        """``data`` encrypted and authenticated (AES-256-GCM under a key derived from the
        station's key), as text: for a file that must give token values back (the OCPP
        authorization cache). Needs the ``cryptography`` package (the ``ocpp`` extra)."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = secrets.token_bytes(12)
        sealed = AESGCM(self._seal_key()).encrypt(nonce, data, _SEAL_CONTEXT)
        return SEAL_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def unseal(self, text: str) -> bytes:
        """What :meth:`seal` sealed; ValueError if it was sealed under another key or changed."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not text.startswith(SEAL_PREFIX):
            raise ValueError("not sealed data")
        try:
            raw = base64.b64decode(text[len(SEAL_PREFIX):], validate=True)
            return AESGCM(self._seal_key()).decrypt(raw[:12], raw[12:], _SEAL_CONTEXT)
        except (InvalidTag, ValueError) as exc:
            raise ValueError("sealed under another key, or damaged") from exc

    def _seal_key(self) -> bytes:
        return hmac.new(self._key, b"auth-module seal v1", hashlib.sha256).digest()


SEAL_PREFIX = "sealed-v1:"
_SEAL_CONTEXT = b"auth-module"


def is_digest(value: str | None) -> bool:
    return value is not None and value.startswith(DIGEST_PREFIX)


# --- the process's privacy (what log processors use) -------------------------------------

_lock = threading.Lock()
# Until the station's key is loaded (tests, tools), a key of this process only: labels are
# stable within the process and still reveal nothing.
_current = TokenPrivacy(secrets.token_bytes(KEY_BYTES))


def install(privacy: TokenPrivacy) -> None:
    """Make ``privacy`` the one that log lines use from now on."""
    global _current
    with _lock:
        _current = privacy


def current() -> TokenPrivacy:
    return _current


# --- the key file --------------------------------------------------------------------------


def load_or_create_key(path: Path) -> tuple[bytes, list[str]]:
    """The station's key from ``path``, made (mode 0600) if there is none yet.

    Returns the key and notes worth a log line (a mode fixed). Raises
    :class:`KeyFileError` for a key file that exists but is not one: replacing it silently
    would orphan every stored reservation.
    """
    notes: list[str] = []
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return _create(path), [f"privacy key made: {path}"]
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the privacy key: {exc.strerror or exc}") from None
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{path}: not a privacy key ({KEY_BYTES} bytes in hex); move it "
                           "aside to make a new one (stored reservations will then be lost)")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(0o600)
            notes.append(f"privacy key {path} was mode {mode:o}; set to 600")
    except OSError:
        pass
    return key, notes


def _create(path: Path) -> bytes:
    """Write a new key atomically and only if there is none (``link`` fails if one appeared
    meanwhile; then that one is used)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return load_or_create_key(path)[0]
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return key
