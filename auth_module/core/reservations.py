"""The reservation book: which reservations exist, and whether a new one can be honoured.

Behaviour follows EVerest's ``ReservationHandler`` (modules/EVSE/Auth). Two kinds of
reservation exist:

* **EVSE-specific** (an ``evse_id`` is given): that EVSE is held for the token.
* **Station-wide** ("global", no ``evse_id``): *some* EVSE with the wanted connector type
  must be free when the token arrives.

Whether reservations fit together is :mod:`.feasibility`; what is done when one is made
or ends (the EVSE managers told, the CSMS updated) is :mod:`.reserving`, the book's one
owner. The book calls nobody back for what it ends on request: :meth:`cancel`,
:meth:`load` and :meth:`on_connector_state_changed` return what ended. Only an expiry,
which nobody asks for, is handed to ``on_expired``, given by the owner.

Threading: every public method is called by the owner with the core's lock held. The book
takes the lock itself only in its expiry-timer callbacks, which run on the clock's thread;
``on_expired`` therefore always runs with the lock held.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence, Set
from typing import TYPE_CHECKING, NamedTuple

import structlog

from ..types import (
    ConnectorTypeEnum,
    Reservation,
    ReservationCheckStatus,
    ReservationEndReason,
    ReservationResult,
    same_token,
)
from ..text import parse_rfc3339 as parse_expiry
from .clock import Clock, TimerHandle
from .evse import ConnectorState, EvseState
from .feasibility import (
    ANY,
    arrival_orders,
    connector_result,
    every_arrival_order_fits,
    evse_result,
    fits,
    has_connector_type,
    is_possible,
    more_important_state,
    no_car_can_be_shut_out,
    refusal_result,
    token_fits,
    types_match,
    wanted_type,
)

if TYPE_CHECKING:
    from ..store import ReservationStore

__all__ = [  # the pure helpers are re-exported for the tests and tools that import them here
    "Ended", "ReservationBook", "arrival_orders", "every_arrival_order_fits",
    "more_important_state", "no_car_can_be_shut_out", "parse_expiry",
]

log = structlog.get_logger("reservations")


class Ended(NamedTuple):
    """A reservation that ended: its EVSE (None: station-wide), its id, and why."""

    evse_id: int | None
    reservation_id: int
    reason: ReservationEndReason


OnExpired = Callable[[Ended], None]


class ReservationBook:
    """All current reservations of the station, with their expiry timers."""

    def __init__(
        self,
        evses: dict[int, EvseState],
        clock: Clock,
        lock: threading.RLock,
        store: ReservationStore | None,
        on_expired: OnExpired,
    ) -> None:
        self._evses = evses
        self._clock = clock
        self._lock = lock
        self._store = store
        # A stored reservation may hold its tokens as keyed hashes (privacy.py): the store
        # knows how to compare those with a presented value.
        self._same: Callable[[str | None, str | None], bool] = (
            store.token_matches if store is not None else same_token)
        self._on_expired = on_expired
        self._by_evse: dict[int, Reservation] = {}
        self._station_wide: list[Reservation] = []  # in the order they were made
        self._timers: dict[int, TimerHandle] = {}
        self._last_reserved: set[int] = set()  # memory of check_global_reservations

    # --- persistence -------------------------------------------------------------------

    def load(self) -> tuple[int, list[Ended]]:
        """Re-make every stored reservation after a restart: (how many the store held, the
        ones that ended instead).

        A reservation that expired while we were down ends as Expired; one that can no
        longer be honoured (EVSE gone, connector faulted, ...) ends as Cancelled. The owner
        sends the reservation updates the CSMS waits for. The store is rewritten once at the
        end to hold exactly what was re-made.
        """
        if self._store is None:
            return 0, []
        stored = self._store.load()
        ended: list[Ended] = []
        for evse_id, reservation in stored:
            rid = reservation.reservation_id
            if self._is_expired(reservation):
                log.info("stored reservation expired while down", reservation_id=rid,
                         evse_id=evse_id)
                ended.append(Ended(evse_id, rid, ReservationEndReason.Expired))
                continue
            result = self._place(evse_id, reservation)
            if result != ReservationResult.Accepted:
                log.warning("stored reservation can no longer be made, cancelled",
                            reservation_id=rid, evse_id=evse_id, result=str(result))
                ended.append(Ended(evse_id, rid, ReservationEndReason.Cancelled))
        self._save()
        return len(stored), ended

    def held_station_wide(self) -> set[int]:
        """The EVSEs station-wide reservations hold at the moment (as last reported)."""
        return set(self._last_reserved)

    def _save(self) -> None:
        """Write the whole list, even when it is empty (EVerest keeps a stale last entry)."""
        if self._store is not None:
            self._store.save(self.reservations())

    # --- making and ending reservations -------------------------------------------------

    def make_reservation(self, evse_id: int | None, reservation: Reservation) -> ReservationResult:
        """Try to place ``reservation``; Accepted if it is now in the book.

        A reservation whose id is already in the book replaces it (OCPP H01.FR.01): the
        old one is removed first, so it is gone even when the new one is refused.
        """
        result = self._place(evse_id, reservation)
        self._save()
        return result

    def _place(self, evse_id: int | None, reservation: Reservation) -> ReservationResult:
        """:meth:`make_reservation` without writing the store."""
        if self._is_expired(reservation):
            log.info("reservation rejected: expiry time is in the past or unreadable",
                     reservation_id=reservation.reservation_id)
            return ReservationResult.Rejected

        replaced, old_evse = self._end(reservation.reservation_id, ReservationEndReason.Cancelled)
        if replaced:
            log.debug("replacing reservation with the same id",
                      reservation_id=reservation.reservation_id, old_evse_id=old_evse)

        if evse_id is None:
            result = self._try_station_wide(reservation)
        else:
            result = self._try_for_evse(evse_id, reservation)

        if result == ReservationResult.Accepted:
            self._arm_expiry_timer(evse_id, reservation)
            log.info("reservation made", reservation_id=reservation.reservation_id,
                     evse_id=evse_id, connector_type=str(wanted_type(reservation)))
        else:
            log.info("reservation refused", reservation_id=reservation.reservation_id,
                     evse_id=evse_id, connector_type=str(wanted_type(reservation)),
                     result=str(result))
        return result

    def _try_for_evse(self, evse_id: int, reservation: Reservation) -> ReservationResult:
        """Checks for an EVSE-specific reservation, in EVerest's order of precedence."""
        if evse_id in self._by_evse:
            return ReservationResult.Occupied
        evse = self._evses.get(evse_id)
        if evse is None:
            return ReservationResult.Rejected
        wanted = wanted_type(reservation)
        if not has_connector_type(evse, wanted):
            return ReservationResult.Rejected
        evse_result = self._evse_result(evse_id, self._by_evse.keys())
        if evse_result != ReservationResult.Accepted:
            return evse_result
        connector_result = self._connector_result(evse_id, wanted)
        if connector_result != ReservationResult.Accepted:
            return connector_result
        # Holding this EVSE must still leave room for every station-wide reservation.
        if self._station_wide and not self._is_possible(
            self._station_wide_types(), self._by_evse.keys() | {evse_id}
        ):
            return self._refusal_result(wanted)
        self._by_evse[evse_id] = reservation
        return ReservationResult.Accepted

    def _try_station_wide(self, reservation: Reservation) -> ReservationResult:
        wanted = wanted_type(reservation)
        if not any(has_connector_type(evse, wanted) for evse in self._evses.values()):
            return ReservationResult.Rejected
        if not self._is_possible([*self._station_wide_types(), wanted], self._by_evse.keys()):
            return self._refusal_result(wanted)
        self._station_wide.append(reservation)
        return ReservationResult.Accepted

    def cancel(self, reservation_id: int, reason: ReservationEndReason) -> tuple[bool, int | None]:
        """End a reservation. Returns (whether it existed, its EVSE if it had one)."""
        found, evse_id = self._end(reservation_id, reason)
        if found:
            self._save()
        return found, evse_id

    def _end(self, reservation_id: int, reason: ReservationEndReason) -> tuple[bool, int | None]:
        """:meth:`cancel` without writing the store; the one place an end is logged."""
        found, evse_id = self._remove(reservation_id)
        if not found:
            return False, None
        timer = self._timers.pop(reservation_id, None)
        if timer is not None:
            timer.cancel()
        log.info("reservation ended", reservation_id=reservation_id, evse_id=evse_id,
                 reason=str(reason))
        return True, evse_id

    def _remove(self, reservation_id: int) -> tuple[bool, int | None]:
        for evse_id, reservation in self._by_evse.items():
            if reservation.reservation_id == reservation_id:
                del self._by_evse[evse_id]
                return True, evse_id
        for i, reservation in enumerate(self._station_wide):
            if reservation.reservation_id == reservation_id:
                del self._station_wide[i]
                return True, None
        return False, None

    def cancel_for_evse(self, evse_id: int) -> Ended | None:
        """End the reservation held for ``evse_id``, if there is one (reason Cancelled)."""
        reservation = self._by_evse.get(evse_id)
        if reservation is None:
            return None
        self.cancel(reservation.reservation_id, ReservationEndReason.Cancelled)
        return Ended(evse_id, reservation.reservation_id, ReservationEndReason.Cancelled)

    def on_reservation_used(self, reservation_id: int) -> None:
        """The reserving token started charging: the reservation is done, silently.

        The EVSE is not made available here; the core does that when the session ends.
        """
        self.cancel(reservation_id, ReservationEndReason.UsedToStartCharging)

    # --- expiry ------------------------------------------------------------------------

    def _is_expired(self, reservation: Reservation) -> bool:
        """Past its expiry time; an unreadable expiry time counts as expired."""
        try:
            return self._clock.utcnow() > parse_expiry(reservation.expiry_time)
        except ValueError:
            return True

    def _arm_expiry_timer(self, evse_id: int | None, reservation: Reservation) -> None:
        rid = reservation.reservation_id
        holder: list[TimerHandle] = []

        def expire() -> None:
            with self._lock:
                # Cancelled, or the reservation was replaced (new timer) while we waited.
                if not holder or holder[0].cancelled or self._timers.get(rid) is not holder[0]:
                    return
                log.info("reservation expired", reservation_id=rid, evse_id=evse_id)
                found, held = self.cancel(rid, ReservationEndReason.Expired)
                if found:
                    self._on_expired(Ended(held, rid, ReservationEndReason.Expired))

        # We hold the lock (RLock), so `expire` cannot look at `holder` before it is filled.
        handle = self._clock.call_at(parse_expiry(reservation.expiry_time), expire)
        holder.append(handle)
        self._timers[rid] = handle

    # --- connector changes -------------------------------------------------------------

    def on_connector_state_changed(
        self, state: ConnectorState, evse_id: int, connector_id: int
    ) -> list[Ended]:
        """A connector left AVAILABLE (the caller has already updated it): drop what fails.

        If the EVSE's own reservation wants this connector's type it is cancelled at once.
        Otherwise a connector fewer may make some reservations impossible; those go.
        """
        if state == ConnectorState.AVAILABLE:
            return []
        evse = self._evses.get(evse_id)
        connector = evse.connector(connector_id) if evse is not None else None
        if connector is None:
            log.warning("connector state change for unknown connector",
                        evse_id=evse_id, connector_id=connector_id)
            return []
        own = self._by_evse.get(evse_id)
        if own is not None and types_match(connector.type, wanted_type(own)):
            self.cancel(own.reservation_id, ReservationEndReason.Cancelled)
            return [Ended(evse_id, own.reservation_id, ReservationEndReason.Cancelled)]
        return self._cancel_impossible()

    def _cancel_impossible(self) -> list[Ended]:
        """Keep reservations while they still fit together; cancel the first that does not.

        EVSE-specific ones are kept first (by EVSE id), then station-wide ones in the
        order they were made, so the most recent station-wide reservation goes first.
        """
        kept_evses: set[int] = set()
        doomed: list[int] = []
        for evse_id, reservation in sorted(self._by_evse.items()):
            if self._is_possible([], kept_evses | {evse_id}):
                kept_evses.add(evse_id)
            else:
                doomed.append(reservation.reservation_id)
        kept_types: list[ConnectorTypeEnum] = []
        for reservation in self._station_wide:
            if self._is_possible([*kept_types, wanted_type(reservation)], kept_evses):
                kept_types.append(wanted_type(reservation))
            else:
                doomed.append(reservation.reservation_id)
        ended = []
        for rid in doomed:
            found, held = self.cancel(rid, ReservationEndReason.Cancelled)
            if found:
                ended.append(Ended(held, rid, ReservationEndReason.Cancelled))
        return ended

    # --- questions ---------------------------------------------------------------------

    def is_charging_possible(self, evse_id: int) -> bool:
        """May a car *without* a reservation charge at ``evse_id``?

        Only if the EVSE is not held, and taking it still leaves room for every
        station-wide reservation.
        """
        if evse_id in self._by_evse or evse_id not in self._evses:
            return False
        if not self._station_wide:
            return True  # the common case, asked on every token: nothing to make room for
        return self._is_possible(self._station_wide_types(), self._by_evse.keys() | {evse_id})

    def is_evse_reserved(self, evse_id: int) -> bool:
        """Whether ``evse_id`` has an EVSE-specific reservation (station-wide ones aside)."""
        return evse_id in self._by_evse

    def matches_reserved_identifier(
        self, id_token: str, evse_id: int | None, parent_id_token: str | None
    ) -> int | None:
        """The id of the reservation this token (or its parent token) may use, if any.

        If ``evse_id`` is held, only that EVSE's reservation counts; otherwise the
        station-wide reservations are searched.
        """
        if evse_id is not None and evse_id in self._by_evse:
            reservation = self._by_evse[evse_id]
            if token_fits(reservation, id_token, parent_id_token, self._same):
                return reservation.reservation_id
            return None
        for reservation in self._station_wide:
            if token_fits(reservation, id_token, parent_id_token, self._same):
                return reservation.reservation_id
        return None

    def has_reservation_parent_id(self, evse_id: int | None) -> bool:
        """Whether the reservation a token would have to match carries a parent token.

        For a held EVSE that is its own reservation; otherwise any station-wide one.
        An unknown EVSE has none.
        """
        if evse_id is not None:
            if evse_id not in self._evses:
                return False
            if evse_id in self._by_evse:
                return self._by_evse[evse_id].parent_id_token is not None
        return any(r.parent_id_token is not None for r in self._station_wide)

    def check(
        self, id_token: str, evse_id: int | None, group_id_token: str | None
    ) -> ReservationCheckStatus:
        """The answer to ``exists_reservation`` (EVerest's handle_reservation_exists)."""
        reservation_id = self.matches_reserved_identifier(id_token, evse_id, group_id_token)
        if evse_id is None:
            return (ReservationCheckStatus.ReservedForToken if reservation_id is not None
                    else ReservationCheckStatus.NotReserved)
        if not self.is_evse_reserved(evse_id):
            return ReservationCheckStatus.NotReserved
        if reservation_id is not None:
            return ReservationCheckStatus.ReservedForToken
        if group_id_token is None and self.has_reservation_parent_id(evse_id):
            # The parent token may still arrive later and match.
            return ReservationCheckStatus.ReservedForOtherTokenAndHasParentToken
        return ReservationCheckStatus.ReservedForOtherToken

    def check_global_reservations(self) -> tuple[set[int], set[int]]:
        """Which EVSEs station-wide reservations hold now: (newly held, newly released).

        An EVSE is held when it is free but a walk-in car there could leave a
        station-wide reservation without an EVSE. Only changes since the previous call
        are returned, so the core reserves/releases each EVSE once.
        """
        free = {
            evse_id
            for evse_id in self._evses
            if self._evse_result(evse_id, self._by_evse.keys()) == ReservationResult.Accepted
            and self._connector_result(evse_id, ANY) == ReservationResult.Accepted
        }
        if len(free) == len(self._station_wide):
            held = set(free)
        else:
            held = set()
            current = self._station_wide_types()
            for wanted in current:
                # Could one more car of this type still be guaranteed an EVSE? If not,
                # every free EVSE it could use is held for the reservations.
                if not self._is_possible([*current, wanted], self._by_evse.keys()):
                    held |= {e for e in free if has_connector_type(self._evses[e], wanted)}
        newly_held = held - self._last_reserved
        released = (free & self._last_reserved) - held
        self._last_reserved = held
        return newly_held, released

    def reservations(self) -> list[tuple[int | None, Reservation]]:
        """Current reservations: EVSE-specific by EVSE id, then station-wide as made."""
        return [*sorted(self._by_evse.items()), *((None, r) for r in self._station_wide)]

    # --- feasibility -------------------------------------------------------------------

    def _station_wide_types(self) -> list[ConnectorTypeEnum]:
        return [wanted_type(r) for r in self._station_wide]

    def _evse_result(self, evse_id: int, held: Set[int]) -> ReservationResult:
        return evse_result(self._evses, evse_id, held)

    def _connector_result(self, evse_id: int, wanted: ConnectorTypeEnum) -> ReservationResult:
        return connector_result(self._evses, evse_id, wanted)

    def _fits(self, evse_id: int, car: ConnectorTypeEnum, held: Set[int]) -> bool:
        return fits(self._evses, evse_id, car, held)

    def _is_possible(self, car_types: Sequence[ConnectorTypeEnum], held: Set[int]) -> bool:
        return is_possible(self._evses, car_types, held)

    def _refusal_result(self, wanted: ConnectorTypeEnum) -> ReservationResult:
        return refusal_result(self._evses, wanted,
                              reserved=bool(self._by_evse or self._station_wide))
