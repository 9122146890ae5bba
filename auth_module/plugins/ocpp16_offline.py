"""The OCPP 1.6 validator's offline side: the idTagInfo it keeps, the Authorization Cache,
the Local Authorization List, and the decision taken from them while the CSMS is away.
Pure of any connection (see :mod:`.ocpp16` for the CSMS link)."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from .. import privacy
from ..text import format_utc, one_line, parse_rfc3339
from ..types import AuthorizationStatus, IdToken, IdTokenType, ValidationResult
from .allow_list import TokenEntry, TokensFile, TokensFileError
from .loader import PluginError

log = structlog.get_logger("ocpp16")

# OCPP 1.6 gives no type for parentIdTag; like EVerest's OCPP 1.6 module, call it Central.
PARENT_TOKEN_TYPE = IdTokenType.Central
CACHE_MAX_ENTRIES = 1000
OCPP16_STATUSES = frozenset({
    AuthorizationStatus.Accepted,
    AuthorizationStatus.Blocked,
    AuthorizationStatus.Expired,
    AuthorizationStatus.Invalid,
    AuthorizationStatus.ConcurrentTx,
})


def _utcnow() -> datetime:
    return datetime.now(UTC)


class OptionError(PluginError, ValueError):
    """An option the validator cannot use; ``option`` names it for the loader's line."""


# --- idTagInfo ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IdTagInfo:
    """What is known about one id tag: from the CSMS (``idTagInfo``) or the local list.

    ``cacheable`` is false when the CSMS's expiryDate could not be read: such an answer is
    passed on but never cached (its validity period is unknown).
    """

    status: AuthorizationStatus
    expiry: datetime | None = None
    parent_id_tag: str | None = None
    evse_ids: tuple[int, ...] | None = None
    cacheable: bool = True

    def effective_status(self, now: datetime) -> AuthorizationStatus:
        """The status at ``now``: an Accepted entry past its expiry is Expired."""
        if (self.status == AuthorizationStatus.Accepted and self.expiry is not None
                and self.expiry <= now):
            return AuthorizationStatus.Expired
        return self.status

    def to_result(self, status: AuthorizationStatus | None = None) -> ValidationResult:
        parent = (IdToken(value=self.parent_id_tag, type=PARENT_TOKEN_TYPE)
                  if self.parent_id_tag else None)
        return ValidationResult(
            authorization_status=status or self.status,
            expiry_time=format_utc(self.expiry) if self.expiry is not None else None,
            parent_id_token=parent,
            evse_ids=list(self.evse_ids) if self.evse_ids is not None else None,
        )


def parse_id_tag_info(payload: Any) -> IdTagInfo:
    """The ``idTagInfo`` of an ``Authorize.conf`` as the ``ocpp`` package hands it over.

    The package converts the keys to snake_case but leaves nested objects as plain dicts:
    ``{"status": ..., "expiry_date": ..., "parent_id_tag": ...}``.
    """
    if is_dataclass(payload) and not isinstance(payload, type):
        payload = asdict(payload)
    if not isinstance(payload, dict):
        raise ValueError(f"idTagInfo is not an object: {payload!r}")
    try:
        status = AuthorizationStatus(str(payload["status"]))
    except (KeyError, ValueError):
        raise ValueError(f"idTagInfo has no usable status: {payload.get('status')!r}") from None
    if status not in OCPP16_STATUSES:
        raise ValueError(f"idTagInfo status {status.value!r} is not an OCPP 1.6 status")
    expiry: datetime | None = None
    cacheable = True
    raw_expiry = payload.get("expiry_date")
    if raw_expiry is not None:
        try:
            expiry = parse_rfc3339(raw_expiry)
        except ValueError:
            log.warning("ocpp16 unreadable expiryDate from the csms; answer not cached",
                        expiry_date=raw_expiry)
            cacheable = False
    parent = payload.get("parent_id_tag")
    return IdTagInfo(status=status, expiry=expiry, parent_id_tag=parent or None,
                     cacheable=cacheable)


# --- the authorization cache ----------------------------------------------------------------


class AuthorizationCache:
    """The id tags the CSMS answered, with their idTagInfo (OCPP 1.6 Authorization Cache).

    Rules: an Accepted, Blocked, Expired or Invalid answer replaces the tag's entry (so a tag
    the CSMS blocked is known to be blocked when offline, not "unknown"); a ConcurrentTx
    answer leaves the entry as it is (it says the card is busy, not whether it is valid);
    an answer whose expiry cannot be read removes the entry. An Accepted entry past its
    expiry counts as Expired. Tags compare case-insensitively. When full, the oldest entry
    that is not valid goes first, then the oldest valid one.

    Read from the callers' threads and written from the event-loop thread: one lock.
    With ``path`` the cache is kept in a JSON file (written on change, atomically), its
    entries sealed under the station's privacy key (token values are personal data); a
    file of an older version, in clear, is rewritten sealed when read.
    """

    def __init__(self, now: Callable[[], datetime] = _utcnow, path: Path | None = None,
                 max_entries: int = CACHE_MAX_ENTRIES) -> None:
        self._now = now
        self._path = path
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[str, IdTagInfo]] = OrderedDict()
        if path is not None:
            self._load(path)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def lookup(self, id_tag: str) -> IdTagInfo | None:
        """The stored entry (use :meth:`IdTagInfo.effective_status` for its status now)."""
        with self._lock:
            entry = self._entries.get(id_tag.casefold())
            return entry[1] if entry is not None else None

    def update(self, id_tag: str, info: IdTagInfo) -> None:
        if info.status == AuthorizationStatus.ConcurrentTx:
            return
        if not info.cacheable:
            self.remove(id_tag)
            return
        info = IdTagInfo(status=info.status, expiry=info.expiry,
                         parent_id_tag=info.parent_id_tag)
        key = id_tag.casefold()
        with self._lock:
            old = self._entries.get(key)
            self._entries[key] = (id_tag, info)
            self._entries.move_to_end(key)
            self._evict()
            if old is None or old[1] != info:
                self._save()

    def remove(self, id_tag: str) -> None:
        with self._lock:
            if self._entries.pop(id_tag.casefold(), None) is not None:
                self._save()

    def _evict(self) -> None:
        now = self._now()
        while len(self._entries) > self._max:
            victim = next((k for k, (_, info) in self._entries.items()
                           if info.effective_status(now) != AuthorizationStatus.Accepted),
                          next(iter(self._entries)))
            del self._entries[victim]

    def _load(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("ocpp16 cache file unreadable; starting empty", file=str(path),
                        error=str(exc))
            return
        try:
            data = json.loads(text)
            raw = data.get("version") == 1  # token values in clear: rewritten sealed below
            if not raw:  # version 2: sealed (token values are personal data, privacy.py)
                data = json.loads(privacy.current().unseal(data["sealed"]))
            for item in data["entries"]:
                info = IdTagInfo(
                    status=AuthorizationStatus(item["status"]),
                    expiry=parse_rfc3339(item["expiry"]) if item.get("expiry") else None,
                    parent_id_tag=item.get("parent_id_tag") or None,
                )
                self._entries[str(item["id_tag"]).casefold()] = (str(item["id_tag"]), info)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._entries.clear()
            log.warning("ocpp16 cache file broken, or sealed under another key; starting "
                        "empty", file=str(path), error=type(exc).__name__)
            return
        if raw:
            with self._lock:
                self._save()

    def _save(self) -> None:
        """Write the file (called with the lock held)."""
        if self._path is None:
            return
        entries = {"entries": [
            {"id_tag": id_tag, "status": info.status.value,
             "expiry": format_utc(info.expiry) if info.expiry is not None else None,
             "parent_id_tag": info.parent_id_tag}
            for id_tag, info in self._entries.values()]}
        # Sealed: the tags are token values, and a cache must give them back (parent ids).
        data = {"version": 2,
                "sealed": privacy.current().seal(json.dumps(entries).encode("utf-8"))}
        try:
            fd, tmp = tempfile.mkstemp(prefix=".ocpp16-cache-", dir=self._path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self._path)
        except OSError as exc:
            log.warning("ocpp16 cache file not written", file=str(self._path), error=str(exc))


# --- the local list -------------------------------------------------------------------------


class LocalList:
    """The offline local list: an ``allow_list`` file (YAML, or CSV by its ``.csv`` name).

    Read with the ``allow_list`` plugin's own loader: it must load at start; afterwards it
    is read again when it changes, and a broken edit keeps the last good list (logged once).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = TokensFile(path, interval_s=0)  # changes are looked for at each use
        try:
            self._file.load()
        except TokensFileError as exc:
            raise OptionError((one_line(str(exc)) or type(exc).__name__), option="local_list") from None

    def lookup(self, id_tag: str) -> IdTagInfo | None:
        entry = self._file.tokens().get(id_tag.casefold())
        return _from_entry(entry) if entry is not None else None


def _from_entry(entry: TokenEntry) -> IdTagInfo:
    return IdTagInfo(
        status=entry.status,
        expiry=entry.expiry,
        parent_id_tag=entry.parent_id_token or None,
        evse_ids=tuple(entry.evse_ids) if entry.evse_ids is not None else None,
    )


# --- the offline decision -------------------------------------------------------------------


def offline_decision(
    *,
    local: IdTagInfo | None,
    cached: IdTagInfo | None,
    now: datetime,
    local_authorize_offline: bool,
    allow_offline_tx_for_unknown_id: bool,
) -> tuple[ValidationResult, str]:
    """The answer when the CSMS cannot answer, and the rule that gave it.

    1. The tag's entry is the local list's if it has one, else the cache's (the local
       list takes precedence over the cache, as in OCPP 1.6).
    2. An entry whose status now is not Accepted (Blocked, Invalid, Expired, or Accepted
       but past its expiry -> Expired) is answered with that status, whatever the flags:
       OCPP 1.6 says such ids MUST be rejected, also under AllowOfflineTxForUnknownId.
    3. A valid (Accepted, unexpired) entry with ``local_authorize_offline``: Accepted,
       with the entry's expiry, parent and evse ids.
    4. Otherwise the tag counts as unknown: ``allow_offline_tx_for_unknown_id`` -> Accepted
       (nothing else), else Unknown, so that the next validators decide.

    Rules: ``local-list``/``cache`` (2 or 3), ``unknown-allowed``, ``unknown``.
    """
    entry, source = (local, "local-list") if local is not None else (cached, "cache")
    if entry is not None:
        status = entry.effective_status(now)
        if status != AuthorizationStatus.Accepted or local_authorize_offline:
            return entry.to_result(status), source
    if allow_offline_tx_for_unknown_id:
        return ValidationResult(authorization_status=AuthorizationStatus.Accepted), \
            "unknown-allowed"
    return ValidationResult(authorization_status=AuthorizationStatus.Unknown), "unknown"


