"""The payload types of the contract, as pydantic models. GENERATED: do not edit.

Written by ``scripts/gen_types.py`` from ``interfaces/types/*.yaml``, the one place a field
is written (field names follow EVerest's types letter for letter: other EVerest modules read
what we publish). ``tests/unit/test_types_match_interfaces.py`` checks the result against
the YAML, and ``python scripts/gen_types.py --check`` that this file is current.

Models ignore unknown fields when parsing (other modules may be newer than we are) but the
ones we forward verbatim (``ProvidedIdToken``) keep them, so a token is handed on whole.
Serialise with :func:`to_wire`, which drops ``None`` so optional fields are absent, not null.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from .typebase import Model, PassThrough, same_token, to_wire

__all__ = [
    "AuthorizationStatus",
    "AuthorizationType",
    "CertificateStatus",
    "ConnectorTypeEnum",
    "CustomIdToken",
    "Evse",
    "EvseConnector",
    "IdToken",
    "IdTokenType",
    "ProvidedIdToken",
    "Reservation",
    "ReservationCheck",
    "ReservationCheckStatus",
    "ReservationEndReason",
    "ReservationResult",
    "ReservationUpdate",
    "ReservationUpdateStatus",
    "SelectionAlgorithm",
    "SessionEvent",
    "SessionEventEnum",
    "SessionStarted",
    "StartSessionReason",
    "StopTransactionReason",
    "StopTransactionRequest",
    "TokenValidationStatus",
    "TokenValidationStatusMessage",
    "TransactionFinished",
    "TransactionStarted",
    "ValidationResult",
    "ValidationResultUpdate",
    "WithdrawAuthorizationRequest",
    "WithdrawAuthorizationResult",
    "same_token",
    "to_wire",
]


# --- authorization ------------------------------------------------------------------------


class AuthorizationStatus(StrEnum):
    Accepted = "Accepted"
    Blocked = "Blocked"
    ConcurrentTx = "ConcurrentTx"
    Expired = "Expired"
    Invalid = "Invalid"
    NoCredit = "NoCredit"
    NotAllowedTypeEVSE = "NotAllowedTypeEVSE"
    NotAtThisLocation = "NotAtThisLocation"
    NotAtThisTime = "NotAtThisTime"
    Unknown = "Unknown"
    PinRequired = "PinRequired"
    Timeout = "Timeout"


class CertificateStatus(StrEnum):
    Accepted = "Accepted"
    SignatureError = "SignatureError"
    CertificateExpired = "CertificateExpired"
    CertificateRevoked = "CertificateRevoked"
    NoCertificateAvailable = "NoCertificateAvailable"
    CertChainError = "CertChainError"
    ContractCancelled = "ContractCancelled"


class TokenValidationStatus(StrEnum):
    Processing = "Processing"
    Accepted = "Accepted"
    Rejected = "Rejected"
    TimedOut = "TimedOut"
    UsedToStart = "UsedToStart"
    UsedToStop = "UsedToStop"
    Withdrawn = "Withdrawn"
    UsedToReauthorize = "UsedToReauthorize"


class AuthorizationType(StrEnum):
    OCPP = "OCPP"
    RFID = "RFID"
    Autocharge = "Autocharge"
    PlugAndCharge = "PlugAndCharge"
    BankCard = "BankCard"


class IdTokenType(StrEnum):
    Central = "Central"
    eMAID = "eMAID"
    MacAddress = "MacAddress"
    ISO14443 = "ISO14443"
    ISO15693 = "ISO15693"
    KeyCode = "KeyCode"
    Local = "Local"
    NoAuthorization = "NoAuthorization"


class SelectionAlgorithm(StrEnum):
    UserInput = "UserInput"
    PlugEvents = "PlugEvents"
    PlugEventsLIFO = "PlugEventsLIFO"
    FindFirst = "FindFirst"


class CustomIdToken(Model):
    value: str = Field(max_length=36)
    type: str = Field(max_length=50)


class IdToken(Model):
    value: str = Field(max_length=36)
    type: IdTokenType
    additional_info: list[CustomIdToken] | None = None


class ProvidedIdToken(PassThrough):
    id_token: IdToken
    authorization_type: AuthorizationType
    request_id: int | None = None
    parent_id_token: IdToken | None = None
    connectors: list[int] | None = None
    prevalidated: bool | None = None
    certificate: str | None = None
    iso15118CertificateHashData: list[dict[str, Any]] | None = None


class ValidationResult(PassThrough):
    authorization_status: AuthorizationStatus
    tariff_messages: list[dict[str, Any]] = Field(default_factory=list)
    certificate_status: CertificateStatus | None = None
    expiry_time: str | None = None
    parent_id_token: IdToken | None = None
    evse_ids: list[int] | None = None
    reservation_id: int | None = None
    allowed_energy_transfer_modes: list[str] | None = None


class ValidationResultUpdate(Model):
    validation_result: ValidationResult
    connector_id: int


class TokenValidationStatusMessage(Model):
    token: ProvidedIdToken
    status: TokenValidationStatus
    messages: list[dict[str, Any]] | None = None


class WithdrawAuthorizationRequest(Model):
    evse_id: int | None = None
    id_token: IdToken | None = None


class WithdrawAuthorizationResult(StrEnum):
    Accepted = "Accepted"
    AuthorizationNotFound = "AuthorizationNotFound"
    EvseNotFound = "EvseNotFound"
    Rejected = "Rejected"


# --- evse manager -------------------------------------------------------------------------


class ConnectorTypeEnum(StrEnum):
    cCCS1 = "cCCS1"
    cCCS2 = "cCCS2"
    cG105 = "cG105"
    cMCS = "cMCS"
    cTesla = "cTesla"
    cType1 = "cType1"
    cType2 = "cType2"
    s309_1P_16A = "s309_1P_16A"
    s309_1P_32A = "s309_1P_32A"
    s309_3P_16A = "s309_3P_16A"
    s309_3P_32A = "s309_3P_32A"
    sBS1361 = "sBS1361"
    sCEE_7_7 = "sCEE_7_7"
    sType2 = "sType2"
    sType3 = "sType3"
    Other1PhMax16A = "Other1PhMax16A"
    Other1PhOver16A = "Other1PhOver16A"
    Other3Ph = "Other3Ph"
    Pan = "Pan"
    wInductive = "wInductive"
    wResonant = "wResonant"
    Undetermined = "Undetermined"
    Unknown = "Unknown"


class EvseConnector(Model):
    id: int
    type: ConnectorTypeEnum | None = None


class Evse(Model):
    id: int
    connectors: list[EvseConnector]


class StopTransactionReason(StrEnum):
    EmergencyStop = "EmergencyStop"
    EVDisconnected = "EVDisconnected"
    HardReset = "HardReset"
    Local = "Local"
    Other = "Other"
    PowerLoss = "PowerLoss"
    Reboot = "Reboot"
    Remote = "Remote"
    SoftReset = "SoftReset"
    UnlockCommand = "UnlockCommand"
    DeAuthorized = "DeAuthorized"
    EnergyLimitReached = "EnergyLimitReached"
    GroundFault = "GroundFault"
    LocalOutOfCredit = "LocalOutOfCredit"
    MasterPass = "MasterPass"
    OvercurrentFault = "OvercurrentFault"
    PowerQuality = "PowerQuality"
    SOCLimitReached = "SOCLimitReached"
    StoppedByEV = "StoppedByEV"
    TimeLimitReached = "TimeLimitReached"
    Timeout = "Timeout"
    ReqEnergyTransferRejected = "ReqEnergyTransferRejected"
    EVSEDisabled = "EVSEDisabled"


class StopTransactionRequest(Model):
    reason: StopTransactionReason
    id_tag: ProvidedIdToken | None = None


class StartSessionReason(StrEnum):
    EVConnected = "EVConnected"
    Authorized = "Authorized"


class SessionEventEnum(StrEnum):
    Authorized = "Authorized"
    Deauthorized = "Deauthorized"
    Enabled = "Enabled"
    Disabled = "Disabled"
    SessionStarted = "SessionStarted"
    AuthRequired = "AuthRequired"
    TransactionStarted = "TransactionStarted"
    PrepareCharging = "PrepareCharging"
    ChargingStarted = "ChargingStarted"
    ChargingPausedEV = "ChargingPausedEV"
    ChargingPausedEVSE = "ChargingPausedEVSE"
    StoppingCharging = "StoppingCharging"
    ChargingFinished = "ChargingFinished"
    TransactionFinished = "TransactionFinished"
    SessionFinished = "SessionFinished"
    ReservationStart = "ReservationStart"
    ReservationEnd = "ReservationEnd"
    PluginTimeout = "PluginTimeout"
    SwitchingPhases = "SwitchingPhases"
    SessionResumed = "SessionResumed"


class SessionStarted(PassThrough):
    reason: StartSessionReason
    meter_value: dict[str, Any] = Field(default_factory=lambda: {"energy_Wh_import": {"total": 0}})
    id_tag: ProvidedIdToken | None = None
    reservation_id: int | None = None


class TransactionStarted(PassThrough):
    id_tag: ProvidedIdToken
    meter_value: dict[str, Any] = Field(default_factory=lambda: {"energy_Wh_import": {"total": 0}})
    reservation_id: int | None = None


class TransactionFinished(PassThrough):
    meter_value: dict[str, Any] = Field(default_factory=lambda: {"energy_Wh_import": {"total": 0}})
    reason: StopTransactionReason | None = None
    id_tag: ProvidedIdToken | None = None


class SessionEvent(PassThrough):
    uuid: str = ""
    event: SessionEventEnum
    timestamp: str = ""
    connector_id: int | None = None
    session_started: SessionStarted | None = None
    transaction_started: TransactionStarted | None = None
    transaction_finished: TransactionFinished | None = None


# --- reservation --------------------------------------------------------------------------


class ReservationResult(StrEnum):
    Accepted = "Accepted"
    Faulted = "Faulted"
    Occupied = "Occupied"
    Rejected = "Rejected"
    Unavailable = "Unavailable"


class Reservation(Model):
    reservation_id: int
    id_token: str
    expiry_time: str
    evse_id: int | None = None
    parent_id_token: str | None = None
    connector_type: ConnectorTypeEnum | None = None


class ReservationEndReason(StrEnum):
    Expired = "Expired"
    Cancelled = "Cancelled"
    UsedToStartCharging = "UsedToStartCharging"
    GlobalReservationRequirementDropped = "GlobalReservationRequirementDropped"


class ReservationCheckStatus(StrEnum):
    NotReserved = "NotReserved"
    ReservedForToken = "ReservedForToken"
    ReservedForOtherToken = "ReservedForOtherToken"
    ReservedForOtherTokenAndHasParentToken = "ReservedForOtherTokenAndHasParentToken"


class ReservationCheck(Model):
    id_token: str
    evse_id: int | None = None
    group_id_token: str | None = None


class ReservationUpdate(StrEnum):
    Expired = "Expired"
    Removed = "Removed"
    Placed = "Placed"
    Cancelled = "Cancelled"
    Used = "Used"


class ReservationUpdateStatus(Model):
    reservation_id: int
    reservation_status: ReservationUpdate
