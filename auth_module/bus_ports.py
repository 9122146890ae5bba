"""The core's ports (:mod:`auth_module.core.ports`) carried out over the EVerest bus."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from typing import Any

import structlog
from pydantic import ValidationError

from .bus import BusClient, CommandError, CommandTimeout, NotConnected
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


class BusValidator:
    """A validator that is another module on the bus (``validate_token``)."""

    def __init__(self, bus: BusClient, connection: BusConnection, timeout_s: float) -> None:
        self.name = f"{connection.module_id}/{connection.implementation_id}"
        self._bus, self._conn, self._timeout = bus, connection, timeout_s

    def validate(self, token: ProvidedIdToken) -> ValidationResult:
        retval = self._bus.call(self._conn.module_id, self._conn.implementation_id,
                                "validate_token", {"provided_token": to_wire(token)},
                                timeout=self._timeout)
        return ValidationResult.model_validate(retval)

    def close(self) -> None:
        pass


class BusPorts:
    """Publishes and calls on behalf of the core. See the rules in ``core/ports.py``."""

    def __init__(
        self,
        bus: BusClient,
        evse_managers: Sequence[BusConnection],
        validators: Sequence[TokenValidator],
        command_timeout_s: float,
        validator_timeout_s: float,
    ) -> None:
        self._bus = bus
        self._evses = list(evse_managers)
        self._validators = list(validators)
        self._command_timeout = command_timeout_s
        self._validator_timeout = validator_timeout_s
        # In-process validators run here so a hanging one costs a bounded wait, not a thread
        # of the caller forever; bus validators block only on their own reply.
        self._plugin_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="validator")

    def close(self) -> None:
        self._plugin_pool.shutdown(wait=False, cancel_futures=True)

    # --- validation -----------------------------------------------------------------------

    def validate(self, token: ProvidedIdToken) -> list[ValidationResult]:
        return [self._ask(validator, token) for validator in self._validators]

    def _ask(self, validator: TokenValidator, token: ProvidedIdToken) -> ValidationResult:
        try:
            if isinstance(validator, BusValidator):
                result = validator.validate(token)
            else:
                future = self._plugin_pool.submit(validator.validate, token)
                result = future.result(timeout=self._validator_timeout)
            if result.parent_id_token is not None:
                remember_token(result.parent_id_token.value)
            return result
        except (CommandTimeout, FutureTimeout):
            reason = f"no answer within {self._validator_timeout:g} s"
        except CommandError as exc:
            reason = f"answered an error ({exc})"
        except NotConnected:
            reason = "the broker is not connected"
        except ValidationError as exc:
            reason = f"answered a malformed result ({exc.error_count()} problems)"
        except Exception as exc:  # a plugin may raise anything; the token still gets an answer
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
        try:
            self._bus.call_async(conn.module_id, conn.implementation_id, cmd, args,
                                 timeout=self._command_timeout, on_result=on_result)
        except NotConnected:
            log.error("could not reach EVSE manager: broker not connected",
                      evse_manager=conn.module_id, command=cmd)

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
