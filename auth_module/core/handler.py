"""``AuthHandler``: the facade the adapters call. It decides nothing itself.

The behaviour lives in rooms of one job each, sharing one :class:`~.state.CoreState`
(settings, clock, ports, the one lock, the EVSEs):

- :mod:`.authorize`: a token's journey (validate -> select -> authorize / stop / wait /
  reject), its life a state machine (:mod:`.tokens`);
- :mod:`.authorizations`: granted authorizations withdrawn or updated;
- :mod:`.evse_events`: session events, faults, enable / disable of an EVSE;
- :mod:`.reserving`: reservations, over the book (:mod:`.reservations`, :mod:`.feasibility`).

EVerest's AuthHandler reshaped around one idea: nothing in the core ever waits (see
:mod:`.authorize`); the locking rules are in :mod:`.state`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple, TypeVar

from ..types import (
    ConnectorTypeEnum,
    ProvidedIdToken,
    Reservation,
    ReservationCheck,
    ReservationCheckStatus,
    ReservationResult,
    SessionEvent,
    ValidationResultUpdate,
    WithdrawAuthorizationRequest,
    WithdrawAuthorizationResult,
)
from . import authorizations
from .authorize import TokenJourney
from .clock import Clock
from .evse import Connector, ConnectorEvent, EvseState
from .evse_events import EvseEvents
from .ports import StationPorts
from .reserving import ReservationDesk
from .state import AuthSettings, CoreState
from .tokens import TokenOutcome, TokenRequest

T = TypeVar("T")

__all__ = ["AuthHandler", "AuthSettings", "StateView"]


class StateView(NamedTuple):
    """The core's state as :meth:`AuthHandler.read_state` lends it: read only, lock held."""

    evses: Mapping[int, EvseState]
    reservations: list[tuple[int | None, Reservation]]  # (evse id or None, reservation)
    parked: list[TokenRequest]  # accepted tokens waiting for a car, oldest first
    monotonic: float  # the clock's now, for the timers' ``due``
    connection_timeout: int


class AuthHandler:
    def __init__(
        self,
        settings: AuthSettings,
        clock: Clock,
        ports: StationPorts,
        store: Any = None,
    ) -> None:
        self._core = CoreState(replace(settings), clock, ports)  # our own copy: set_* change it
        self.settings = self._core.settings
        self.evses: dict[int, EvseState] = self._core.evses
        self.reservations = ReservationDesk(self._core, store)
        self._journey = TokenJourney(self._core, self.reservations)
        self._events = EvseEvents(self._core, self.reservations, self._journey)
        # The token path's entry, bound once (no extra call per token): see
        # :meth:`.authorize.TokenJourney.on_token`.
        self.on_token: Callable[[ProvidedIdToken], TokenOutcome] = self._journey.on_token

    # --- setup ----------------------------------------------------------------------------

    @property
    def token_count(self) -> int:
        """Tokens between Processing and their final status (being validated, or waiting
        for a car). Read without the lock: a bound checked against it may be off by one."""
        return len(self._journey.in_process)

    def add_evse(
        self, evse_id: int, index: int, connectors: Sequence[tuple[int, ConnectorTypeEnum | None]]
    ) -> None:
        if evse_id <= 0:
            raise ValueError(f"evse id must be >= 1, got {evse_id}")
        with self._core.lock:
            self.evses[evse_id] = EvseState(
                evse_id=evse_id,
                index=index,
                connectors=[Connector(cid, ctype) for cid, ctype in connectors] or [Connector(1)],
            )

    def start(self) -> None:
        """Everything is known: bring back stored reservations and tell the EVSEs again."""
        self.reservations.start()

    # --- settings at run time ---------------------------------------------------------------

    def set_connection_timeout(self, seconds: int) -> None:
        with self._core.lock:
            self.settings.connection_timeout = seconds

    def set_master_pass_group_id(self, group_id: str) -> None:
        with self._core.lock:
            self.settings.master_pass_group_id = group_id

    def set_plug_in_timeout_enabled(self, enabled: bool) -> None:
        with self._core.lock:
            self.settings.plug_in_timeout_enabled = enabled

    def set_prioritize_authorization_over_stopping_transaction(self, value: bool) -> None:
        with self._core.lock:
            self.settings.prioritize_authorization_over_stopping_transaction = value

    def set_stop_transaction_on_reswipe(self, value: bool) -> None:
        with self._core.lock:
            self.settings.stop_transaction_on_reswipe = value

    # --- tokens and authorizations ------------------------------------------------------------

    def on_validation_result_update(self, update: ValidationResultUpdate) -> None:
        authorizations.on_validation_result_update(self._core, self._journey, update)

    def withdraw_authorization(
        self, request: WithdrawAuthorizationRequest
    ) -> WithdrawAuthorizationResult:
        return authorizations.withdraw_authorization(self._core, self._journey, request)

    def tokens_in_process(self) -> list[str]:
        with self._core.lock:
            return list(self._journey.in_process)

    # --- what the EVSEs report ----------------------------------------------------------------

    def on_session_event(self, evse_id: int, event: SessionEvent) -> None:
        self._events.on_session_event(evse_id, event)

    def on_fault_raised(self, evse_id: int) -> None:
        """``evse_manager/Inoperative`` raised: the whole EVSE is out of service."""
        self._events.on_fault(evse_id, ConnectorEvent.FAULTED)

    def on_fault_cleared(self, evse_id: int) -> None:
        self._events.on_fault(evse_id, ConnectorEvent.ERROR_CLEARED)

    # --- reservations ---------------------------------------------------------------------------

    def reserve_now(self, reservation: Reservation) -> ReservationResult:
        return self.reservations.reserve_now(reservation)

    def cancel_reservation(self, reservation_id: int) -> bool:
        """Cancelled from outside (OCPP): no ``reservation_update``, as EVerest does."""
        return self.reservations.cancel_reservation(reservation_id)

    def exists_reservation(self, check: ReservationCheck) -> ReservationCheckStatus:
        return self.reservations.exists_reservation(check)

    # --- diagnostics ------------------------------------------------------------------------------

    def read_state(self, reader: Callable[[StateView], T]) -> T:
        """Call ``reader`` with the lock held and a read-only view of the state; what it
        returns is returned. For diagnostics (the station console): ``reader`` copies what it
        needs, changes nothing and returns at once (it holds up every token meanwhile)."""
        with self._core.lock:
            return reader(StateView(self.evses, self.reservations.book.reservations(),
                                    list(self._journey._waiting), self._core.clock.monotonic(),
                                    int(self.settings.connection_timeout)))
