"""Validator ``allow_list``: a local list of tokens in a YAML or CSV file.

::

    - plugin: allow_list
      file: tokens.yaml          # relative paths are relative to the station file
      format: auto               # yaml | csv | auto (by the file name: .csv is CSV)
      reload_interval_s: 2       # look for changes at most this often (0: on every token)

The YAML file (CONTRACT.md §7)::

    tokens:
      - id_token: VALID_RFID_1         # compared case-insensitively
        status: Accepted               # any AuthorizationStatus; default Accepted
        expiry: 2027-01-01T00:00:00Z   # optional; after it the token is Expired
        parent_id_token: PARENT_RFID   # optional
        evse_ids: [1, 2]               # optional; the result's evse_ids
        nickname: Anna's car           # optional; shown by the station console only

The CSV file has a header naming its columns (``id_token`` required, the others optional),
empty cells meaning "not given", ``evse_ids`` separated by spaces or semicolons, and lines
starting with ``#`` ignored::

    id_token,status,expiry,parent_id_token,evse_ids
    VALID_RFID_1,Accepted,2027-01-01T00:00:00Z,PARENT_RFID,1 2

A token not in the list is ``Unknown`` for this validator. The file is checked for changes
(modification time and size) when a token is validated, at most every
``reload_interval_s``; a new version is used if it is valid, else the last good list stays
in force and the reason is logged once, in one line. The file must be valid at start-up.

The parsing here is shared with the validator simulator (``simulators/validator.py``).
"""

from __future__ import annotations

import csv
import io
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import structlog
import yaml
from pydantic import BaseModel, ConfigDict, Field

from ..types import (
    AuthorizationStatus,
    IdToken,
    IdTokenType,
    ProvidedIdToken,
    ValidationResult,
    to_wire,
)
from .base import PluginContext
from ..text import one_line, parse_rfc3339
from .loader import PluginError, register_options_model

__all__ = [
    "AllowListOptions",
    "AllowListValidator",
    "TokenEntry",
    "TokensFile",
    "TokensFileError",
    "create",
    "load_tokens",
    "parse_csv",
    "parse_tokens",
]

log = structlog.get_logger("plugins")

FIELDS = ("id_token", "status", "expiry", "parent_id_token", "evse_ids", "nickname")
Format = Literal["auto", "yaml", "csv"]


class TokensFileError(ValueError):
    """The allow-list file is missing or malformed (one line naming file and key)."""


class TokenEntry:
    """One line of the allow list."""

    __slots__ = ("id_token", "status", "expiry", "parent_id_token", "evse_ids", "nickname")

    def __init__(self, id_token: str, status: AuthorizationStatus,
                 expiry: datetime | None, parent_id_token: str | None,
                 evse_ids: list[int] | None, nickname: str | None = None) -> None:
        self.nickname = nickname
        self.id_token = id_token
        self.status = status
        self.expiry = expiry
        self.parent_id_token = parent_id_token
        self.evse_ids = evse_ids

    def validation_result(self, now: datetime | None = None) -> ValidationResult:
        """The answer for this token at ``now`` (default: the current time)."""
        now = now or datetime.now(UTC)
        status = self.status
        if self.expiry is not None and now >= self.expiry:
            status = AuthorizationStatus.Expired
        return ValidationResult(
            authorization_status=status,
            expiry_time=(self.expiry.isoformat().replace("+00:00", "Z")
                         if self.expiry is not None else None),
            parent_id_token=(IdToken(value=self.parent_id_token, type=IdTokenType.ISO14443)
                             if self.parent_id_token else None),
            evse_ids=list(self.evse_ids) if self.evse_ids is not None else None,
        )

    def result(self, now: datetime | None = None) -> dict[str, Any]:
        """The same as a wire dict (what a validator module answers on the bus)."""
        return to_wire(self.validation_result(now))

    def __repr__(self) -> str:
        return f"TokenEntry({self.id_token!r}, {self.status.value})"


# --- parsing -----------------------------------------------------------------------------------


def _parse_expiry(value: Any, where: str, dot: str = ".") -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            return parse_rfc3339(value)
        except ValueError:
            raise TokensFileError(f"{where}{dot}expiry: not an RFC 3339 time: {value!r}") from None
    else:
        raise TokensFileError(f"{where}{dot}expiry: not an RFC 3339 time: {value!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _entry(item: dict[str, Any], where: str, dot: str = ".") -> TokenEntry:
    """One entry; ``dot`` joins ``where`` and a key in messages (``.`` or ``: ``)."""
    unknown = set(item) - set(FIELDS)
    if unknown:
        raise TokensFileError(f"{where}: unknown key {sorted(map(str, unknown))[0]!r}")
    tok = item.get("id_token")
    if tok is None or isinstance(tok, bool | dict | list) or not str(tok).strip():
        raise TokensFileError(f"{where}{dot}id_token: required, a string")
    tok = str(tok).strip()
    status_value = item.get("status")
    if status_value is None or status_value == "":
        status_value = "Accepted"
    try:
        status = AuthorizationStatus(status_value)
    except ValueError:
        raise TokensFileError(
            f"{where}{dot}status: {status_value!r} is not an AuthorizationStatus"
        ) from None
    evse_ids = item.get("evse_ids")
    if evse_ids is not None and (
        not isinstance(evse_ids, list)
        or not all(isinstance(e, int) and not isinstance(e, bool) and e >= 1 for e in evse_ids)
    ):
        raise TokensFileError(f"{where}{dot}evse_ids: must be a list of evse ids (integers >= 1)")
    parent = item.get("parent_id_token")
    if isinstance(parent, bool | dict | list):
        raise TokensFileError(f"{where}{dot}parent_id_token: must be a string")
    parent = str(parent).strip() if parent is not None and str(parent).strip() else None
    nickname = item.get("nickname")
    if nickname is not None and (not isinstance(nickname, str) or len(nickname) > 64):
        raise TokensFileError(f"{where}{dot}nickname: must be a string of at most 64 characters")
    return TokenEntry(tok, status, _parse_expiry(item.get("expiry"), where, dot), parent,
                      evse_ids, nickname.strip() or None if nickname else None)


def _add(out: dict[str, TokenEntry], seen: dict[str, str], entry: TokenEntry,
         where: str, dot: str = ".") -> None:
    key = entry.id_token.casefold()
    if key in out:
        raise TokensFileError(f"{where}{dot}id_token: {entry.id_token!r} is listed twice "
                              f"(also at {seen[key]})")
    out[key] = entry
    seen[key] = where.rsplit(": ", 1)[-1]


def parse_tokens(data: Any, source: str = "tokens") -> dict[str, TokenEntry]:
    """The allow list (``{"tokens": [...]}`` or a bare list) keyed by casefolded id."""
    if data is None:
        return {}
    if isinstance(data, dict):
        unknown = set(data) - {"tokens"}
        if unknown:
            raise TokensFileError(f"{source}: unknown key {sorted(map(str, unknown))[0]!r}")
        items = data.get("tokens") or []
    else:
        items = data
    if not isinstance(items, list):
        raise TokensFileError(f"{source}: tokens: must be a list")
    out: dict[str, TokenEntry] = {}
    seen: dict[str, str] = {}
    for n, item in enumerate(items):
        where = f"{source}: tokens[{n}]"
        if not isinstance(item, dict):
            raise TokensFileError(f"{where}: must be a mapping")
        _add(out, seen, _entry(item, where), where)
    return out


def _split_ids(text: str, where: str) -> list[int] | None:
    parts = [p for p in text.replace(";", " ").replace(",", " ").split() if p]
    if not parts:
        return None
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise TokensFileError(f"{where}: evse_ids: must be evse ids separated by spaces or "
                              f"semicolons (got {text!r})") from None


def parse_csv(text: str, source: str = "tokens.csv") -> dict[str, TokenEntry]:
    """The allow list from CSV text (see the module doc) keyed by casefolded id."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return {}
    rows = csv.reader(io.StringIO("\n".join(line for _, line in lines)), skipinitialspace=True)
    try:
        parsed = list(rows)
    except csv.Error as exc:
        raise TokensFileError(f"{source}: bad CSV: {exc}") from None
    header = [h.strip() for h in parsed[0]]
    unknown = [h for h in header if h not in FIELDS]
    if unknown:
        raise TokensFileError(f"{source}: line {lines[0][0]}: unknown column {unknown[0]!r} "
                              f"(columns: {', '.join(FIELDS)})")
    if "id_token" not in header:
        raise TokensFileError(f"{source}: line {lines[0][0]}: the header has no id_token "
                              f"column (columns: {', '.join(FIELDS)})")
    if len(set(header)) != len(header):
        raise TokensFileError(f"{source}: line {lines[0][0]}: a column is named twice")
    out: dict[str, TokenEntry] = {}
    seen: dict[str, str] = {}
    for (lineno, _), row in zip(lines[1:], parsed[1:], strict=False):
        where = f"{source}: line {lineno}"
        if len(row) > len(header):
            raise TokensFileError(f"{where}: {len(row)} cells for {len(header)} columns")
        item: dict[str, Any] = {}
        for name, cell in zip(header, row, strict=False):
            cell = cell.strip()
            if not cell:
                continue
            item[name] = _split_ids(cell, where) if name == "evse_ids" else cell
        _add(out, seen, _entry(item, where, ": "), where, ": ")
    return out


def _format_of(path: Path, fmt: Format) -> Literal["yaml", "csv"]:
    if fmt != "auto":
        return fmt
    return "csv" if path.suffix.lower() == ".csv" else "yaml"


def load_tokens(path: str | os.PathLike[str], fmt: Format = "auto") -> dict[str, TokenEntry]:
    """Read and check an allow-list file; raise :class:`TokensFileError` if unusable."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokensFileError(f"{p}: file not found") from None
    except UnicodeDecodeError:
        raise TokensFileError(f"{p}: cannot read: not UTF-8 text") from None
    except OSError as exc:
        raise TokensFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if _format_of(p, fmt) == "csv":
        return parse_csv(text, str(p))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TokensFileError(f"{p}: {where}invalid YAML: {problem}") from None
    return parse_tokens(data, str(p))


class TokensFile:
    """An allow-list file that is read again when it changes.

    :meth:`tokens` checks the file's modification time and size at most every
    ``interval_s`` (``clock`` is a monotonic clock, injectable) and reloads it if they
    changed; a version that does not load keeps the last good list and is reported once
    through ``on_problem`` (default: a log line).
    """

    def __init__(self, path: str | os.PathLike[str], fmt: Format = "auto",
                 interval_s: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 on_problem: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.fmt = fmt
        self.interval_s = interval_s
        self._clock = clock
        self._on_problem = on_problem or (lambda problem: log.warning(problem))
        self._lock = threading.Lock()
        self._tokens: dict[str, TokenEntry] = {}
        self._signature: tuple[int, int, int] | None = None
        self._bad_signature: tuple[int, int, int] | None | str = None
        self._checked_at: float | None = None
        #: how many times a changed file was loaded (the first load is 1)
        self.loads = 0

    def _stat(self) -> tuple[int, int, int]:
        st = self.path.stat()
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load(self) -> dict[str, TokenEntry]:
        """Load now; raise :class:`TokensFileError` if the file is unusable."""
        with self._lock:
            try:
                signature = self._stat()
            except OSError:
                signature = None
            tokens = load_tokens(self.path, self.fmt)
            self._tokens, self._signature = tokens, signature
            self._checked_at = self._clock()
            self.loads += 1
            return tokens

    def tokens(self) -> dict[str, TokenEntry]:
        """The current list, reloaded first if the file changed (see the class doc)."""
        with self._lock:
            now = self._clock()
            if self._checked_at is not None and now - self._checked_at < self.interval_s:
                return self._tokens
            self._checked_at = now
            try:
                signature = self._stat()
            except OSError as exc:
                self._problem("missing", f"{self.path}: cannot read ({exc.strerror or exc}); "
                              f"keeping the last good list of {len(self._tokens)} tokens")
                return self._tokens
            if signature == self._signature:
                self._bad_signature = None
                return self._tokens
            if signature == self._bad_signature:
                return self._tokens
            try:
                tokens = load_tokens(self.path, self.fmt)
            except TokensFileError as exc:
                self._problem(signature, f"allow list not reloaded, keeping the last good "
                              f"list of {len(self._tokens)} tokens: {exc}")
                return self._tokens
            self._tokens, self._signature, self._bad_signature = tokens, signature, None
            self.loads += 1
            log.info(f"allow list reloaded: {self.path.name}: {len(tokens)} tokens")
            return self._tokens

    def _problem(self, signature: Any, message: str) -> None:
        if signature != self._bad_signature:
            self._bad_signature = signature
            self._on_problem(one_line(message, limit=500))


# --- the plugin ----------------------------------------------------------------------------------


@register_options_model
class AllowListOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(min_length=1)
    format: Format = "auto"
    reload_interval_s: float = Field(default=2.0, ge=0)


class AllowListValidator:
    """Answers from a :class:`TokensFile`; ``now`` gives the wall-clock time for expiry."""

    def __init__(self, tokens_file: TokensFile,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.file = tokens_file
        self.name = f"allow_list:{tokens_file.path.name}"
        self._now = now

    def validate(self, token: ProvidedIdToken) -> ValidationResult:
        entry = self.file.tokens().get(token.id_token.value.casefold())
        if entry is None:
            return ValidationResult(authorization_status=AuthorizationStatus.Unknown)
        return entry.validation_result(self._now())

    def close(self) -> None:
        pass


def create(options: dict[str, Any], context: PluginContext) -> AllowListValidator:
    parsed = AllowListOptions.model_validate(options)
    path = Path(parsed.file).expanduser()
    if not path.is_absolute():
        path = context.base_dir / path
    tokens_file = TokensFile(path, parsed.format, parsed.reload_interval_s)
    try:
        tokens = tokens_file.load()
    except TokensFileError as exc:
        raise PluginError(str(exc), option="file") from None
    log.info(f"allow list {path.name}: {len(tokens)} tokens")
    return AllowListValidator(tokens_file)
