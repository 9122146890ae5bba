"""The errors a bus call can end with, and what ``call_async`` hands to its callback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["BusError", "CallCancelled", "CallOutcome", "CommandError", "CommandTimeout",
           "EnvelopeError", "NotConnected"]


class EnvelopeError(ValueError):
    """A payload that is not the envelope it should be; the text says what is wrong."""


class BusError(Exception):
    """Base of the errors a call can end with."""


class CommandError(BusError):
    """The callee answered with an error envelope (``event``: its ``__everest__error_type``,
    CONTRACT.md §3)."""

    def __init__(self, event: str, msg: str = "") -> None:
        super().__init__(f"{event}: {msg}" if msg else event)
        self.event = event
        self.msg = msg


class CommandTimeout(BusError, TimeoutError):
    """No answer arrived within the call's timeout."""


class NotConnected(BusError, ConnectionError):
    """The broker was not reachable when the call was made (or the bus was stopped)."""


class CallCancelled(BusError):
    """The caller's stop signal was set while it waited for the answer."""


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What ``call_async`` hands to ``on_result``: a ``retval`` or an ``error``."""

    retval: Any = None
    error: BusError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None
