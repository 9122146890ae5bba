"""Choosing the EVSE for an accepted token: ``PlugEvents``, ``PlugEventsLIFO`` and ``FindFirst``.

``PlugEvents`` takes the car that has waited longest for a token (first in, first out);
``PlugEventsLIFO`` the one plugged in last, for stations where a driver usually swipes
right after plugging in while an earlier car still waits for someone else's card.

Pure functions over the current state. Selection never waits: when ``PlugEvents`` has no
plugged-in EVSE to offer it answers :data:`WAIT`, and the handler parks the request until a
plug-in event (or the connection timeout) arrives. That keeps no thread blocked per waiting
driver, which is what lets the module bound its thread pool tightly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Literal

import structlog

from ..types import ProvidedIdToken, SelectionAlgorithm, same_token
from .evse import EvseState

log = structlog.get_logger("auth")

WAIT: Final = "wait"
NONE_FREE: Final = "none-free"
Selection = int | Literal["wait", "none-free"]


def first_plugged(plug_in_queue: Iterable[int], candidates: Sequence[int]) -> int | None:
    """The EVSE among ``candidates`` where a car was plugged in earliest, if any."""
    return next((evse_id for evse_id in plug_in_queue if evse_id in candidates), None)


def last_plugged(plug_in_queue: Sequence[int], candidates: Sequence[int]) -> int | None:
    """The EVSE among ``candidates`` where a car was plugged in most recently, if any."""
    return next((evse_id for evse_id in reversed(plug_in_queue) if evse_id in candidates), None)


def plugged_for(algorithm: SelectionAlgorithm, plug_in_queue: Sequence[int],
                candidates: Sequence[int]) -> int | None:
    """The plugged-in EVSE the algorithm prefers: the newest car for ``PlugEventsLIFO``,
    the oldest for everything else (``FindFirst`` also takes the oldest, as EVerest does)."""
    if algorithm == SelectionAlgorithm.PlugEventsLIFO:
        return last_plugged(plug_in_queue, candidates)
    return first_plugged(plug_in_queue, candidates)


def select_evse(
    algorithm: SelectionAlgorithm,
    candidates: Sequence[int],
    evses: Mapping[int, EvseState],
    plug_in_queue: Sequence[int],
) -> Selection:
    """Pick one of ``candidates`` (never empty), or say to wait, or that none is free.

    A single candidate is taken at once, whatever the algorithm: there is nothing to choose.
    """
    if len(candidates) == 1:
        return candidates[0]
    plugged = plugged_for(algorithm, plug_in_queue, candidates)
    if algorithm in (SelectionAlgorithm.PlugEvents, SelectionAlgorithm.PlugEventsLIFO):
        return plugged if plugged is not None else WAIT
    if algorithm == SelectionAlgorithm.FindFirst:
        if plugged is not None and not evses[plugged].transaction_active:
            return plugged
        return next((e for e in candidates if evses[e].is_available()), NONE_FREE)
    raise ValueError(f"selection algorithm {algorithm} is not implemented")


# --- questions about the EVSEs a token may use (the core's lock held) -----------------------


def referenced_evses(evses: Mapping[int, EvseState], token: ProvidedIdToken) -> list[int]:
    """The EVSEs a token may use: those it names (or all), minus the unavailable ones."""
    if token.connectors is None:
        return [e for e, s in evses.items() if not s.is_unavailable()]
    referenced = []
    for evse_id in token.connectors:
        evse = evses.get(evse_id)
        if evse is None:
            log.warning("token names an EVSE that does not exist", evse=evse_id)
        elif not evse.is_unavailable() and evse_id not in referenced:
            referenced.append(evse_id)
    return referenced


def evse_used_by(evses: Mapping[int, EvseState], evse_ids: list[int], value: str) -> int | None:
    """The EVSE whose authorization belongs to ``value``, as token or as parent."""
    for evse_id in evse_ids:
        auth = evses[evse_id].authorization
        if auth is None:
            continue
        if same_token(auth.id_token.value, value):
            return evse_id
        if auth.parent_id_token is not None and same_token(auth.parent_id_token.value, value):
            return evse_id
    return None


def any_available(evses: Mapping[int, EvseState], evse_ids: list[int]) -> bool:
    return any(evses[e].is_available() for e in evse_ids)


def any_parent_id_present(evses: Mapping[int, EvseState], evse_ids: list[int]) -> bool:
    for e in evse_ids:
        auth = evses[e].authorization
        if auth is not None and auth.parent_id_token is not None:
            return True
    return False
