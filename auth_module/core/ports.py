"""What the core asks of the outside world: :class:`StationPorts` and :class:`Runner`.

The core decides; these calls carry its decisions out. ``module.py`` implements them over
MQTT, the unit tests with plain recorders. Two rules keep the locking simple:

* every call except :meth:`validate` and :meth:`reserve` must return at once (publish and
  go): the core makes them while holding its lock, which is what keeps, say, an
  ``authorize_response`` and the ``withdraw_authorization`` that follows it in order;
* :meth:`validate` and :meth:`reserve` may take long (they wait for other modules'
  answers), so the core calls them only after releasing its lock. ``reserve`` blocks;
  ``validate`` asks and returns, and calls back when every validator has answered.

:class:`Runner` is the one seam for "where does this run": a token's work (a new token, a
token whose last validator answered) is handed to it and runs on a thread of its own. The
bus crew implements it (``BusClient.run_soon``); the unit tests run work in place.
"""

from __future__ import annotations

from collections.abc import Callable

from typing import Any, Protocol

from ..types import (
    ProvidedIdToken,
    ReservationUpdate,
    StopTransactionRequest,
    TokenValidationStatus,
    ValidationResult,
)


class StationPorts(Protocol):
    def validate(self, token: ProvidedIdToken,
                 on_results: Callable[[list[ValidationResult]], None]) -> None:
        """Ask every validator, and call ``on_results`` exactly once with one result each,
        in station-file order, when all have answered or their time limit has passed (a
        failed or silent validator is Unknown). It may be called before this returns (a
        local validator) or later, on a token worker thread; it must not be called with
        the core's lock held by the caller. Never raises."""

    def publish_token_validation_status(
        self, token: ProvidedIdToken, status: TokenValidationStatus, messages: list[dict[str, Any]]
    ) -> None: ...

    def authorize_response(
        self, evse_index: int, token: ProvidedIdToken, result: ValidationResult
    ) -> None: ...

    def withdraw_authorization(self, evse_index: int) -> None: ...

    def stop_transaction(self, evse_index: int, request: StopTransactionRequest) -> None: ...

    def reserve(self, evse_index: int, reservation_id: int) -> bool:
        """Tell the EVSE manager it is reserved and wait for its yes or no. Blocking."""

    def reserve_nowait(self, evse_index: int, reservation_id: int) -> None:
        """As :meth:`reserve`, for station-wide reservations, where a no is only logged."""

    def cancel_reservation(self, evse_index: int) -> None: ...

    def publish_reservation_update(self, reservation_id: int, status: ReservationUpdate) -> None: ...


class Runner(Protocol):
    def run_soon(self, work: Callable[[], object]) -> bool:
        """Run ``work`` soon on a thread of its own (the token's), never on the caller's
        when the caller is the bus reader. False, and nothing run, when every thread and
        the bounded backlog are taken: the caller then ends the token itself.

        ``work`` must not wait for anything before its first publish (the bus hands its
        reading to another thread only after that publish, see ``bus/netloop.py``)."""
