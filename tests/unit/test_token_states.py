"""The token's life as a state machine: one table of legal moves, and anything else refused."""

from __future__ import annotations

import pytest

from auth_module.core.tokens import (
    TOKEN_TRANSITIONS,
    TokenEvent,
    TokenRequest,
    TokenState,
)
from auth_module.types import AuthorizationType, IdToken, IdTokenType, ProvidedIdToken

S, E = TokenState, TokenEvent


def request() -> TokenRequest:
    token = ProvidedIdToken(id_token=IdToken(value="Card01", type=IdTokenType.ISO14443),
                            authorization_type=AuthorizationType.RFID)
    return TokenRequest(token=token, referenced=[1])


def test_a_new_request_is_received_and_keyed_by_its_folded_value() -> None:
    r = request()
    assert r.state is S.RECEIVED
    assert r.key == "card01"


@pytest.mark.parametrize("path,end", [
    ([E.ANNOUNCE, E.FINISH], S.FINISHED),
    ([E.ANNOUNCE, E.PARK, E.CAR_ARRIVED, E.PARK, E.FINISH], S.FINISHED),
    ([E.WITHDRAW, E.ANNOUNCE, E.FINISH], S.FINISHED),
    ([E.ANNOUNCE, E.WITHDRAW, E.WITHDRAW], S.WITHDRAWN),
    ([E.WITHDRAW, E.WITHDRAW], S.RECEIVED_WITHDRAWN),
])
def test_legal_paths(path: list[TokenEvent], end: TokenState) -> None:
    r = request()
    for event in path:
        r.move(event)
    assert r.state is end


def test_every_move_not_in_the_table_is_refused() -> None:
    for state in TokenState:
        for event in TokenEvent:
            r = request()
            r.state = state
            if (state, event) in TOKEN_TRANSITIONS:
                r.move(event)
                assert r.state is TOKEN_TRANSITIONS[(state, event)]
            else:
                with pytest.raises(RuntimeError, match=f"cannot {event.value}"):
                    r.move(event)
                assert r.state is state


def test_finished_is_final_and_received_never_finishes_unannounced() -> None:
    assert not [k for k in TOKEN_TRANSITIONS if k[0] is S.FINISHED]
    assert (S.RECEIVED, E.FINISH) not in TOKEN_TRANSITIONS
    assert (S.WITHDRAWN, E.PARK) not in TOKEN_TRANSITIONS
