"""The console's edits to the first ``allow_list`` validator's file.

Each change reads the file as it is now, checks the whole new list with the validator's own
parser, writes it to a temporary file in the same folder and renames it over the old one
(atomic: the validator never reads half a file), then makes the validator load it at once,
so the change counts from the next token on. Comments in a YAML file are not kept.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
import threading
from datetime import UTC, date, datetime
from typing import Any

import yaml

from ..plugins.allow_list import (
    FIELDS,
    AllowListValidator,
    TokensFileError,
    load_tokens,
    parse_csv,
    parse_tokens,
)

EDITABLE = tuple(f for f in FIELDS if f != "id_token")


class EntryError(ValueError):
    """A body the allow list cannot take (one line, for a 400 answer)."""


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


class AllowListEditor:
    def __init__(self, validator: AllowListValidator) -> None:
        self.validator = validator
        self.path = validator.file.path
        self.csv = validator.file.fmt == "csv" or (
            validator.file.fmt == "auto" and self.path.suffix.lower() == ".csv")
        self._lock = threading.Lock()

    def entries(self) -> list[dict[str, Any]]:
        """The list as written in the file, one dict per token, in file order."""
        if self.csv:
            parsed = load_tokens(self.path, "csv")
            return [self._from_entry(e) for e in parsed.values()]
        data = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        items = data.get("tokens") if isinstance(data, dict) else data
        return [{k: _plain(v) for k, v in item.items() if v is not None}
                for item in items or [] if isinstance(item, dict)]

    @staticmethod
    def _from_entry(e: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"id_token": e.id_token, "status": e.status.value}
        if e.expiry is not None:
            out["expiry"] = _plain(e.expiry)
        if e.parent_id_token:
            out["parent_id_token"] = e.parent_id_token
        if e.evse_ids is not None:
            out["evse_ids"] = list(e.evse_ids)
        if e.nickname:
            out["nickname"] = e.nickname
        return out

    def put(self, id_token: str, body: Any) -> tuple[bool, dict[str, Any]]:
        """Add or replace ``id_token``; (True if it is new, the entry as stored)."""
        if not isinstance(body, dict):
            raise EntryError("the body must be a JSON object (an allow-list entry)")
        unknown = sorted(set(body) - set(EDITABLE))
        if unknown:
            raise EntryError(f"unknown key {unknown[0]!r} (keys: {', '.join(EDITABLE)})")
        entry = {"id_token": id_token, **{k: v for k, v in body.items()
                                            if v is not None and v != "" and v != []}}
        with self._lock:
            items = self.entries()
            key = id_token.casefold()
            at = next((i for i, e in enumerate(items)
                       if str(e.get("id_token", "")).casefold() == key), None)
            if at is None:
                items.append(entry)
            else:
                entry["id_token"] = items[at]["id_token"]
                items[at] = entry
            self._save(items)
        return at is None, entry

    def delete(self, id_token: str) -> bool:
        with self._lock:
            items = self.entries()
            key = id_token.casefold()
            kept = [e for e in items if str(e.get("id_token", "")).casefold() != key]
            if len(kept) == len(items):
                return False
            self._save(kept)
            return True

    def _render(self, items: list[dict[str, Any]]) -> str:
        if not self.csv:
            return yaml.safe_dump({"tokens": items}, sort_keys=False, allow_unicode=True)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(FIELDS)
        for e in items:
            writer.writerow([" ".join(map(str, e.get(f) or [])) if f == "evse_ids"
                             else e.get(f, "") for f in FIELDS])
        return out.getvalue()

    def _save(self, items: list[dict[str, Any]]) -> None:
        text = self._render(items)
        try:  # the validator's own parser has the last word on what is valid
            if self.csv:
                parse_csv(text, "entry")
            else:
                parse_tokens(yaml.safe_load(text), "entry")
        except TokensFileError as exc:
            raise EntryError(str(exc).replace("entry: ", "", 1)) from None
        try:
            mode = self.path.stat().st_mode & 0o777
        except OSError:
            mode = 0o600
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), mode)
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.validator.file.load()  # from the next token on, not after reload_interval_s

    def nickname(self, value: str) -> str | None:
        """From the validator's current list (cached by it; no file read per call)."""
        entry = self.validator.file.tokens().get(value.casefold())
        return entry.nickname if entry is not None else None

    def known(self, value: str) -> bool:
        return value.casefold() in self.validator.file.tokens()
