"""The console's only hook on the token path: a bounded, non-blocking hand-off.

The module calls :meth:`ConsoleFeed.put` with objects it already has (the token it
publishes a status for, the validators' answers, a session event...). ``put`` is one
``deque.append`` (atomic under the GIL, O(1); the deque drops the oldest entry when the
console falls behind) and nothing else: the console's event loop collects the events on its
own timer (``POLL_S`` in ``server.py``). An earlier version woke the loop once per burst
(``call_soon_threadsafe``); the loop thread then woke in the middle of the token's own work
and took the GIL from it, which cost about 0.3 ms of token p50 on a 2-vCPU machine. Nothing
on the token path waits for the console, takes one of its locks, wakes one of its threads,
or formats anything for it.

A station without a ``console:`` section never imports this module: the module then holds
no feed, and its hooks are a single ``is not None`` test.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..types import (
    ProvidedIdToken,
    ReservationUpdate,
    StopTransactionRequest,
    TokenValidationStatus,
    ValidationResult,
)

Event = tuple[str, float, Any, Any]  # (kind, time.time(), a, b)


class ConsoleFeed:
    """Events for the console, oldest dropped first when more than ``size`` wait."""

    __slots__ = ("_events",)

    def __init__(self, size: int = 4096) -> None:
        self._events: deque[Event] = deque(maxlen=size)

    def put(self, kind: str, a: Any = None, b: Any = None) -> None:
        self._events.append((kind, time.time(), a, b))

    def __bool__(self) -> bool:
        """Whether events wait (the console's poll asks this first: no work when idle)."""
        return bool(self._events)

    def drain(self) -> list[Event]:
        """Every waiting event, oldest first; an event put while draining is read now or at
        the next poll."""
        out = []
        events = self._events
        while events:
            try:
                out.append(events.popleft())
            except IndexError:
                break
        return out


class ObservedPorts:
    """The module's ports, passing what the console needs to the feed on the way out.

    Used in place of the ports only when the console is on. Each method forwards first
    (the message someone waits for leaves first) and then puts one event."""

    def __init__(self, ports: Any, feed: ConsoleFeed) -> None:
        self._ports = ports
        self._put = feed.put

    def __getattr__(self, name: str) -> Any:  # close() and anything the module adds later
        return getattr(self._ports, name)

    def validate(self, token: ProvidedIdToken,
                 on_results: Callable[[list[ValidationResult]], None]) -> None:
        put = self._put

        def observed(results: list[ValidationResult]) -> None:
            put("results", token, results)
            on_results(results)

        self._ports.validate(token, observed)

    def publish_token_validation_status(self, token: ProvidedIdToken,
                                        status: TokenValidationStatus,
                                        messages: list[dict[str, Any]]) -> None:
        self._ports.publish_token_validation_status(token, status, messages)
        self._put("status", token, status)

    def authorize_response(self, evse_index: int, token: ProvidedIdToken,
                           result: ValidationResult) -> None:
        self._ports.authorize_response(evse_index, token, result)
        self._put("changed")

    def withdraw_authorization(self, evse_index: int) -> None:
        self._ports.withdraw_authorization(evse_index)
        self._put("changed")

    def stop_transaction(self, evse_index: int, request: StopTransactionRequest) -> None:
        self._ports.stop_transaction(evse_index, request)
        self._put("changed")

    def reserve(self, evse_index: int, reservation_id: int) -> bool:
        answer: bool = self._ports.reserve(evse_index, reservation_id)
        self._put("changed")
        return answer

    def reserve_nowait(self, evse_index: int, reservation_id: int) -> None:
        self._ports.reserve_nowait(evse_index, reservation_id)
        self._put("changed")

    def cancel_reservation(self, evse_index: int) -> None:
        self._ports.cancel_reservation(evse_index)
        self._put("changed")

    def publish_reservation_update(self, reservation_id: int, status: ReservationUpdate) -> None:
        self._ports.publish_reservation_update(reservation_id, status)
        self._put("reservation", reservation_id, status)
