"""What the core knows of each EVSE: its connectors' states, plug, transaction, authorization.

A connector's availability is a small state machine, one declarative table
(:data:`_TRANSITIONS`), the same six states and six events as EVerest's ConnectorStateMachine, so that faults, enable/disable and
transactions combine the way EVerest's do (a fault during a transaction leaves the connector
``FAULTED_OCCUPIED``; the fault clearing returns it to ``OCCUPIED``, not to ``AVAILABLE``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ..types import (
    AuthorizationStatus,
    AuthorizationType,
    ConnectorTypeEnum,
    IdToken,
    ProvidedIdToken,
)
from .clock import TimerHandle


class ConnectorState(StrEnum):
    AVAILABLE = "AVAILABLE"
    UNAVAILABLE = "UNAVAILABLE"
    FAULTED = "FAULTED"
    OCCUPIED = "OCCUPIED"
    UNAVAILABLE_FAULTED = "UNAVAILABLE_FAULTED"
    FAULTED_OCCUPIED = "FAULTED_OCCUPIED"


class ConnectorEvent(StrEnum):
    ENABLE = "enable"
    DISABLE = "disable"
    ERROR_CLEARED = "error_cleared"
    FAULTED = "faulted"
    TRANSACTION_STARTED = "transaction_started"
    SESSION_FINISHED = "session_finished"


S, E = ConnectorState, ConnectorEvent
_OCCUPIED = frozenset({S.OCCUPIED, S.FAULTED_OCCUPIED})
_NOT_USABLE = frozenset({S.UNAVAILABLE, S.FAULTED})
_TRANSITIONS = [
    (E.TRANSACTION_STARTED, S.AVAILABLE, S.OCCUPIED),
    (E.DISABLE, S.AVAILABLE, S.UNAVAILABLE),
    (E.FAULTED, S.AVAILABLE, S.FAULTED),
    (E.ENABLE, S.UNAVAILABLE, S.AVAILABLE),
    (E.FAULTED, S.UNAVAILABLE, S.UNAVAILABLE_FAULTED),
    (E.ERROR_CLEARED, S.FAULTED, S.AVAILABLE),
    (E.DISABLE, S.FAULTED, S.UNAVAILABLE_FAULTED),
    (E.SESSION_FINISHED, S.OCCUPIED, S.AVAILABLE),
    (E.FAULTED, S.OCCUPIED, S.FAULTED_OCCUPIED),
    (E.ERROR_CLEARED, S.FAULTED_OCCUPIED, S.OCCUPIED),
    (E.SESSION_FINISHED, S.FAULTED_OCCUPIED, S.FAULTED),
    (E.ENABLE, S.UNAVAILABLE_FAULTED, S.FAULTED),
    (E.ERROR_CLEARED, S.UNAVAILABLE_FAULTED, S.UNAVAILABLE),
]


_NEXT: dict[tuple[ConnectorState, ConnectorEvent], ConnectorState] = {
    (src, ev): dst for ev, src, dst in _TRANSITIONS
}


class Connector:
    """One plug of an EVSE. Its state changes only through :meth:`submit`."""

    __slots__ = ("connector_state", "id", "type")

    def __init__(self, connector_id: int, connector_type: ConnectorTypeEnum | None = None) -> None:
        self.id = connector_id
        self.type = connector_type or ConnectorTypeEnum.Unknown
        self.connector_state = ConnectorState.AVAILABLE

    def submit(self, event: ConnectorEvent) -> None:
        """Apply ``event``; an event that does not apply in the current state is ignored."""
        self.connector_state = _NEXT.get((self.connector_state, event), self.connector_state)

    def is_unavailable(self) -> bool:
        return self.connector_state in (S.UNAVAILABLE, S.UNAVAILABLE_FAULTED)


@dataclass
class Authorization:
    """The token an EVSE was authorized for, kept until its transaction ends."""

    id_token: IdToken
    authorization_type: AuthorizationType
    status: AuthorizationStatus
    expiry_time: str | None
    parent_id_token: IdToken | None
    granted_token: ProvidedIdToken  # as published with UsedToStart; reused for TimedOut


@dataclass
class EvseState:
    """Everything the core tracks for one EVSE. Mutated only under the core's lock."""

    evse_id: int
    index: int  # position in the station file's evse_manager list
    connectors: list[Connector]
    transaction_active: bool = False
    plugged_in: bool = False
    plug_in_timed_out: bool = False  # no token within connection_timeout: replug required
    authorization: Authorization | None = None
    timer: TimerHandle | None = field(default=None, repr=False)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def connector(self, connector_id: int) -> Connector | None:
        return next((c for c in self.connectors if c.id == connector_id), None)

    def is_available(self) -> bool:
        """Free to be authorized: not timed out, not authorized, no occupied connector."""
        if self.plug_in_timed_out or self.authorization is not None:
            return False
        usable = False
        for connector in self.connectors:
            state = connector.connector_state
            if state in _OCCUPIED:
                return False
            usable = usable or state not in _NOT_USABLE
        return usable

    def is_unavailable(self) -> bool:
        """Every connector disabled: the EVSE is left out of selection altogether."""
        return all(c.is_unavailable() for c in self.connectors)
