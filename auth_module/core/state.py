"""What the rooms of the core share: the settings, the clock, the ports, one lock, the EVSEs.

Locking discipline: one re-entrant lock guards every piece of state in the core (the
EVSEs, the tokens in process, the reservation book). Every public method of a room takes
it; timer callbacks take it and then check that their timer is still the current one.
Port calls made under the lock are publish-and-go (see :mod:`.ports`), so the lock is
never held across a network round trip.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..types import SelectionAlgorithm
from .clock import Clock
from .evse import EvseState
from .ports import StationPorts


@dataclass
class AuthSettings:
    """The behaviour switches of the manifest's ``config`` section."""

    selection_algorithm: SelectionAlgorithm = SelectionAlgorithm.FindFirst
    connection_timeout: int = 30
    master_pass_group_id: str | None = None
    prioritize_authorization_over_stopping_transaction: bool = True
    ignore_connector_faults: bool = False
    plug_in_timeout_enabled: bool = False
    stop_transaction_on_reswipe: bool = True  # false: a re-presented token reports UsedToReauthorize

    def __setattr__(self, name: str, value: Any) -> None:
        # The one place where an empty master pass group means "none" (EVerest's "").
        if name == "master_pass_group_id" and value == "":
            value = None
        object.__setattr__(self, name, value)


class CoreState:
    """The state every room reads and writes, under ``lock``."""

    __slots__ = ("clock", "evses", "lock", "plug_in_queue", "ports", "settings")

    def __init__(self, settings: AuthSettings, clock: Clock, ports: StationPorts) -> None:
        self.settings = settings
        self.clock = clock
        self.ports = ports
        self.lock = threading.RLock()
        self.evses: dict[int, EvseState] = {}
        self.plug_in_queue: list[int] = []  # EVSEs where a car was plugged in, oldest first

    def arm_evse_timer(self, evse: EvseState, on_expiry: Callable[[EvseState], None]) -> None:
        """(Re)start the EVSE's one timer: authorization timeout or plug-in timeout."""
        evse.cancel_timer()

        def fire() -> None:
            with self.lock:
                if handle.cancelled or evse.timer is not handle:
                    return
                evse.timer = None
                on_expiry(evse)

        handle = self.clock.call_later(self.settings.connection_timeout, fire)
        evse.timer = handle

    def forget_plug_in(self, evse_id: int) -> None:
        if evse_id in self.plug_in_queue:
            self.plug_in_queue.remove(evse_id)
