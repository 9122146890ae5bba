"""The core's ports (:mod:`auth_module.core.ports`) carried out over the EVerest bus."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from typing import Any

import structlog
from pydantic import ValidationError

from .bus import BusClient, CallOutcome, CommandError, CommandTimeout, NotConnected
from .core.clock import Clock, RealClock
from .core.ports import Runner
from .logs import remember_token
from .plugins.base import TokenValidator
from .station import BusConnection
from .types import (
    AuthorizationStatus,
    ProvidedIdToken,
    ReservationUpdate,
    StopTransactionRequest,
    TokenValidationStatus,
    ValidationResult,
    to_wire,
)

log = structlog.get_logger("ports")

UNKNOWN = AuthorizationStatus.Unknown
Results = list[ValidationResult]


class BusValidator:
    """A validator that is another module on the bus (``validate_token``)."""

    def __init__(self, bus: BusClient, connection: BusConnection, timeout_s: float) -> None:
        self.name = f"{connection.module_id}/{connection.implementation_id}"
        self._bus, self._conn, self._timeout = bus, connection, timeout_s

    def ask(self, token: ProvidedIdToken, on_answer: Callable[[CallOutcome], None]) -> None:
        """Send the request and return; the answer (or its timeout) is handed to
        ``on_answer`` on the thread that receives it (it only records the answer)."""
        self._bus.call_async(self._conn.module_id, self._conn.implementation_id,
                             "validate_token", {"provided_token": to_wire(token)},
                             timeout=self._timeout, on_result=on_answer, inline=True)


class _Round:
    """One token's answers from every validator.

    Each validator answers exactly once: the first of its answer and its time limit wins.
    The answer that completes the round gets every result back, and its deliverer decides
    where the token carries on (:meth:`BusPorts.validate`).
    """

    def __init__(self, count: int) -> None:
        self._results: list[ValidationResult | None] = [None] * count
        self._left = count
        self._lock = threading.Lock()

    def answered(self, index: int) -> bool:
        with self._lock:
            return self._results[index] is not None

    def answer(self, index: int, result: ValidationResult) -> Results | None:
        """Record one answer; every result, in order, if it was the last one, else None."""
        with self._lock:
            if self._results[index] is not None:
                return None
            self._results[index] = result
            self._left -= 1
            if self._left:
                return None
        return [r for r in self._results if r is not None]


class BusPorts:
    """Publishes and calls on behalf of the core. See the rules in ``core/ports.py``."""

    def __init__(
        self,
        bus: BusClient,
        evse_managers: Sequence[BusConnection],
        validators: Sequence[TokenValidator | BusValidator],
        command_timeout_s: float,
        validator_timeout_s: float,
        clock: Clock | None = None,
        runner: Runner | None = None,
    ) -> None:
        self._bus = bus
        # Where a token carries on once its last answer is in: the bus crew by default.
        self._runner: Runner = runner if runner is not None else bus
        self._evses = list(evse_managers)
        self._validators = list(validators)
        self._command_timeout = command_timeout_s
        self._validator_timeout = validator_timeout_s
        self._clock = clock or RealClock()
        self._own_clock = clock is None
        # In-process validators run here, each wait bounded by a timer, so a hanging one
        # costs a pool thread, never a token's final status.
        self._plugin_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="validator")

    def close(self) -> None:
        self._plugin_pool.shutdown(wait=False, cancel_futures=True)
        if self._own_clock and isinstance(self._clock, RealClock):
            self._clock.stop()

    # --- validation -----------------------------------------------------------------------

    def validate(self, token: ProvidedIdToken,
                 on_results: Callable[[list[ValidationResult]], None]) -> None:
        """Ask every validator at once; ``on_results`` gets their answers, on a thread of
        the token's own, when the last is in.

        Answers are kept in station-file order. Each validator is bounded by
        ``validator_timeout_s`` (the bus call's timeout, or a clock timer for a plugin). No
        thread waits meanwhile: the thread that receives the last answer carries the token
        on (the bus reader hands its reading to another crew thread first, see
        ``bus/netloop.py``); a plugin answers on its own pool thread.
        """
        if not self._validators:
            on_results([])
            return
        round_ = _Round(len(self._validators))
        for index, validator in enumerate(self._validators):
            if isinstance(validator, BusValidator):
                self._ask_bus(validator, index, token, round_, on_results)
            else:
                self._ask_plugin(validator, index, token, round_, on_results)

    def _carry_on(self, results: Results | None,
                  on_results: Callable[[Results], None]) -> None:
        """The last answer came from the bus reader or a timer: the token carries on on a
        thread of its own (the runner); a full crew means it runs here rather than not at
        all."""
        if results is not None and not self._runner.run_soon(lambda: on_results(results)):
            on_results(results)

    def _ask_bus(self, validator: BusValidator, index: int, token: ProvidedIdToken,
                 round_: _Round, on_results: Callable[[Results], None]) -> None:
        def on_answer(outcome: CallOutcome) -> None:
            if outcome.error is not None:
                result = self._failed(validator, outcome.error)
            else:
                try:
                    result = self._accepted_answer(ValidationResult.model_validate(outcome.retval))
                except ValidationError as exc:
                    result = self._failed(validator, exc)
            self._carry_on(round_.answer(index, result), on_results)

        validator.ask(token, on_answer)

    def _ask_plugin(self, validator: TokenValidator, index: int, token: ProvidedIdToken,
                    round_: _Round, on_results: Callable[[Results], None]) -> None:
        def run() -> None:
            try:
                result = self._accepted_answer(validator.validate(token))
            except Exception as exc:  # a plugin may raise anything; the token still ends
                result = self._failed(validator, exc)
            timer.cancel()
            done = round_.answer(index, result)
            if done is not None:  # this pool thread is already the token's own
                on_results(done)

        def too_late() -> None:
            if not round_.answered(index):
                self._carry_on(round_.answer(index, self._failed(validator, FutureTimeout())),
                               on_results)

        timer = self._clock.call_later(self._validator_timeout, too_late)
        try:
            self._plugin_pool.submit(run)
        except RuntimeError as exc:  # shutting down
            self._carry_on(round_.answer(index, self._failed(validator, exc)), on_results)

    @staticmethod
    def _accepted_answer(result: ValidationResult) -> ValidationResult:
        if result.parent_id_token is not None:
            remember_token(result.parent_id_token.value)
        return result

    def _failed(self, validator: TokenValidator | BusValidator, exc: BaseException) -> ValidationResult:
        if isinstance(exc, (CommandTimeout, FutureTimeout)):
            reason = f"no answer within {self._validator_timeout:g} s"
        elif isinstance(exc, CommandError):
            reason = f"answered an error ({exc})"
        elif isinstance(exc, NotConnected):
            reason = "the broker is not connected"
        elif isinstance(exc, ValidationError):
            reason = f"answered a malformed result ({exc.error_count()} problems)"
        else:
            reason = f"raised {type(exc).__name__}: {exc}"
        log.warning("validator failed; counting it as Unknown", validator=validator.name,
                    reason=reason)
        return ValidationResult(authorization_status=UNKNOWN)

    # --- publish-and-go ---------------------------------------------------------------------

    def publish_token_validation_status(self, token: ProvidedIdToken,
                                        status: TokenValidationStatus,
                                        messages: list[dict[str, Any]]) -> None:
        self._bus.publish_var("main", "token_validation_status",
                              {"token": to_wire(token), "status": status.value,
                               "messages": messages})

    def publish_reservation_update(self, reservation_id: int, status: ReservationUpdate) -> None:
        self._bus.publish_var("reservation", "reservation_update",
                              {"reservation_id": reservation_id,
                               "reservation_status": status.value})

    def authorize_response(self, evse_index: int, token: ProvidedIdToken,
                           result: ValidationResult) -> None:
        self._call_evse(evse_index, "authorize_response",
                        {"provided_token": to_wire(token), "validation_result": to_wire(result)})

    def withdraw_authorization(self, evse_index: int) -> None:
        self._call_evse(evse_index, "withdraw_authorization", {})

    def stop_transaction(self, evse_index: int, request: StopTransactionRequest) -> None:
        self._call_evse(evse_index, "stop_transaction", {"request": to_wire(request)})

    def cancel_reservation(self, evse_index: int) -> None:
        self._call_evse(evse_index, "cancel_reservation", {})

    def reserve_nowait(self, evse_index: int, reservation_id: int) -> None:
        def check(outcome: Any) -> None:
            if outcome.error is None and outcome.retval is False:
                log.warning("EVSE manager refused a station-wide reservation",
                            evse_manager=self._evses[evse_index].module_id)
        self._call_evse(evse_index, "reserve", {"reservation_id": reservation_id}, check)

    def _call_evse(self, evse_index: int, cmd: str, args: dict[str, Any],
                   on_result: Any = None) -> None:
        conn = self._evses[evse_index]
        # call_async never raises NotConnected: a call that cannot go out ends through
        # on_result (or is logged in one line when there is none).
        self._bus.call_async(conn.module_id, conn.implementation_id, cmd, args,
                             timeout=self._command_timeout, on_result=on_result)

    # --- blocking ---------------------------------------------------------------------------

    def reserve(self, evse_index: int, reservation_id: int) -> bool:
        conn = self._evses[evse_index]
        try:
            return self._bus.call(conn.module_id, conn.implementation_id, "reserve",
                                  {"reservation_id": reservation_id},
                                  timeout=self._command_timeout) is True
        except (CommandError, CommandTimeout, NotConnected) as exc:
            log.warning("EVSE manager did not confirm the reservation", evse_manager=conn.module_id,
                        reason=type(exc).__name__)
            return False
