"""Structured logs: readable on a terminal, JSON lines elsewhere, tokens as keyed hashes.

Token values are personal data (a card UID identifies a person), so every log field that
carries one is replaced by its keyed hash (``tok:9f3a1c``, see :mod:`.privacy`: no
character of the value, stable per station) before rendering, unless the station file asks for
``logging.show_tokens: true`` (for a bench, never for a public charger). Other modules may
echo a token inside free text (an error message); the module therefore remembers the token
values it has seen recently and masks them wherever they appear in a log line.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections import OrderedDict
from typing import Any

import structlog

from . import privacy

TOKEN_FIELDS = frozenset({"token", "id_token", "parent_id_token", "id_tag"})
_MIN_SECRET_LEN = 4  # shorter values would mask ordinary words


def mask(value: str) -> str:
    """What a log shows for a token: its keyed hash, enough to tell two cards apart and to
    follow one card through the log, nothing of the value."""
    return privacy.current().label(value)


# A "word" of free text: what a token can be part of in an error message.
_WORD = re.compile(r"[^\s'\"`,;()\[\]{}<>=|]+")
_TRAILING = ".:!?"


class RecentSecrets:
    """The last ``size`` token values seen; masks them where they stand as words in text.

    Looking words up in a set keeps the cost per log line independent of how many tokens
    are remembered (a regular expression of every token would have to be rebuilt for each
    new card).
    """

    def __init__(self, size: int = 1024) -> None:
        self._values: OrderedDict[str, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        if not value or len(value) < _MIN_SECRET_LEN:
            return
        key = value.casefold()
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return
            self._values[key] = None
            if len(self._values) > self._size:
                self._values.popitem(last=False)

    def scrub(self, text: str) -> str:
        if not self._values:
            return text
        return _WORD.sub(self._mask_word, text)

    def _mask_word(self, match: re.Match[str]) -> str:
        word = match.group(0)
        core = word.rstrip(_TRAILING)
        if core.casefold() in self._values:
            return mask(core) + word[len(core):]
        return word


SECRETS = RecentSecrets()


def remember_token(value: str | None) -> None:
    """Note a token value so that it is masked wherever it shows up in a later log line."""
    SECRETS.add(value)


def mask_tokens(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key, value in event_dict.items():
        if not isinstance(value, str):
            continue
        if key in TOKEN_FIELDS:
            event_dict[key] = mask(value)
        elif key not in ("timestamp", "level"):
            event_dict[key] = SECRETS.scrub(value)
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", show_tokens: bool = False,
                      cache: bool = False) -> None:
    """Set up structlog once for the process. ``fmt``: auto | console | json.

    ``cache``: loggers bind their configuration on first use, so a log call below the level
    costs ~1 µs instead of ~8; for a process that configures logging once (the module), not
    for tests that reconfigure it.
    """
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if not show_tokens:
        processors.append(mask_tokens)
    if fmt == "json":
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=cache,
    )
