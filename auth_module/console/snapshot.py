"""A read-only copy of the core's state, taken under its lock, for the console's thread.

It goes through the facade's :meth:`~auth_module.core.handler.AuthHandler.read_state` and
copies plain values (ids, strings, due times): the lock is held only for that, a few
microseconds per EVSE.
It runs on the console's thread, at most a few times a second, never on the token path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.handler import StateView


@dataclass(frozen=True)
class EvseSnap:
    id: int
    connectors: list[tuple[int, str, str]]  # (id, type, state)
    plugged_in: bool
    transaction_active: bool
    plug_in_timed_out: bool
    token: str | None  # the authorized token's value
    token_due: float | None  # monotonic time its authorization times out


@dataclass(frozen=True)
class ReservationSnap:
    reservation_id: int
    evse_id: int | None
    id_token: str
    parent_id_token: str | None
    expiry_time: str


@dataclass(frozen=True)
class Snapshot:
    evses: list[EvseSnap] = field(default_factory=list)
    reservations: list[ReservationSnap] = field(default_factory=list)
    waiting: list[tuple[str, list[int], float | None]] = field(default_factory=list)
    connection_timeout: int = 30
    monotonic: float = 0.0


def _value(enum_or_str: Any) -> str:
    return str(getattr(enum_or_str, "value", enum_or_str))


def take(handler: Any) -> Snapshot:
    """The handler's EVSEs, reservations and parked tokens, as plain data."""
    return handler.read_state(_copy)


def _copy(state: StateView) -> Snapshot:
    evses = []
    for evse in state.evses.values():
        auth = evse.authorization
        timer = evse.timer
        evses.append(EvseSnap(
            id=evse.evse_id,
            connectors=[(c.id, _value(c.type), _value(c.connector_state))
                        for c in evse.connectors],
            plugged_in=evse.plugged_in,
            transaction_active=evse.transaction_active,
            plug_in_timed_out=evse.plug_in_timed_out,
            token=auth.id_token.value if auth is not None else None,
            token_due=(timer.due if auth is not None and timer is not None
                       and not timer.cancelled else None),
        ))
    reservations = [ReservationSnap(r.reservation_id, evse_id, r.id_token, r.parent_id_token,
                                    r.expiry_time)
                    for evse_id, r in state.reservations]
    waiting = [(req.token.id_token.value, list(req.waiting_for or []),
                req.wait_timer.due if req.wait_timer is not None else None)
               for req in state.parked]
    return Snapshot(sorted(evses, key=lambda e: e.id), reservations, waiting,
                    state.connection_timeout, state.monotonic)
