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

from ..types import SelectionAlgorithm
from .evse import EvseState

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
