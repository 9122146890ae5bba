"""Which reservations fit together: the pure part of the reservation book.

A station-wide reservation is only accepted if it can be honoured however things turn
out. We imagine each reserved car arriving, in every possible order, and each one taking
*any* EVSE that fits it: if in some order some car could be left without an EVSE, the
reservation is refused. EVerest enumerates the orders (exponential); we get the same answer
from a bipartite matching (:func:`no_car_can_be_shut_out`), checked against the enumeration
(:func:`every_arrival_order_fits`) in the tests.

``ConnectorTypeEnum.Unknown`` is a wildcard on both sides: an Unknown connector fits any
car, and a reservation for Unknown (or with no connector type) fits any connector.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence, Set

from ..types import ConnectorTypeEnum, Reservation, ReservationResult, same_token
from .evse import Connector, ConnectorState, EvseState

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

RESULT_FOR_STATE = {
    ConnectorState.AVAILABLE: ReservationResult.Accepted,
    ConnectorState.UNAVAILABLE: ReservationResult.Unavailable,
    ConnectorState.FAULTED: ReservationResult.Faulted,
    ConnectorState.UNAVAILABLE_FAULTED: ReservationResult.Faulted,
    ConnectorState.FAULTED_OCCUPIED: ReservationResult.Faulted,
    ConnectorState.OCCUPIED: ReservationResult.Occupied,
}

IN_USE = (ConnectorState.OCCUPIED, ConnectorState.FAULTED_OCCUPIED)


# --- small pure helpers ------------------------------------------------------------------


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


def matching(connectors: Iterable[Connector], wanted: ConnectorTypeEnum) -> Iterable[Connector]:
    return (c for c in connectors if types_match(c.type, wanted))


def token_fits(reservation: Reservation, id_token: str, parent_id_token: str | None,
               same: Callable[[str | None, str | None], bool] = same_token) -> bool:
    """The token itself, or its parent (group) token, is the one reserved; any case.

    ``same`` compares a token as stored with a presented value: after a restart the stored
    one is a keyed hash (privacy.py), which only the store can compare."""
    return same(reservation.id_token, id_token) or same(reservation.parent_id_token, parent_id_token)


# --- the questions, over a station's EVSEs ---------------------------------------------------

Evses = Mapping[int, EvseState]


def evse_result(evses: Evses, evse_id: int, held: Set[int]) -> ReservationResult:
    """Can the EVSE as a whole take a car? Plugged in or in use wins over held."""
    evse = evses.get(evse_id)
    if evse is None:
        return ReservationResult.Rejected
    if evse.plugged_in:
        return ReservationResult.Occupied
    # One connector in use blocks the EVSE's other connectors too.
    for connector in evse.connectors:
        if connector.connector_state in IN_USE:
            return RESULT_FOR_STATE[connector.connector_state]
    if evse_id in held:
        return ReservationResult.Occupied
    return ReservationResult.Accepted


def connector_result(evses: Evses, evse_id: int, wanted: ConnectorTypeEnum) -> ReservationResult:
    """Accepted if a connector of the wanted type is AVAILABLE, else the worst state."""
    evse = evses.get(evse_id)
    if evse is None:
        return ReservationResult.Rejected
    state = ConnectorState.UNAVAILABLE
    for connector in matching(evse.connectors, wanted):
        if connector.connector_state == ConnectorState.AVAILABLE:
            return ReservationResult.Accepted
        state = more_important_state(state, connector.connector_state)
    return RESULT_FOR_STATE[state]


def fits(evses: Evses, evse_id: int, car: ConnectorTypeEnum, held: Set[int]) -> bool:
    """Could a car of type ``car`` charge at ``evse_id`` right now?"""
    return (
        evse_result(evses, evse_id, held) == ReservationResult.Accepted
        and has_connector_type(evses[evse_id], car)
        and connector_result(evses, evse_id, car) == ReservationResult.Accepted
    )


def is_possible(evses: Evses, car_types: Sequence[ConnectorTypeEnum], held: Set[int]) -> bool:
    """Can these station-wide cars all charge, with ``held`` EVSEs kept for others?

    EVerest's "virtual car arrival": true only if, for every arrival order and
    whatever fitting EVSE each car picks, every later car still finds one.
    """
    if len(car_types) + len(held) > len(evses):
        return False
    fitting = {
        car: frozenset(e for e in evses if fits(evses, e, car, held))
        for car in set(car_types)
    }
    return no_car_can_be_shut_out(car_types, fitting)


def refusal_result(evses: Evses, wanted: ConnectorTypeEnum, reserved: bool) -> ReservationResult:
    """What to answer when a reservation does not fit (OCPP H01.FR.11-13).

    Occupied if anything is ``reserved`` or plugged in; otherwise the most important
    state among the connectors of the wanted type.
    """
    if reserved or any(evse.plugged_in for evse in evses.values()):
        return ReservationResult.Occupied
    candidates = [e for _, e in sorted(evses.items()) if has_connector_type(e, wanted)]
    if not candidates:
        return ReservationResult.Rejected
    state = ConnectorState.UNAVAILABLE
    for evse in candidates:
        for connector in matching(evse.connectors, wanted):
            if connector.connector_state != ConnectorState.AVAILABLE:
                state = more_important_state(state, connector.connector_state)
    return RESULT_FOR_STATE[state]
