"""Reservations kept on disk, so a restart does not forget what the CSMS reserved.

One small JSON file, rewritten whole on every change::

    {"version": 1, "reservations": [{"evse_id": 1, "reservation": {...}},
                                    {"evse_id": null, "reservation": {...}}]}

Writes are atomic (temp file in the same directory, fsync, ``os.replace``, fsync of the
directory): a power cut leaves either the old file or the new one, never half of one.

Token values are personal data: with a :class:`~auth_module.privacy.TokenPrivacy` (the
module always gives one) the file holds a reservation's ``id_token`` and
``parent_id_token`` only as keyed hashes (``hmac-sha256:...`` of the case-folded value),
which is all that matching needs (:meth:`ReservationStore.token_matches`). A file written
before that, with raw values, is read as it is and rewritten with hashes on the first
start (the reservation book saves once after loading).

Reading never raises. A missing file is the normal first start. A file we cannot use
(bad JSON, wrong shape, an invalid reservation, unreadable) is logged once and moved
aside to ``<name>.corrupt-<UTC timestamp>`` so that an operator can look at it, and the
module starts with no reservations rather than not starting at all.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from .privacy import TokenPrivacy, is_digest
from .types import Reservation, same_token, to_wire

log = structlog.get_logger("store")

FORMAT_VERSION = 1

StoredReservations = list[tuple[int | None, Reservation]]


class CorruptStoreError(ValueError):
    """The file exists but its content is not a reservation list we understand."""


class ReservationStore:
    """Load and save the current reservations as one JSON file at ``path``."""

    def __init__(self, path: Path, privacy: TokenPrivacy | None = None) -> None:
        self.path = Path(path)
        self._privacy = privacy

    def token_matches(self, stored: str | None, value: str | None) -> bool:
        """Whether a reservation's token as stored (a value, or a keyed hash after a
        restart) is ``value``, case-insensitively."""
        if self._privacy is not None:
            return self._privacy.matches(stored, value)
        return same_token(stored, value)

    # --- reading ---------------------------------------------------------------------

    def load(self) -> StoredReservations:
        """The stored reservations; ``[]`` if there are none or the file is unusable."""
        self._remove_stale_temp_files()
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            self._set_aside(f"unreadable: {exc!r}")
            return []
        try:
            items = _parse(text)
        except CorruptStoreError as exc:
            self._set_aside(str(exc))
            return []
        raw = sum(1 for _, r in items for v in (r.id_token, r.parent_id_token)
                  if v is not None and not is_digest(v))
        if raw and self._privacy is not None:
            log.info("reservation store holds token values; rewriting it with keyed hashes",
                     path=str(self.path), values=raw)
            self.save(items)
        return items

    def _remove_stale_temp_files(self) -> None:
        """A kill in the middle of :meth:`save` leaves its temp file behind; the store itself
        is whole (the rename is atomic), so the leftover is only litter."""
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            _remove_quietly(str(leftover))

    def _set_aside(self, reason: str) -> None:
        """Move the unusable file out of the way and say so in a single log line."""
        moved_to: str | None = None
        move_error: str | None = None
        if self.path.is_file():
            target = self._corrupt_name()
            try:
                os.replace(self.path, target)
                moved_to = str(target)
            except OSError as exc:
                move_error = repr(exc)
        else:
            move_error = "not a regular file, left in place"
        log.error(
            "reservation store unusable, starting without stored reservations",
            path=str(self.path),
            reason=reason,
            moved_to=moved_to,
            move_error=move_error,
        )

    def _corrupt_name(self) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        candidate = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while candidate.exists():  # two bad files within the same microsecond: keep both
            candidate = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        return candidate

    # --- writing ---------------------------------------------------------------------

    def save(self, items: StoredReservations) -> bool:
        """Replace the file with ``items`` atomically. Logs and returns False on failure.

        A failed write must not fail the reservation command that caused it: the
        reservation still holds in memory, it just would not survive a restart.
        """
        document = {
            "version": FORMAT_VERSION,
            "reservations": [
                {"evse_id": evse_id, "reservation": self._private(to_wire(reservation))}
                for evse_id, reservation in items
            ],
        }
        data = json.dumps(document, indent=2, sort_keys=True).encode("utf-8")
        try:
            self._write_atomically(data)
        except OSError as exc:
            log.error("could not save reservations", path=str(self.path), error=repr(exc))
            return False
        return True

    def _private(self, wire: dict[str, Any]) -> dict[str, Any]:
        """The reservation as written: its tokens as keyed hashes."""
        if self._privacy is not None:
            for key in ("id_token", "parent_id_token"):
                if isinstance(wire.get(key), str):
                    wire[key] = self._privacy.digest(wire[key])
        return wire

    def _write_atomically(self, data: bytes) -> None:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, self.path)
        except BaseException:
            _remove_quietly(tmp_name)
            raise
        _fsync_directory(directory)


def _parse(text: str) -> StoredReservations:
    """Turn the file's text into reservations, or raise :class:`CorruptStoreError`."""
    try:
        document: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptStoreError(f"not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise CorruptStoreError("top level is not a JSON object")
    if document.get("version") != FORMAT_VERSION:
        raise CorruptStoreError(f"unsupported version {document.get('version')!r}")
    entries = document.get("reservations")
    if not isinstance(entries, list):
        raise CorruptStoreError("'reservations' is not a list")
    return [_parse_entry(i, entry) for i, entry in enumerate(entries)]


def _parse_entry(index: int, entry: Any) -> tuple[int | None, Reservation]:
    if not isinstance(entry, dict) or "reservation" not in entry:
        raise CorruptStoreError(f"reservations[{index}] is not an object with a 'reservation'")
    evse_id = entry.get("evse_id")
    # bool is an int in Python, but `true` is not an evse id.
    if evse_id is not None and (isinstance(evse_id, bool) or not isinstance(evse_id, int)):
        raise CorruptStoreError(f"reservations[{index}].evse_id is not an integer or null")
    try:
        reservation = Reservation.model_validate(entry["reservation"])
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CorruptStoreError(f"reservations[{index}] is invalid: {reason}") from exc
    return evse_id, reservation


def _remove_quietly(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; not every platform lets a directory be fsynced."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
