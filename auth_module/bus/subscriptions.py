"""What a subscription does with a message: decode its envelope, call the handler, log a
failure in one line. Built once per subscription; runs on the reading thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..text import exception_line
from .envelopes import EnvelopeError, parse_error, parse_var

VarHandler = Callable[[Any], None]
ErrorHandler = Callable[[dict[str, Any]], None]
RawHandler = Callable[[str, bytes], None]
Dispatch = Callable[[str, bytes], None]


def var_dispatch(handler: VarHandler, log: Any) -> Dispatch:
    """``handler(value)`` for each ``Var`` envelope; a malformed one is dropped and logged."""

    def dispatch(topic: str, payload: bytes) -> None:
        try:
            value = parse_var(payload)
        except EnvelopeError as exc:
            log.warning("malformed var dropped", topic=topic, reason=str(exc))
            return
        try:
            handler(value)
        except Exception as exc:
            log.error("var handler failed", topic=topic, error=exception_line(exc))

    return dispatch


def error_dispatch(on_raised: ErrorHandler | None, on_cleared: ErrorHandler | None,
                   log: Any) -> Dispatch:
    """``on_raised(data)`` / ``on_cleared(data)`` for each error envelope."""

    def dispatch(topic: str, payload: bytes) -> None:
        try:
            msg = parse_error(payload)
        except EnvelopeError as exc:
            log.warning("malformed error envelope dropped", topic=topic, reason=str(exc))
            return
        fn = on_raised if msg.raised else on_cleared
        if fn is None:
            return
        try:
            fn(msg.data)
        except Exception as exc:
            log.error("error handler failed", topic=topic, error=exception_line(exc))

    return dispatch
