"""What the core asks of the outside world, as one small interface.

The core decides; these calls carry its decisions out. ``module.py`` implements them over
MQTT, the unit tests with plain recorders. Two rules keep the locking simple:

* every call except :meth:`validate` and :meth:`reserve` must return at once (publish and
  go): the core makes them while holding its lock, which is what keeps, say, an
  ``authorize_response`` and the ``withdraw_authorization`` that follows it in order;
* :meth:`validate` and :meth:`reserve` may block (they wait for other modules' answers), so
  the core calls them only after releasing its lock, on the token's own worker thread.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..types import (
    ProvidedIdToken,
    ReservationUpdate,
    StopTransactionRequest,
    TokenValidationStatus,
    ValidationResult,
)


class StationPorts(Protocol):
    def validate(self, token: ProvidedIdToken) -> list[ValidationResult]:
        """Ask every validator; one result each, in station-file order. Blocks for at most
        the validators' time limit; never raises (a failed or silent validator is Unknown)."""

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
