"""What happens to an EVSE: session events, faults, enable / disable, the plug-in timeout.

Each report moves the EVSE's connectors through their state machine (:mod:`.evse`), lets
the reservation desk drop what no longer fits, and, when an EVSE with a car may have become
usable (a plug-in, a fault cleared, an EVSE enabled, a reservation ended), wakes the tokens
parked for one (:meth:`.authorize.TokenJourney.wake_parked_requests`), which gives one only
an EVSE that :meth:`.evse.EvseState.is_available` (the connector table) allows.
"""

from __future__ import annotations

import structlog

from ..types import SessionEvent, SessionEventEnum, StartSessionReason
from .authorize import TokenJourney
from .evse import ConnectorEvent, EvseState
from .reserving import ReservationDesk
from .state import CoreState

log = structlog.get_logger("auth")

_FAULT_LOG = {ConnectorEvent.FAULTED: "EVSE fault raised",
              ConnectorEvent.ERROR_CLEARED: "EVSE fault cleared"}


class EvseEvents:
    def __init__(self, core: CoreState, desk: ReservationDesk, journey: TokenJourney) -> None:
        self._core = core
        self._lock = core.lock
        self._evses = core.evses
        self._settings = core.settings
        self._desk = desk
        self._journey = journey

    def on_session_event(self, evse_id: int, event: SessionEvent) -> None:
        with self._lock:
            evse = self._evses.get(evse_id)
            if evse is None:
                log.warning("session event for an unknown EVSE", evse=evse_id)
                return
            connector_id = event.connector_id or 1
            kind = event.event
            log.debug("session event", evse=evse_id, session_event=kind.value)
            if kind == SessionEventEnum.SessionStarted:
                self._on_session_started(evse, event)
            elif kind == SessionEventEnum.TransactionStarted:
                evse.plugged_in = True
                evse.transaction_active = True
                self._connector_event(evse, connector_id, ConnectorEvent.TRANSACTION_STARTED)
                evse.cancel_timer()
                self._desk.sync_station_wide()
            elif kind == SessionEventEnum.TransactionFinished:
                evse.transaction_active = False
                evse.authorization = None
            elif kind == SessionEventEnum.SessionFinished:
                evse.plugged_in = False
                evse.plug_in_timed_out = False
                evse.authorization = None
                self._connector_event(evse, connector_id, ConnectorEvent.SESSION_FINISHED)
                evse.cancel_timer()
                self._core.forget_plug_in(evse_id)
                self._desk.sync_station_wide()
            elif kind == SessionEventEnum.Disabled:
                self._connector_event(evse, connector_id, ConnectorEvent.DISABLE)
                self._desk.sync_station_wide()
            elif kind == SessionEventEnum.Enabled:
                self._connector_event(evse, connector_id, ConnectorEvent.ENABLE)
                self._desk.sync_station_wide()
                self._journey.wake_parked_requests()  # a car may wait there
            elif kind == SessionEventEnum.Deauthorized:
                evse.authorization = None
                evse.cancel_timer()
            elif kind == SessionEventEnum.ReservationEnd:
                self._desk.on_reservation_end(evse_id)
                self._journey.wake_parked_requests()  # a car may wait there

    def _on_session_started(self, evse: EvseState, event: SessionEvent) -> None:
        started = event.session_started
        if started is None or started.reason != StartSessionReason.EVConnected:
            return
        self._core.plug_in_queue.append(evse.evse_id)
        evse.plugged_in = True
        log.info("car plugged in", evse=evse.evse_id)
        # The plug-in timeout asks for a token within connection_timeout; an EVSE that was
        # authorized before the car came keeps its authorization timer instead.
        if (len(self._evses) > 1 and self._settings.plug_in_timeout_enabled
                and evse.authorization is None):
            self._core.arm_evse_timer(evse, self._plug_in_expired)
        self._journey.wake_parked_requests()

    def _plug_in_expired(self, evse: EvseState) -> None:
        log.info("plug-in timeout: replug required", evse=evse.evse_id)
        self._core.ports.withdraw_authorization(evse.index)
        self._core.forget_plug_in(evse.evse_id)
        evse.plug_in_timed_out = True

    def on_fault(self, evse_id: int, event: ConnectorEvent) -> None:
        """``evse_manager/Inoperative`` raised (FAULTED) or cleared (ERROR_CLEARED): the
        whole EVSE is out of service, or back."""
        with self._lock:
            evse = self._evses.get(evse_id)
            if evse is None:
                log.warning("fault report for an unknown EVSE", evse=evse_id)
                return
            log.info(_FAULT_LOG[event], evse=evse_id,
                     ignored=self._settings.ignore_connector_faults)
            if self._settings.ignore_connector_faults:
                return
            for connector in evse.connectors:
                self._connector_event(evse, connector.id, event)
            self._desk.sync_station_wide()
            if event == ConnectorEvent.ERROR_CLEARED:
                self._journey.wake_parked_requests()  # a car may wait there

    def _connector_event(self, evse: EvseState, connector_id: int, event: ConnectorEvent) -> None:
        connector = evse.connector(connector_id)
        if connector is None:
            log.warning("event for an unknown connector", evse=evse.evse_id,
                        connector=connector_id)
            return
        connector.submit(event)
        self._desk.on_connector_state_changed(connector.connector_state, evse.evse_id,
                                              connector_id)
