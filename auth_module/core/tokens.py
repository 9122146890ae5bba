"""A token's journey, as data: its outcome values and the record of one request in flight."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ..types import (
    AuthorizationStatus,
    IdToken,
    ProvidedIdToken,
    TokenValidationStatus,
    ValidationResult,
    WithdrawAuthorizationRequest,
    same_token,
)
from .clock import TimerHandle


class TokenOutcome(StrEnum):
    """How the handling of one presented token ended (EVerest's TokenHandlingResult)."""

    ALREADY_IN_PROCESS = "ALREADY_IN_PROCESS"
    REJECTED = "REJECTED"
    USED_TO_START_TRANSACTION = "USED_TO_START_TRANSACTION"
    USED_TO_STOP_TRANSACTION = "USED_TO_STOP_TRANSACTION"
    TIMEOUT = "TIMEOUT"
    NO_CONNECTOR_AVAILABLE = "NO_CONNECTOR_AVAILABLE"
    WITHDRAWN = "WITHDRAWN"
    PENDING = "PENDING"  # accepted, waiting for a car to be plugged in; the final status follows
    VALIDATING = "VALIDATING"  # the validators are still being asked; the final status follows


FINAL_STATUS: dict[TokenOutcome, TokenValidationStatus] = {
    TokenOutcome.TIMEOUT: TokenValidationStatus.TimedOut,
    TokenOutcome.NO_CONNECTOR_AVAILABLE: TokenValidationStatus.Rejected,
    TokenOutcome.REJECTED: TokenValidationStatus.Rejected,
    TokenOutcome.USED_TO_START_TRANSACTION: TokenValidationStatus.UsedToStart,
    TokenOutcome.USED_TO_STOP_TRANSACTION: TokenValidationStatus.UsedToStop,
    TokenOutcome.WITHDRAWN: TokenValidationStatus.Withdrawn,
}


def token_key(token: ProvidedIdToken) -> str:
    """The identity of a token in flight: its value, case folded."""
    return token.id_token.value.casefold()


@dataclass(eq=False)
class TokenRequest:
    """One presented token, from ``Processing`` to its final status.

    ``token`` is the working copy that gains ``parent_id_token`` and ``connectors`` on the
    way, exactly as the statuses published for it should show.
    """

    token: ProvidedIdToken
    referenced: list[int]  # the EVSEs it may use, fixed when it arrived
    candidates: list[int] = field(default_factory=list)  # of those, the ones free to select
    results: list[ValidationResult] = field(default_factory=list)
    index: int = 0  # the validation result being worked on
    current: ValidationResult = field(
        default_factory=lambda: ValidationResult(authorization_status=AuthorizationStatus.Unknown)
    )
    authorized: bool = False
    withdrawn: bool = False  # withdrawn while its validators were asked: ends at selection
    announced: bool = False  # its Processing status is out
    waiting_for: list[int] | None = None  # parked for a plug-in among these EVSEs
    wait_timer: TimerHandle | None = None
    outcome: TokenOutcome | None = None

    @property
    def key(self) -> str:
        return token_key(self.token)


def withdraw_matches(
    request: WithdrawAuthorizationRequest, evse_ids: list[int], id_token: IdToken
) -> bool:
    """Whether ``request`` targets a token with ``id_token`` that may use ``evse_ids``."""
    token_ok = request.id_token is None or same_token(request.id_token.value, id_token.value)
    evse_ok = request.evse_id is None or request.evse_id in evse_ids
    return token_ok and evse_ok
