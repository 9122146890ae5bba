"""The small text helpers every room needs, written once: one-line errors and exceptions."""

from __future__ import annotations

import re

_SPACE = re.compile(r"\s+")


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with its whitespace (newlines included) collapsed, cut at ``limit``."""
    flat = _SPACE.sub(" ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def exception_line(exc: BaseException) -> str:
    """``Type: text`` on one line, for logs and errors that must never carry a traceback."""
    text = one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
