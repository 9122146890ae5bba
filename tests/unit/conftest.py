"""A small fixture kit for driving the pure core (``auth_module.core``) without MQTT.

Mirrors the fixture of EVerest's ``modules/EVSE/Auth/tests/auth_tests.cpp``:

* two validators: the first always answers Invalid; the second answers Accepted for
  VALID_RFID_1 / VALID_RFID_3 (parent PARENT_RFID) and VALID_RFID_2 (no parent), Invalid
  for anything else (token values compared case-insensitively);
* EVSE 1 (index 0) with one cCCS2 connector, EVSE 2 (index 1) with sType2 + cCCS2;
* PlugEvents, connection_timeout 1 s, plug-in timeout enabled, prioritize false.

``RecordingPorts`` records every call the core makes and keeps a per-EVSE-index
"authorized" flag the way EVerest's ``FakeAuthReceiver`` does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

import pytest

from auth_module.core.clock import FakeClock
from auth_module.core.handler import AuthHandler, AuthSettings
from auth_module.types import (
    AuthorizationStatus,
    AuthorizationType,
    ConnectorTypeEnum,
    IdToken,
    IdTokenType,
    ProvidedIdToken,
    Reservation,
    ReservationUpdate,
    SelectionAlgorithm,
    SessionEvent,
    SessionEventEnum,
    SessionStarted,
    StartSessionReason,
    StopTransactionRequest,
    TokenValidationStatus,
    TransactionFinished,
    TransactionStarted,
    ValidationResult,
    to_wire,
)

VALID_TOKEN_1 = "VALID_RFID_1"  # same parent id as VALID_TOKEN_3
VALID_TOKEN_2 = "VALID_RFID_2"  # no parent id
VALID_TOKEN_3 = "VALID_RFID_3"  # same parent id as VALID_TOKEN_1
INVALID_TOKEN = "INVALID_RFID"
PARENT_ID_TOKEN = "PARENT_RFID"
CONNECTION_TIMEOUT = 1

FINAL_STATUSES = frozenset({
    TokenValidationStatus.Rejected,
    TokenValidationStatus.TimedOut,
    TokenValidationStatus.UsedToStart,
    TokenValidationStatus.UsedToStop,
    TokenValidationStatus.UsedToReauthorize,
    TokenValidationStatus.Withdrawn,
})

Validate = Callable[[ProvidedIdToken], list[ValidationResult]]


# --- builders ------------------------------------------------------------------------------


def id_token(value: str, type_: IdTokenType = IdTokenType.ISO14443) -> IdToken:
    return IdToken(value=value, type=type_)


def make_token(
    value: str,
    connectors: Sequence[int] | None = None,
    prevalidated: bool | None = None,
    *,
    auth_type: AuthorizationType = AuthorizationType.RFID,
    id_type: IdTokenType = IdTokenType.ISO14443,
    parent: str | None = None,
    certificate: str | None = None,
) -> ProvidedIdToken:
    """EVerest's ``get_provided_token``: an RFID ISO14443 token by default."""
    return ProvidedIdToken(
        id_token=id_token(value, id_type),
        authorization_type=auth_type,
        connectors=list(connectors) if connectors is not None else None,
        prevalidated=prevalidated,
        parent_id_token=id_token(parent) if parent is not None else None,
        certificate=certificate,
    )


def pnc_token(value: str, connectors: Sequence[int] | None = None) -> ProvidedIdToken:
    """A Plug&Charge token (eMAID, with a certificate) as in the PnC scenarios."""
    return make_token(value, connectors, auth_type=AuthorizationType.PlugAndCharge,
                      id_type=IdTokenType.eMAID, certificate="TestCertificate")


def accepted(parent: str | None = None, evse_ids: Sequence[int] | None = None,
             **extra: Any) -> ValidationResult:
    return ValidationResult(
        authorization_status=AuthorizationStatus.Accepted,
        parent_id_token=id_token(parent) if parent is not None else None,
        evse_ids=list(evse_ids) if evse_ids is not None else None,
        **extra,
    )


def invalid() -> ValidationResult:
    return ValidationResult(authorization_status=AuthorizationStatus.Invalid)


def default_validate(token: ProvidedIdToken) -> list[ValidationResult]:
    """The fixture's two validators: the first always Invalid, the second knows three cards."""
    value = token.id_token.value.casefold()
    if value in (VALID_TOKEN_1.casefold(), VALID_TOKEN_3.casefold()):
        second = accepted(PARENT_ID_TOKEN)
    elif value == VALID_TOKEN_2.casefold():
        second = accepted()
    else:
        second = invalid()
    return [invalid(), second]


def session_started(reason: StartSessionReason = StartSessionReason.EVConnected,
                    connector_id: int | None = None) -> SessionEvent:
    """SessionStarted; EVConnected by default (a car was plugged in)."""
    return SessionEvent(event=SessionEventEnum.SessionStarted, connector_id=connector_id,
                        session_started=SessionStarted(reason=reason))


def transaction_started(token: ProvidedIdToken, connector_id: int | None = None) -> SessionEvent:
    return SessionEvent(event=SessionEventEnum.TransactionStarted, connector_id=connector_id,
                        transaction_started=TransactionStarted(id_tag=token))


def transaction_finished(token: ProvidedIdToken | None = None,
                         connector_id: int | None = None) -> SessionEvent:
    return SessionEvent(
        event=SessionEventEnum.TransactionFinished, connector_id=connector_id,
        transaction_finished=TransactionFinished(
            meter_value={"energy_Wh_import": {"total": 1000}}, id_tag=token),
    )


def session_finished(connector_id: int | None = None) -> SessionEvent:
    return SessionEvent(event=SessionEventEnum.SessionFinished, connector_id=connector_id)


def simple_event(kind: SessionEventEnum, connector_id: int | None = None) -> SessionEvent:
    return SessionEvent(event=kind, connector_id=connector_id)


def enabled(connector_id: int | None = None) -> SessionEvent:
    return simple_event(SessionEventEnum.Enabled, connector_id)


def disabled(connector_id: int | None = None) -> SessionEvent:
    return simple_event(SessionEventEnum.Disabled, connector_id)


def deauthorized() -> SessionEvent:
    return simple_event(SessionEventEnum.Deauthorized)


def reservation(clock: FakeClock, reservation_id: int, token: str, *,
                evse_id: int | None = None, parent: str | None = None,
                connector_type: ConnectorTypeEnum | None = None,
                expires_in: timedelta = timedelta(hours=1)) -> Reservation:
    """A reservation expiring ``expires_in`` after the fake clock's wall time."""
    return Reservation(
        reservation_id=reservation_id,
        id_token=token,
        expiry_time=(clock.utcnow() + expires_in).isoformat(),
        evse_id=evse_id,
        parent_id_token=parent,
        connector_type=connector_type,
    )


# --- the recording ports ---------------------------------------------------------------------


class RecordingPorts:
    """A StationPorts that records every call, in order, and tracks authorization per index.

    ``calls`` holds ``(name, *args)`` tuples for every call; ``statuses`` holds
    ``(id_token value, status, token dict)`` for every published token validation status.
    ``validate_fn`` is the replaceable validator chain (default: the fixture's two).
    """

    def __init__(self, evse_indices: Iterable[int] = (0, 1),
                 validate_fn: Validate = default_validate) -> None:
        self._lock = threading.Lock()
        self.validate_fn: Validate = validate_fn
        self.reserve_result = True
        self.calls: list[tuple[Any, ...]] = []
        self.statuses: list[tuple[str, TokenValidationStatus, dict[str, Any]]] = []
        self.validated: list[ProvidedIdToken] = []
        self.authorized: dict[int, bool] = {i: False for i in evse_indices}

    # FakeAuthReceiver
    def add_evse_index(self, index: int) -> None:
        self.authorized[index] = False

    def is_authorized(self, index: int) -> bool:
        return self.authorized.get(index, False)

    def reset(self) -> None:
        for index in self.authorized:
            self.authorized[index] = False

    def _record(self, *call: Any) -> None:
        with self._lock:
            self.calls.append(call)

    # StationPorts
    def validate(self, token: ProvidedIdToken,
                 on_results: Callable[[list[ValidationResult]], None]) -> None:
        self._record("validate", token.id_token.value)
        with self._lock:
            self.validated.append(token)
        on_results(self.validate_fn(token))

    def publish_token_validation_status(self, token: ProvidedIdToken,
                                        status: TokenValidationStatus,
                                        messages: list[dict[str, Any]]) -> None:
        with self._lock:
            self.statuses.append((token.id_token.value, status, to_wire(token)))
            self.calls.append(("status", token.id_token.value, status))

    def authorize_response(self, evse_index: int, token: ProvidedIdToken,
                           result: ValidationResult) -> None:
        with self._lock:
            self.calls.append(("authorize_response", evse_index, token, result))
            self.authorized[evse_index] = (
                result.authorization_status == AuthorizationStatus.Accepted)

    def withdraw_authorization(self, evse_index: int) -> None:
        with self._lock:
            self.calls.append(("withdraw_authorization", evse_index))
            self.authorized[evse_index] = False

    def stop_transaction(self, evse_index: int, request: StopTransactionRequest) -> None:
        with self._lock:
            self.calls.append(("stop_transaction", evse_index, request))
            self.authorized[evse_index] = False

    def reserve(self, evse_index: int, reservation_id: int) -> bool:
        self._record("reserve", evse_index, reservation_id)
        return self.reserve_result

    def reserve_nowait(self, evse_index: int, reservation_id: int) -> None:
        self._record("reserve_nowait", evse_index, reservation_id)

    def cancel_reservation(self, evse_index: int) -> None:
        self._record("cancel_reservation", evse_index)

    def publish_reservation_update(self, reservation_id: int, status: ReservationUpdate) -> None:
        self._record("reservation_update", reservation_id, status)

    # queries
    def calls_named(self, name: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return [c for c in self.calls if c[0] == name]

    def statuses_of(self, value: str) -> list[TokenValidationStatus]:
        """Every status published for exactly this token value (case-sensitive), in order."""
        with self._lock:
            return [s for v, s, _ in self.statuses if v == value]

    def tokens_of(self, value: str, status: TokenValidationStatus) -> list[dict[str, Any]]:
        with self._lock:
            return [t for v, s, t in self.statuses if v == value and s == status]

    def final_status(self, value: str) -> TokenValidationStatus | None:
        """The last status published for ``value`` if it is a final one, else None."""
        statuses = self.statuses_of(value)
        return statuses[-1] if statuses and statuses[-1] in FINAL_STATUSES else None

    @property
    def withdrawn(self) -> list[int]:
        return [c[1] for c in self.calls_named("withdraw_authorization")]

    @property
    def stops(self) -> list[tuple[int, StopTransactionRequest]]:
        return [(c[1], c[2]) for c in self.calls_named("stop_transaction")]

    @property
    def authorize_responses(self) -> list[tuple[int, ProvidedIdToken, ValidationResult]]:
        return [(c[1], c[2], c[3]) for c in self.calls_named("authorize_response")]


# --- fixtures ----------------------------------------------------------------------------------


def everest_settings(**overrides: Any) -> AuthSettings:
    """The settings of EVerest's AuthTest fixture."""
    values: dict[str, Any] = dict(
        selection_algorithm=SelectionAlgorithm.PlugEvents,
        connection_timeout=CONNECTION_TIMEOUT,
        plug_in_timeout_enabled=True,
        prioritize_authorization_over_stopping_transaction=False,
        ignore_connector_faults=False,
        master_pass_group_id=None,
    )
    values.update(overrides)
    return AuthSettings(**values)


FIXTURE_EVSES: list[tuple[int, int, list[tuple[int, ConnectorTypeEnum]]]] = [
    (1, 0, [(1, ConnectorTypeEnum.cCCS2)]),
    (2, 1, [(1, ConnectorTypeEnum.sType2), (2, ConnectorTypeEnum.cCCS2)]),
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ports() -> RecordingPorts:
    return RecordingPorts()


MakeAuth = Callable[..., AuthHandler]


@pytest.fixture
def make_auth(clock: FakeClock, ports: RecordingPorts) -> MakeAuth:
    """Build an AuthHandler on the shared clock and ports; EVerest's fixture by default."""

    def build(settings: AuthSettings | None = None,
              evses: Sequence[tuple[int, int, Sequence[tuple[int, ConnectorTypeEnum | None]]]]
              | None = None) -> AuthHandler:
        handler = AuthHandler(settings or everest_settings(), clock, ports, store=None)
        for evse_id, index, connectors in (FIXTURE_EVSES if evses is None else evses):
            handler.add_evse(evse_id, index, connectors)
            ports.add_evse_index(index)
        handler.start()
        return handler

    return build


@pytest.fixture
def auth(make_auth: MakeAuth) -> AuthHandler:
    """AuthHandler with EVerest's AuthTest settings and EVSEs 1 and 2."""
    return make_auth()
