"""Wires the bus, the core and the plugins together; holds no authorization logic itself.

Start-up follows EVerest's order: subscribe first (so no session event is missed), ask
every EVSE manager ``get_evse`` in station-file order, check each answers the evse id of
its position, replay the session events that arrived meanwhile, then publish ``ready``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from collections.abc import Callable
from typing import Any

import structlog
from pydantic import ValidationError

from .bus import BusClient, CallCancelled, CommandError, CommandTimeout, NotConnected
from .bus_ports import BusPorts, BusValidator
from .core.clock import Clock, RealClock
from .core.gate import StartupGate
from .core.handler import AuthHandler, AuthSettings
from .core.ports import Runner
from .everest.link import ManagerLink
from .logs import remember_token
from .plugins.base import TokenProvider, TokenValidator
from .privacy import KeyFileError, TokenPrivacy, load_or_create_key
from .privacy import install as install_privacy
from .schema import InterfaceSchemas
from .station import BusConnection, Station
from .stopping import StopSignal, follow
from .store import ReservationStore
from .types import (
    Evse,
    ProvidedIdToken,
    Reservation,
    ReservationCheck,
    SelectionAlgorithm,
    SessionEvent,
    TokenValidationStatus,
    ValidationResultUpdate,
    WithdrawAuthorizationRequest,
)

log = structlog.get_logger("module")


def privacy_key_file(station: Station) -> Path:
    """``<module_id>-privacy.key`` beside the reservation store (docs/security.md)."""
    return station.reservation_store.parent / f"{station.module_id}-privacy.key"


class StartupError(Exception):
    """The station cannot run as configured (e.g. EVSE managers out of order)."""


class NotReadyError(Exception):
    """Answered as the ``NotReady`` command error."""

    event = "NotReady"


class AuthModule:
    def __init__(self, station: Station, clock: Clock | None = None,
                 token_workers: int = 8, token_backlog: int = 64,
                 manager: ManagerLink | None = None) -> None:
        self.station = station
        #: under EVerest's manager: ModuleReady first, get_evse only after its GlobalReady
        self.manager = manager
        cfg = station.config
        # Each token runs on a thread of the bus's crew (at most token_workers at once, and
        # token_backlog waiting): the thread that reads a token becomes its thread. No
        # thread waits for a validator, so the tokens being validated (or waiting for a car)
        # are bounded separately, by the same total.
        self.bus = BusClient(module_id=station.module_id, prefix=station.mqtt.prefix,
                             work_threads=token_workers, work_backlog=token_backlog,
                             access=station.broker)
        for warning in station.broker.warnings:
            log.warning(warning)
        self.runner: Runner = self.bus  # where each token runs: a thread of the bus crew
        self.clock = clock or RealClock()
        self.schemas = InterfaceSchemas.load()
        self.validators: list[TokenValidator | BusValidator] = []
        self.providers: list[TokenProvider] = []
        self.privacy = self._privacy()  # before the plugins: a plugin's files use it too
        self._load_plugins()
        self.ports = BusPorts(self.bus, station.evse_managers, self.validators,
                              command_timeout_s=station.timeouts.command_s,
                              validator_timeout_s=station.timeouts.validator_s,
                              clock=self.clock, runner=self.bus)
        # The console (CONTRACT.md §9) is imported only for a station that has one.
        self.console_feed: Any = None
        self.console: Any = None
        ports: Any = self.ports
        if station.console is not None:
            from .console.feed import ConsoleFeed, ObservedPorts

            self.console_feed = ConsoleFeed()
            ports = ObservedPorts(self.ports, self.console_feed)
        settings = AuthSettings(
            selection_algorithm=SelectionAlgorithm(cfg.selection_algorithm),
            connection_timeout=cfg.connection_timeout,
            master_pass_group_id=cfg.master_pass_group_id,
            prioritize_authorization_over_stopping_transaction=(
                cfg.prioritize_authorization_over_stopping_transaction),
            ignore_connector_faults=cfg.ignore_connector_faults,
            plug_in_timeout_enabled=cfg.plug_in_timeout_enabled,
            stop_transaction_on_reswipe=cfg.stop_transaction_on_reswipe,
        )
        self.handler = AuthHandler(settings, self.clock, ports,
                                   ReservationStore(station.reservation_store,
                                                    privacy=self.privacy))
        for note in self._privacy_notes:
            log.info(note)
        self.gate = StartupGate()
        self.ready = threading.Event()
        self.max_tokens_in_process = token_workers + token_backlog

    def _privacy(self) -> TokenPrivacy:
        """The station's keyed hashes for tokens (logs, store), the key beside the store."""
        path = privacy_key_file(self.station)
        try:
            key, notes = load_or_create_key(path)
        except KeyFileError as exc:
            raise self.station.error("reservations.store", str(exc)) from None
        self._privacy_notes = notes  # logged once the station is known to be usable
        keyed = TokenPrivacy(key)
        install_privacy(keyed)
        return keyed

    # --- plugins -------------------------------------------------------------------------

    def _load_plugins(self) -> None:
        """Validators and providers in station-file order, bus ones and in-process ones alike.

        A plugin with a bad name or option raises StationError here, before anything runs.
        """
        from .plugins.loader import build_provider, build_validator

        try:
            self._build_plugins(build_validator, build_provider)
        except Exception:
            for plugin in self._plugins():  # e.g. an OCPP thread
                plugin.close()
            raise

    def _plugins(self) -> list[TokenProvider | TokenValidator]:
        """The in-process plugins (a bus validator is another module: nothing to close)."""
        return [*self.providers,
                *(v for v in self.validators if not isinstance(v, BusValidator))]

    def _build_plugins(self, build_validator: Any, build_provider: Any) -> None:
        for entry in self.station.token_validators:
            if isinstance(entry, BusConnection):
                self.validators.append(BusValidator(self.bus, entry,
                                                    self.station.timeouts.validator_s))
            else:
                self.validators.append(build_validator(entry, self.station))
        for entry in self.station.token_providers:
            if not isinstance(entry, BusConnection):
                self.providers.append(build_provider(entry, self.station))

    # --- running -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set. Raises StartupError if the station is inconsistent.

        A :class:`~auth_module.stopping.StopSignal` (what ``auth-module`` passes) also ends a
        start-up call at once; a plain Event is followed by one waiting thread.
        """
        stop = follow(stop)
        self._subscribe()
        self._provide_commands()
        self.bus.on_connection_change = self._on_connection_change
        if self.manager is not None:
            self.manager.attach(self.bus)
        self.bus.start()
        try:
            self.bus.wait_connected(timeout=2.0)
            if self.manager is not None and not self.manager.announce_and_wait(self.bus, stop):
                return
            self._start_console()
            evses = self._discover_evses(stop)
            if evses is None:
                return
            for index, evse in enumerate(evses):
                self.handler.add_evse(evse.id, index, [(c.id, c.type) for c in evse.connectors])
            self.handler.start()
            replayed = self.gate.open()
            for provider in self.providers:
                provider.start(self.accept_token)
            self.ready.set()
            if self.manager is None:  # under the manager, ModuleReady went out before
                self.bus.publish_ready()
            log.info("ready", evses=[e.id for e in evses], replayed_events=replayed,
                     selection=self.station.config.selection_algorithm)
            stop.wait()
        finally:
            self.close()

    def _start_console(self) -> None:
        """Serve the console (if configured); one that cannot listen is logged, not fatal:
        the station keeps authorizing without it."""
        if self.station.console is None:
            return
        from .console.server import Console, ConsoleError

        console = Console(self, self.console_feed, self.station.console)
        try:
            console.start()
        except ConsoleError as exc:
            log.error(str(exc))
            return
        self.console = console

    def close(self) -> None:
        if self.console is not None:
            self.console.stop()
            self.console = None
        for plugin in self._plugins():
            try:
                plugin.close()
            except Exception as exc:
                log.warning("plugin did not close cleanly", plugin=plugin.name, error=repr(exc))
        self.bus.stop()
        self.ports.close()
        if isinstance(self.clock, RealClock):
            self.clock.stop()

    def _discover_evses(self, stop: StopSignal) -> list[Evse] | None:
        """Ask every EVSE manager ``get_evse``, retrying until each one answers."""
        found: list[Evse] = []
        for position, conn in enumerate(self.station.evse_managers, start=1):
            delay, warned = 0.2, False
            while True:
                if stop.is_set():
                    return None
                try:
                    evse = Evse.model_validate(self.bus.call(
                        conn.module_id, conn.implementation_id, "get_evse", {},
                        timeout=self.station.timeouts.command_s, cancel=stop))
                    break
                except CallCancelled:  # SIGTERM at start-up
                    return None
                except (CommandError, CommandTimeout, NotConnected, ValidationError) as exc:
                    if not warned:
                        log.warning("waiting for EVSE manager", evse_manager=conn.module_id,
                                    reason=type(exc).__name__)
                        warned = True
                    stop.wait(delay)
                    delay = min(delay * 2, 5.0)
            if evse.id != position:
                raise StartupError(
                    f"EVSE manager '{conn.module_id}' is entry {position} of "
                    f"connections.evse_manager but answered get_evse with evse id {evse.id}; "
                    f"list the EVSE managers in evse id order")
            found.append(evse)
        return found

    def _on_connection_change(self, connected: bool) -> None:
        if self.manager is not None:
            self.manager.on_connection_change(self.bus, connected)
        elif connected and self.ready.is_set():
            self.bus.publish_ready()  # a broker that restarted has forgotten us

    # --- what comes in ---------------------------------------------------------------------

    def _subscribe(self) -> None:
        for entry in self.station.connections.token_provider:
            if isinstance(entry, BusConnection):
                self.bus.subscribe_var(entry.module_id, entry.implementation_id,
                                       "provided_token", self._on_provided_token)
        for entry in self.station.connections.token_validator:
            if isinstance(entry, BusConnection):
                self.bus.subscribe_var(entry.module_id, entry.implementation_id,
                                       "validate_result_update", self._on_validation_update)
        for evse_id, conn in enumerate(self.station.evse_managers, start=1):
            self.bus.subscribe_var(conn.module_id, conn.implementation_id, "session_event",
                                   self._session_event_handler(evse_id))
            raised, cleared = self._fault_handlers(evse_id)
            self.bus.subscribe_error(conn.module_id, conn.implementation_id,
                                     "evse_manager/Inoperative", on_raised=raised,
                                     on_cleared=cleared)

    def _fault_handlers(self, evse_id: int
                        ) -> tuple[Callable[[dict[str, Any]], None], Callable[[dict[str, Any]], None]]:
        """``evse_manager/Inoperative`` raised / cleared for one EVSE, held back until ready."""
        def raised(_error: dict[str, Any]) -> None:
            self.gate.submit(lambda: self.handler.on_fault_raised(evse_id))
            if self.console_feed is not None:
                self.console_feed.put("changed")

        def cleared(_error: dict[str, Any]) -> None:
            self.gate.submit(lambda: self.handler.on_fault_cleared(evse_id))
            if self.console_feed is not None:
                self.console_feed.put("changed")

        return raised, cleared

    def _on_provided_token(self, value: Any) -> None:
        try:
            token = ProvidedIdToken.model_validate(value)
        except ValidationError as exc:
            log.warning("malformed provided_token dropped", problems=exc.error_count())
            return
        self.accept_token(token)

    def accept_token(self, token: ProvidedIdToken) -> None:
        """Give a token a thread of its own (from the bus or an in-process provider)."""
        remember_token(token.id_token.value)
        if token.parent_id_token is not None:
            remember_token(token.parent_id_token.value)
        if not self.ready.is_set():
            log.warning("token dropped: module not ready yet", token=token.id_token.value)
            return
        if (self.handler.token_count >= self.max_tokens_in_process
                or not self.runner.run_soon(lambda: self.handler.on_token(token))):
            log.error("token refused: too many tokens in process", token=token.id_token.value)
            self.ports.publish_token_validation_status(token, TokenValidationStatus.Rejected, [])

    def _on_validation_update(self, value: Any) -> None:
        if not self.ready.is_set():
            log.warning("validation result update dropped: module not ready yet")
            return
        try:
            update = ValidationResultUpdate.model_validate(value)
        except ValidationError as exc:
            log.warning("malformed validate_result_update dropped", problems=exc.error_count())
            return
        self.handler.on_validation_result_update(update)

    def _session_event_handler(self, evse_id: int) -> Callable[[Any], None]:
        def on_event(value: Any) -> None:
            try:
                event = SessionEvent.model_validate(value)
            except ValidationError as exc:
                log.warning("malformed session_event dropped", evse=evse_id,
                            problems=exc.error_count())
                return
            self.gate.submit(lambda: self.handler.on_session_event(evse_id, event))
            feed = self.console_feed
            if feed is not None:
                feed.put("session", evse_id, event)
        return on_event

    # --- commands we provide ---------------------------------------------------------------

    def _provide_commands(self) -> None:
        h = self.handler
        commands: dict[tuple[str, str, str], Callable[[dict[str, Any]], Any]] = {
            ("main", "auth", "set_connection_timeout"): self._set_connection_timeout,
            ("main", "auth", "set_master_pass_group_id"):
                lambda a: h.set_master_pass_group_id(a["master_pass_group_id"]),
            ("main", "auth", "withdraw_authorization"): self._when_ready(
                lambda a: h.withdraw_authorization(
                    WithdrawAuthorizationRequest.model_validate(a["request"])).value),
            ("reservation", "reservation", "reserve_now"): self._when_ready(
                lambda a: h.reserve_now(Reservation.model_validate(a["request"])).value),
            ("reservation", "reservation", "cancel_reservation"): self._when_ready(
                lambda a: h.cancel_reservation(a["reservation_id"])),
            ("reservation", "reservation", "exists_reservation"): self._when_ready(
                lambda a: h.exists_reservation(ReservationCheck.model_validate(a["request"])).value),
        }
        for (impl, interface, name), handler in commands.items():
            self.bus.provide_command(impl, name, handler,
                                     validate=self.schemas.args_checker(interface, name))

    def _set_connection_timeout(self, args: dict[str, Any]) -> None:
        seconds = args["connection_timeout"]
        if seconds < 1:
            raise ValueError(f"connection_timeout must be >= 1 (got {seconds})")
        self.handler.set_connection_timeout(seconds)

    def _when_ready(self, handler: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
        def guarded(args: dict[str, Any]) -> Any:
            if not self.ready.is_set():
                raise NotReadyError("the auth module is still starting")
            return handler(args)
        return guarded
