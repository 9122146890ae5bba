"""The small text helpers every room needs, written once.

- :func:`show_value` / :func:`short_repr`: a value inside a one-line error;
- :func:`one_line` / :func:`exception_line`: free text and exceptions on one line;
- :func:`format_utc` / :func:`parse_rfc3339`: RFC 3339 time, written with a ``Z``.

Token masking has one implementation too: :func:`auth_module.logs.mask` (a keyed hash,
:mod:`auth_module.privacy`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

_SPACE = re.compile(r"\s+")


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut at ``limit`` characters (for values from JSON or Python)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show_value(value: Any) -> str:
    """A value as the user wrote it in YAML, short: null, true, a mapping, 'text', 3."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return short_repr(value)


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with its whitespace (newlines included) collapsed, cut at ``limit``."""
    flat = _SPACE.sub(" ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def exception_line(exc: BaseException) -> str:
    """``Type: text`` on one line, for logs and errors that must never carry a traceback."""
    text = one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def format_utc(when: datetime | None = None) -> str:
    """RFC 3339 in UTC with milliseconds and ``Z``, the form EVerest writes (now by default)."""
    when = when if when is not None else datetime.now(UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(value: str | datetime) -> datetime:
    """An aware UTC datetime from RFC 3339 text (``Z``, ``z`` or an offset; none means UTC).
    Raises ValueError for anything else."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        when = datetime.fromisoformat(text)
    else:
        raise ValueError(f"not a date-time: {value!r}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)
