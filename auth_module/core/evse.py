"""What the core knows of each EVSE: its connectors' states, plug, transaction, authorization.

A connector's availability is a small state machine, one declarative table
(:data:`_TRANSITIONS`), the same six states and six events as EVerest's ConnectorStateMachine, so that faults, enable/disable and
transactions combine the way EVerest's do (a fault during a transaction leaves the connector
``FAULTED_OCCUPIED``; the fault clearing returns it to ``OCCUPIED``, not to ``AVAILABLE``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

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


class Use(NamedTuple):
    """What a connector in one state allows; one row of :data:`CONNECTOR_STATES`."""

    may_take_token: bool  # a token may be authorized through it
    in_use: bool  # a session holds it, and with it the whole EVSE
    disabled: bool  # switched off: the EVSE is left out of selection when all are


#: The one source of "may this EVSE be given a token" (with :data:`_TRANSITIONS`, the
#: machine). Only AVAILABLE may: a connector disabled, or faulted while
#: ``ignore_connector_faults`` is false (with faults ignored, none is ever reported), never
#: is, in any combination, on any path (issue 9: UNAVAILABLE_FAULTED once counted as usable).
CONNECTOR_STATES: dict[ConnectorState, Use] = {
    S.AVAILABLE: Use(may_take_token=True, in_use=False, disabled=False),
    S.UNAVAILABLE: Use(may_take_token=False, in_use=False, disabled=True),
    S.FAULTED: Use(may_take_token=False, in_use=False, disabled=False),
    S.OCCUPIED: Use(may_take_token=False, in_use=True, disabled=False),
    S.UNAVAILABLE_FAULTED: Use(may_take_token=False, in_use=False, disabled=True),
    S.FAULTED_OCCUPIED: Use(may_take_token=False, in_use=True, disabled=False),
}
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
        return CONNECTOR_STATES[self.connector_state].disabled


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
        """May be given a token now: not timed out, not authorized, no session of anyone's
        running, no connector in use, and a connector that may take a token
        (:data:`CONNECTOR_STATES`). Every path that hands out an EVSE asks this."""
        if self.plug_in_timed_out or self.authorization is not None or self.transaction_active:
            return False
        usable = False
        for connector in self.connectors:
            use = CONNECTOR_STATES[connector.connector_state]
            if use.in_use:
                return False
            usable = usable or use.may_take_token
        return usable

    def is_unavailable(self) -> bool:
        """Every connector disabled: the EVSE is left out of selection altogether."""
        return all(c.is_unavailable() for c in self.connectors)
