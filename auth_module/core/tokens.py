"""A token in flight: its outcomes, its life as a state machine (one table), its record."""

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
    USED_TO_REAUTHORIZE = "USED_TO_REAUTHORIZE"  # matched a running transaction, left it running
    PENDING = "PENDING"  # accepted, waiting for a car to be plugged in; the final status follows
    VALIDATING = "VALIDATING"  # the validators are still being asked; the final status follows


FINAL_STATUS: dict[TokenOutcome, TokenValidationStatus] = {
    TokenOutcome.TIMEOUT: TokenValidationStatus.TimedOut,
    TokenOutcome.NO_CONNECTOR_AVAILABLE: TokenValidationStatus.Rejected,
    TokenOutcome.REJECTED: TokenValidationStatus.Rejected,
    TokenOutcome.USED_TO_START_TRANSACTION: TokenValidationStatus.UsedToStart,
    TokenOutcome.USED_TO_STOP_TRANSACTION: TokenValidationStatus.UsedToStop,
    TokenOutcome.WITHDRAWN: TokenValidationStatus.Withdrawn,
    TokenOutcome.USED_TO_REAUTHORIZE: TokenValidationStatus.UsedToReauthorize,
}


def token_key(token: ProvidedIdToken) -> str:
    """The identity of a token in flight: its value, case folded."""
    return token.id_token.value.casefold()


class TokenState(StrEnum):
    """Where a presented token is in its life. Changed only through :meth:`TokenRequest.move`,
    under the core's lock; the legal moves are :data:`TOKEN_TRANSITIONS`."""

    RECEIVED = "received"  # in process; nothing published for it yet
    RECEIVED_WITHDRAWN = "received_withdrawn"  # withdrawn before its Processing status went out
    PROCESSING = "processing"  # Processing is out: being validated, or its results worked on
    WITHDRAWN = "withdrawn"  # withdrawn while validated: an accepted result ends it Withdrawn
    WAITING_FOR_CAR = "waiting_for_car"  # accepted; parked until a car is plugged in
    FINISHED = "finished"  # its final status is out; ``outcome`` says which


class TokenEvent(StrEnum):
    ANNOUNCE = "announce"  # its Processing status is published
    WITHDRAW = "withdraw"  # a withdraw_authorization named it
    PARK = "park"  # an accepted result needs a car first
    CAR_ARRIVED = "car_arrived"  # a plug-in woke it: its results are worked on again
    FINISH = "finish"  # its final status is published


_S, _E = TokenState, TokenEvent
TOKEN_TRANSITIONS: dict[tuple[TokenState, TokenEvent], TokenState] = {
    (_S.RECEIVED, _E.ANNOUNCE): _S.PROCESSING,
    (_S.RECEIVED, _E.WITHDRAW): _S.RECEIVED_WITHDRAWN,
    (_S.RECEIVED_WITHDRAWN, _E.ANNOUNCE): _S.WITHDRAWN,
    (_S.RECEIVED_WITHDRAWN, _E.WITHDRAW): _S.RECEIVED_WITHDRAWN,
    (_S.PROCESSING, _E.WITHDRAW): _S.WITHDRAWN,
    (_S.PROCESSING, _E.PARK): _S.WAITING_FOR_CAR,
    (_S.PROCESSING, _E.FINISH): _S.FINISHED,
    (_S.WITHDRAWN, _E.WITHDRAW): _S.WITHDRAWN,
    (_S.WITHDRAWN, _E.FINISH): _S.FINISHED,
    (_S.WAITING_FOR_CAR, _E.CAR_ARRIVED): _S.PROCESSING,
    (_S.WAITING_FOR_CAR, _E.FINISH): _S.FINISHED,  # timed out, or withdrawn while waiting
}
"""The one table of a token's legal moves. A move not in it is a bug and raises.

A token is finished only after its Processing status is out (``_finish`` announces
first), so RECEIVED never finishes directly; a withdrawn token is never parked (its first
accepted result ends it)."""

UNANNOUNCED = frozenset({_S.RECEIVED, _S.RECEIVED_WITHDRAWN})
WITHDRAWN = frozenset({_S.RECEIVED_WITHDRAWN, _S.WITHDRAWN})


@dataclass(eq=False, slots=True)
class TokenRequest:
    """One presented token, from ``Processing`` to its final status.

    ``token`` is the working copy that gains ``parent_id_token`` and ``connectors`` on the
    way, exactly as the statuses published for it should show. ``results`` and ``index``
    are the cursor over its validation results, kept while it waits for a car.
    """

    token: ProvidedIdToken
    referenced: list[int]  # the EVSEs it may use, fixed when it arrived
    key: str = ""
    state: TokenState = TokenState.RECEIVED
    candidates: list[int] = field(default_factory=list)  # of those, the ones free to select
    results: list[ValidationResult] = field(default_factory=list)
    index: int = 0  # the validation result being worked on
    current: ValidationResult = field(
        default_factory=lambda: ValidationResult(authorization_status=AuthorizationStatus.Unknown)
    )
    waiting_for: list[int] | None = None  # while WAITING_FOR_CAR: the EVSEs it may take
    wait_timer: TimerHandle | None = None
    outcome: TokenOutcome | None = None  # once FINISHED

    def __post_init__(self) -> None:
        self.key = token_key(self.token)

    def move(self, event: TokenEvent) -> None:
        """Take the transition ``event`` leads to from the current state."""
        try:
            self.state = TOKEN_TRANSITIONS[(self.state, event)]
        except KeyError:
            raise RuntimeError(f"token cannot {event.value} while {self.state.value}") from None


def withdraw_matches(
    request: WithdrawAuthorizationRequest, evse_ids: list[int], id_token: IdToken
) -> bool:
    """Whether ``request`` targets a token with ``id_token`` that may use ``evse_ids``."""
    token_ok = request.id_token is None or same_token(request.id_token.value, id_token.value)
    evse_ok = request.evse_id is None or request.evse_id in evse_ids
    return token_ok and evse_ok
