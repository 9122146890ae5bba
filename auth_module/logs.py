"""Structured logs: readable on a terminal, JSON lines elsewhere, tokens masked.

Token values are personal data (a card UID identifies a person), so every log field that
carries one is masked by a processor before rendering, unless the station file asks for
``logging.show_tokens: true`` (for a bench, never for a public charger).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

TOKEN_FIELDS = frozenset({"token", "id_token", "parent_id_token", "id_tag"})


def mask(value: str) -> str:
    """Keep just enough of a token to tell two cards apart in a log."""
    if len(value) <= 6:
        return "***"
    return f"{value[:2]}…{value[-2:]}"


def mask_tokens(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in TOKEN_FIELDS & event_dict.keys():
        value = event_dict[key]
        if isinstance(value, str):
            event_dict[key] = mask(value)
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", show_tokens: bool = False) -> None:
    """Set up structlog once for the process. ``fmt``: auto | console | json."""
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
        cache_logger_on_first_use=False,
    )
