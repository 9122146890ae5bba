"""The reservation book: which reservations exist, and whether a new one can be honoured.

Behaviour follows EVerest's ``ReservationHandler`` (modules/EVSE/Auth). Two kinds of
reservation exist:

* **EVSE-specific** (an ``evse_id`` is given): that EVSE is held for the token.
* **Station-wide** ("global", no ``evse_id``): *some* EVSE with the wanted connector type
  must be free when the token arrives.

A station-wide reservation is only accepted if it can be honoured however things turn
out. We imagine each reserved car arriving, in every possible order, and each one taking
*any* EVSE that fits it: if in some order some car could be left without an EVSE, the
reservation is refused. The same test tells whether a walk-in car may charge at an EVSE
(:meth:`ReservationBook.is_charging_possible`) and which reservations must go when
connectors fail. EVerest enumerates the orders (exponential); we get the same answer from
a bipartite matching (:func:`no_car_can_be_shut_out`), checked against the enumeration
(:func:`every_arrival_order_fits`) in the tests.

``ConnectorTypeEnum.Unknown`` is a wildcard on both sides: an Unknown connector fits any
car, and a reservation for Unknown (or with no connector type) fits any connector.

Threading: every public method is called by the core with its lock held. The book takes
the lock itself only in its expiry-timer callbacks, which run on the clock's thread. The
``on_cancelled`` callback therefore always runs with the lock held.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from ..types import (
    ConnectorTypeEnum,
    Reservation,
    ReservationCheckStatus,
    ReservationEndReason,
    ReservationResult,
    same_token,
)
from .clock import Clock, TimerHandle
from .evse import Connector, ConnectorState, EvseState

if TYPE_CHECKING:
    from ..store import ReservationStore

log = structlog.get_logger("reservations")

OnCancelled = Callable[[int | None, int, ReservationEndReason, bool], None]
"""(evse_id or None, reservation_id, reason, send_reservation_update)."""

ANY = ConnectorTypeEnum.Unknown

# EVerest's ConnectorState enum order; "more important" states rank higher.
_RANK = {state: rank for rank, state in enumerate(ConnectorState)}
assert list(_RANK) == [
    ConnectorState.AVAILABLE,
    ConnectorState.UNAVAILABLE,
    ConnectorState.FAULTED,
    ConnectorState.OCCUPIED,
    ConnectorState.UNAVAILABLE_FAULTED,
    ConnectorState.FAULTED_OCCUPIED,
]

_RESULT_FOR_STATE = {
    ConnectorState.AVAILABLE: ReservationResult.Accepted,
    ConnectorState.UNAVAILABLE: ReservationResult.Unavailable,
    ConnectorState.FAULTED: ReservationResult.Faulted,
    ConnectorState.UNAVAILABLE_FAULTED: ReservationResult.Faulted,
    ConnectorState.FAULTED_OCCUPIED: ReservationResult.Faulted,
    ConnectorState.OCCUPIED: ReservationResult.Occupied,
}

_IN_USE = (ConnectorState.OCCUPIED, ConnectorState.FAULTED_OCCUPIED)


# --- small pure helpers ------------------------------------------------------------------


def parse_expiry(expiry_time: str) -> datetime:
    """An RFC 3339 time as an aware datetime; a time without offset is taken as UTC."""
    text = expiry_time.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def wanted_type(reservation: Reservation) -> ConnectorTypeEnum:
    """The connector type a reservation needs; no type given means any type."""
    return reservation.connector_type or ANY


def types_match(connector_type: ConnectorTypeEnum, wanted: ConnectorTypeEnum) -> bool:
    return connector_type == wanted or ANY in (connector_type, wanted)


def has_connector_type(evse: EvseState, wanted: ConnectorTypeEnum) -> bool:
    """Whether the EVSE has a connector a car wanting ``wanted`` could use (state aside)."""
    return wanted == ANY or any(types_match(c.type, wanted) for c in evse.connectors)


def more_important_state(current: ConnectorState, new: ConnectorState) -> ConnectorState:
    """Fold ``new`` into ``current`` to pick what a refused reservation reports.

    OCPP H01.FR.11-13 want Occupied over Faulted over Unavailable. EVerest ranks states by
    its enum order and maps the combined states down: FAULTED_OCCUPIED counts as OCCUPIED
    and UNAVAILABLE_FAULTED as FAULTED (unless OCCUPIED was already seen).
    """
    if new == ConnectorState.OCCUPIED:
        return ConnectorState.OCCUPIED
    if _RANK[new] <= _RANK[current]:
        return current
    if new == ConnectorState.FAULTED_OCCUPIED:
        return ConnectorState.OCCUPIED
    if new == ConnectorState.UNAVAILABLE_FAULTED:
        return current if current == ConnectorState.OCCUPIED else ConnectorState.FAULTED
    return new


def arrival_orders(car_types: Sequence[ConnectorTypeEnum]) -> list[tuple[ConnectorTypeEnum, ...]]:
    """Every distinct order in which cars of these connector types could arrive."""
    return sorted(set(itertools.permutations(car_types)))


Fitting = Mapping[ConnectorTypeEnum, Set[int]]
"""For each car (connector) type: the EVSEs such a car could charge at right now."""


def every_arrival_order_fits(cars: Sequence[ConnectorTypeEnum], fitting: Fitting) -> bool:
    """The definition of feasibility, by brute force, as EVerest computes it.

    Cars arrive in every possible order; each takes *any* free EVSE that fits it (all
    choices are explored). Feasible if no car ever finds every fitting EVSE taken.
    Exponential in the number of cars: kept as the reference that
    :func:`no_car_can_be_shut_out` is tested against, not used at run time.
    """

    def all_arrive(order: tuple[ConnectorTypeEnum, ...], taken: frozenset[int]) -> bool:
        choices = fitting[order[0]] - taken
        if not choices:
            return False
        return len(order) == 1 or all(all_arrive(order[1:], taken | {e}) for e in choices)

    return all(all_arrive(order, frozenset()) for order in arrival_orders(cars) if order)


def no_car_can_be_shut_out(cars: Sequence[ConnectorTypeEnum], fitting: Fitting) -> bool:
    """Same answer as :func:`every_arrival_order_fits`, in polynomial time.

    A car is shut out exactly when the cars that came before it sit on every EVSE that
    would fit it. Arrival order and choices are free, so that can happen iff the *other*
    cars can be placed, one per EVSE and each on an EVSE that fits it, covering all the
    car's fitting EVSEs: a bipartite matching question, asked once per car type.
    """
    for car in set(cars):
        others = list(cars)
        others.remove(car)
        if _can_occupy_all(fitting[car], [fitting[o] for o in others]):
            return False
    return True


def _can_occupy_all(targets: Set[int], cars: Sequence[Set[int]]) -> bool:
    """Can ``cars`` (each with the EVSEs it fits) occupy every EVSE in ``targets``?

    Maximum bipartite matching by augmenting paths (Kuhn); sizes here are tiny.
    """
    if len(targets) > len(cars):
        return False
    evse_of_car: dict[int, int] = {}

    def place(evse: int, tried: set[int]) -> bool:
        for car, fits in enumerate(cars):
            if evse in fits and car not in tried:
                tried.add(car)
                if car not in evse_of_car or place(evse_of_car[car], tried):
                    evse_of_car[car] = evse
                    return True
        return False

    return all(place(evse, set()) for evse in sorted(targets))


# --- the book ----------------------------------------------------------------------------


class ReservationBook:
    """All current reservations of the station, with their expiry timers."""

    def __init__(
        self,
        evses: dict[int, EvseState],
        clock: Clock,
        lock: threading.RLock,
        store: ReservationStore | None,
        on_cancelled: OnCancelled,
    ) -> None:
        self._evses = evses
        self._clock = clock
        self._lock = lock
        self._store = store
        self._on_cancelled = on_cancelled
        self._by_evse: dict[int, Reservation] = {}
        self._station_wide: list[Reservation] = []  # in the order they were made
        self._timers: dict[int, TimerHandle] = {}
        self._last_reserved: set[int] = set()  # memory of check_global_reservations
        self._loading = False

    # --- persistence -------------------------------------------------------------------

    def load(self) -> int:
        """Re-make every stored reservation after a restart.

        A reservation that expired while we were down ends as Expired; one that can no
        longer be honoured (EVSE gone, connector faulted, ...) ends as Cancelled. Either
        way the core is told, so it can send the reservation update the CSMS waits for.
        The store is rewritten once at the end to hold exactly what was re-made. Returns
        how many reservations the store held.
        """
        if self._store is None:
            return 0
        stored = self._store.load()
        self._loading = True
        try:
            for evse_id, reservation in stored:
                self._reload_one(evse_id, reservation)
        finally:
            self._loading = False
        self._save()
        return len(stored)

    def held_station_wide(self) -> set[int]:
        """The EVSEs station-wide reservations hold at the moment (as last reported)."""
        return set(self._last_reserved)

    def _reload_one(self, evse_id: int | None, reservation: Reservation) -> None:
        rid = reservation.reservation_id
        if self._is_expired(reservation):
            log.info("stored reservation expired while down", reservation_id=rid, evse_id=evse_id)
            self._on_cancelled(evse_id, rid, ReservationEndReason.Expired, True)
            return
        result = self.make_reservation(evse_id, reservation)
        if result != ReservationResult.Accepted:
            log.warning(
                "stored reservation can no longer be made, cancelled",
                reservation_id=rid,
                evse_id=evse_id,
                result=str(result),
            )
            self._on_cancelled(evse_id, rid, ReservationEndReason.Cancelled, True)

    def _save(self) -> None:
        """Write the whole list, even when it is empty (EVerest keeps a stale last entry)."""
        if self._store is not None and not self._loading:
            self._store.save(self.reservations())

    # --- making and ending reservations -------------------------------------------------

    def make_reservation(self, evse_id: int | None, reservation: Reservation) -> ReservationResult:
        """Try to place ``reservation``; Accepted if it is now in the book.

        A reservation whose id is already in the book replaces it (OCPP H01.FR.01): the
        old one is removed first, so it is gone even when the new one is refused.
        """
        if self._is_expired(reservation):
            log.info("reservation rejected: expiry time is in the past or unreadable",
                     reservation_id=reservation.reservation_id)
            return ReservationResult.Rejected

        replaced, old_evse = self.cancel(
            reservation.reservation_id, False, ReservationEndReason.Cancelled
        )
        if replaced:
            log.debug("replacing reservation with the same id",
                      reservation_id=reservation.reservation_id, old_evse_id=old_evse)

        if evse_id is None:
            result = self._try_station_wide(reservation)
        else:
            result = self._try_for_evse(evse_id, reservation)

        if result == ReservationResult.Accepted:
            self._arm_expiry_timer(evse_id, reservation)
            self._save()
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

    def cancel(
        self, reservation_id: int, execute_callback: bool, reason: ReservationEndReason
    ) -> tuple[bool, int | None]:
        """End a reservation. Returns (whether it existed, its EVSE if it had one)."""
        found, evse_id = self._remove(reservation_id)
        if not found:
            return False, None
        timer = self._timers.pop(reservation_id, None)
        if timer is not None:
            timer.cancel()
        log.info("reservation ended", reservation_id=reservation_id, evse_id=evse_id,
                 reason=str(reason))
        self._save()
        if execute_callback:
            self._on_cancelled(evse_id, reservation_id, reason, True)
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

    def cancel_for_evse(self, evse_id: int, execute_callback: bool) -> bool:
        """End the reservation held for ``evse_id``, if there is one (reason Cancelled)."""
        reservation = self._by_evse.get(evse_id)
        if reservation is None:
            return False
        return self.cancel(
            reservation.reservation_id, execute_callback, ReservationEndReason.Cancelled
        )[0]

    def on_reservation_used(self, reservation_id: int) -> None:
        """The reserving token started charging: the reservation is done, silently.

        The EVSE is not made available here; the core does that when the session ends.
        """
        self.cancel(reservation_id, False, ReservationEndReason.UsedToStartCharging)

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
                self.cancel(rid, True, ReservationEndReason.Expired)

        # We hold the lock (RLock), so `expire` cannot look at `holder` before it is filled.
        handle = self._clock.call_at(parse_expiry(reservation.expiry_time), expire)
        holder.append(handle)
        self._timers[rid] = handle

    # --- connector changes -------------------------------------------------------------

    def on_connector_state_changed(
        self, state: ConnectorState, evse_id: int, connector_id: int
    ) -> None:
        """A connector left AVAILABLE (the caller has already updated it): drop what fails.

        If the EVSE's own reservation wants this connector's type it is cancelled at once.
        Otherwise a connector fewer may make some reservations impossible; those go.
        """
        if state == ConnectorState.AVAILABLE:
            return
        evse = self._evses.get(evse_id)
        connector = evse.connector(connector_id) if evse is not None else None
        if connector is None:
            log.warning("connector state change for unknown connector",
                        evse_id=evse_id, connector_id=connector_id)
            return
        own = self._by_evse.get(evse_id)
        if own is not None and types_match(connector.type, wanted_type(own)):
            self.cancel(own.reservation_id, True, ReservationEndReason.Cancelled)
            return
        self._cancel_impossible()

    def _cancel_impossible(self) -> None:
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
        for rid in doomed:
            self.cancel(rid, True, ReservationEndReason.Cancelled)

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
            if _token_fits(reservation, id_token, parent_id_token):
                return reservation.reservation_id
            return None
        for reservation in self._station_wide:
            if _token_fits(reservation, id_token, parent_id_token):
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
        """Can the EVSE as a whole take a car? Plugged in or in use wins over held."""
        evse = self._evses.get(evse_id)
        if evse is None:
            return ReservationResult.Rejected
        if evse.plugged_in:
            return ReservationResult.Occupied
        # One connector in use blocks the EVSE's other connectors too.
        for connector in evse.connectors:
            if connector.connector_state in _IN_USE:
                return _RESULT_FOR_STATE[connector.connector_state]
        if evse_id in held:
            return ReservationResult.Occupied
        return ReservationResult.Accepted

    def _connector_result(self, evse_id: int, wanted: ConnectorTypeEnum) -> ReservationResult:
        """Accepted if a connector of the wanted type is AVAILABLE, else the worst state."""
        evse = self._evses.get(evse_id)
        if evse is None:
            return ReservationResult.Rejected
        state = ConnectorState.UNAVAILABLE
        for connector in _matching(evse.connectors, wanted):
            if connector.connector_state == ConnectorState.AVAILABLE:
                return ReservationResult.Accepted
            state = more_important_state(state, connector.connector_state)
        return _RESULT_FOR_STATE[state]

    def _fits(self, evse_id: int, car: ConnectorTypeEnum, held: Set[int]) -> bool:
        """Could a car of type ``car`` charge at ``evse_id`` right now?"""
        return (
            self._evse_result(evse_id, held) == ReservationResult.Accepted
            and has_connector_type(self._evses[evse_id], car)
            and self._connector_result(evse_id, car) == ReservationResult.Accepted
        )

    def _is_possible(self, car_types: Sequence[ConnectorTypeEnum], held: Set[int]) -> bool:
        """Can these station-wide cars all charge, with ``held`` EVSEs kept for others?

        EVerest's "virtual car arrival": true only if, for every arrival order and
        whatever fitting EVSE each car picks, every later car still finds one.
        """
        if len(car_types) + len(held) > len(self._evses):
            return False
        fitting = {
            car: frozenset(e for e in self._evses if self._fits(e, car, held))
            for car in set(car_types)
        }
        return no_car_can_be_shut_out(car_types, fitting)

    def _refusal_result(self, wanted: ConnectorTypeEnum) -> ReservationResult:
        """What to answer when a reservation does not fit (OCPP H01.FR.11-13).

        Occupied if anything is reserved or plugged in; otherwise the most important
        state among the connectors of the wanted type.
        """
        if self._by_evse or self._station_wide:
            return ReservationResult.Occupied
        if any(evse.plugged_in for evse in self._evses.values()):
            return ReservationResult.Occupied
        candidates = [e for _, e in sorted(self._evses.items()) if has_connector_type(e, wanted)]
        if not candidates:
            return ReservationResult.Rejected
        state = ConnectorState.UNAVAILABLE
        for evse in candidates:
            for connector in _matching(evse.connectors, wanted):
                if connector.connector_state != ConnectorState.AVAILABLE:
                    state = more_important_state(state, connector.connector_state)
        return _RESULT_FOR_STATE[state]


def _matching(connectors: Iterable[Connector], wanted: ConnectorTypeEnum) -> Iterable[Connector]:
    return (c for c in connectors if types_match(c.type, wanted))


def _token_fits(reservation: Reservation, id_token: str, parent_id_token: str | None) -> bool:
    """The token itself, or its parent (group) token, is the one reserved; any case."""
    return same_token(reservation.id_token, id_token) or same_token(
        reservation.parent_id_token, parent_id_token
    )
