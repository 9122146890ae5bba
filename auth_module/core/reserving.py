"""Everything done with reservations: reserve, cancel, expiry, restore at start, and the
station-wide holds. The one owner of the :class:`~.reservations.ReservationBook`.

The book decides what fits and reports what ended; this room tells the world: the EVSE
managers (``reserve`` / ``cancel_reservation``) and the CSMS (``reservation_update``).
"""

from __future__ import annotations

from typing import Any

import structlog

from ..types import (
    Reservation,
    ReservationCheck,
    ReservationCheckStatus,
    ReservationEndReason,
    ReservationResult,
    ReservationUpdate,
)
from .evse import ConnectorState
from .reservations import Ended, ReservationBook
from .state import CoreState

log = structlog.get_logger("auth")

_UPDATE_FOR = {ReservationEndReason.Expired: ReservationUpdate.Expired,
               ReservationEndReason.Cancelled: ReservationUpdate.Removed}


class ReservationDesk:
    def __init__(self, core: CoreState, store: Any = None) -> None:
        self._core = core
        self._lock = core.lock
        self._ports = core.ports
        self._evses = core.evses
        self.book = ReservationBook(core.evses, core.clock, core.lock, store, self._expired)

    # --- start-up ---------------------------------------------------------------------------

    def start(self) -> None:
        """Bring back stored reservations and tell the EVSEs again.

        An EVSE manager may have restarted too, so each EVSE-specific reservation is sent to
        it once more; one it now refuses is cancelled (``Removed``), as a refused
        ``reserve_now`` would have been.
        """
        with self._lock:
            stored, ended = self.book.load()
            for gone in ended:  # each EVSE is released once, below, not per reservation
                self._ended(gone, update=True, release_evse=False)
            restored = [(evse_id, r.reservation_id)
                        for evse_id, r in self.book.reservations() if evse_id is not None]
            self.sync_station_wide()
            if stored:
                # Before the restart some EVSEs may have been reserved (an expired reservation,
                # a station-wide hold) that are free now; nobody else will tell them.
                reserved = {e for e, _ in restored} | self.book.held_station_wide()
                for evse in self._evses.values():
                    if evse.evse_id not in reserved:
                        self._ports.cancel_reservation(evse.index)
        for evse_id, reservation_id in restored:
            if self._ports.reserve(self._evses[evse_id].index, reservation_id):
                continue
            log.warning("EVSE manager refused a restored reservation; cancelling it",
                        reservation_id=reservation_id, evse=evse_id)
            with self._lock:
                self._cancel(reservation_id, update=True)

    # --- commands ---------------------------------------------------------------------------

    def reserve_now(self, reservation: Reservation) -> ReservationResult:
        evse_id = reservation.evse_id
        if evse_id is not None and evse_id < 0:
            evse_id = None
        with self._lock:
            result = self.book.make_reservation(evse_id, reservation)
            index = self._evses[evse_id].index if evse_id in self._evses else None
        log.info("reservation request", reservation_id=reservation.reservation_id, evse=evse_id,
                 result=result.value)
        if result != ReservationResult.Accepted:
            return result
        if index is not None and not self._ports.reserve(index, reservation.reservation_id):
            log.warning("EVSE manager refused the reservation; cancelling it",
                        reservation_id=reservation.reservation_id, evse=evse_id)
            with self._lock:  # it was never placed as far as anyone else knows: no message
                self.book.cancel(reservation.reservation_id, ReservationEndReason.Cancelled)
            return ReservationResult.Rejected
        self._ports.publish_reservation_update(reservation.reservation_id, ReservationUpdate.Placed)
        with self._lock:
            self.sync_station_wide()
        return ReservationResult.Accepted

    def cancel_reservation(self, reservation_id: int) -> bool:
        """Cancelled from outside (OCPP): no ``reservation_update``, as EVerest does."""
        with self._lock:
            return self._cancel(reservation_id, update=False)

    def exists_reservation(self, check: ReservationCheck) -> ReservationCheckStatus:
        with self._lock:
            return self.book.check(check.id_token, check.evse_id, check.group_id_token)

    def reservations(self) -> list[tuple[int | None, Reservation]]:
        with self._lock:
            return self.book.reservations()

    # --- what the EVSEs report (lock held) ----------------------------------------------------

    def on_connector_state_changed(self, state: ConnectorState, evse_id: int,
                                   connector_id: int) -> None:
        for gone in self.book.on_connector_state_changed(state, evse_id, connector_id):
            self._ended(gone, update=True)

    def on_reservation_end(self, evse_id: int) -> None:
        """The EVSE manager ended the reservation it held (``ReservationEnd``)."""
        gone = self.book.cancel_for_evse(evse_id)
        if gone is not None:
            self._ended(gone, update=True)

    def sync_station_wide(self) -> None:
        """Reserve (id -1) the EVSEs that station-wide reservations now need, release the rest."""
        reserve, release = self.book.check_global_reservations()
        for evse_id in sorted(release):
            self._ports.cancel_reservation(self._evses[evse_id].index)
        for evse_id in sorted(reserve):
            self._ports.reserve_nowait(self._evses[evse_id].index, -1)

    # --- ends ---------------------------------------------------------------------------------

    def _cancel(self, reservation_id: int, *, update: bool) -> bool:
        found, evse_id = self.book.cancel(reservation_id, ReservationEndReason.Cancelled)
        if found:
            self._ended(Ended(evse_id, reservation_id, ReservationEndReason.Cancelled),
                        update=update)
        return found

    def _expired(self, gone: Ended) -> None:
        """The book's expiry timer ended a reservation (lock held)."""
        self._ended(gone, update=True)

    def _ended(self, gone: Ended, *, update: bool, release_evse: bool = True) -> None:
        """Tell the world a reservation ended: its EVSE is free again, and (``update``) the
        CSMS learns why. (The book has logged the end.)"""
        if release_evse and gone.evse_id is not None and gone.evse_id in self._evses:
            self._ports.cancel_reservation(self._evses[gone.evse_id].index)
        status = _UPDATE_FOR.get(gone.reason) if update else None
        if status is not None:
            self._ports.publish_reservation_update(gone.reservation_id, status)
        self.sync_station_wide()
