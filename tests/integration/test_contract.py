"""The MQTT face of the module (CONTRACT.md §3-§6), checked on the wire.

A raw MQTT client records every message on ``everest/#`` and sends commands and variables
byte for byte, malformed ones included. The module runs as its own process
(``auth-module --config``) against scripted EVSE managers, a validator simulator and a token
provider simulator (see ``harness.py``).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from simulators.broker import Mosquitto

from .harness import DEADLINE_S, RawClient, Rig, ScriptedEvse, ValidatorSpec, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

P = "everest/"
MID = "auth"
VALID_1, VALID_2, INVALID = "VALID_RFID_1", "VALID_RFID_2", "INVALID_RFID"
VALIDATORS = [ValidatorSpec("validator", tokens=[{"id_token": VALID_1}, {"id_token": VALID_2}])]
# EVerest's command error types (framework lib/conversions.cpp): a C++ caller ends on any other
ERROR_EVENTS = {"MessageParsingError", "SchemaValidationError", "HandlerException", "CmdTimeout",
                "Shutdown", "NotReady"}
ERROR_TYPE, ERROR_MSG = "__everest__error_type", "__everest__error_msg"

# §6 field names
PROVIDED_ID_TOKEN_FIELDS = {"id_token", "authorization_type", "request_id", "parent_id_token",
                            "connectors", "prevalidated", "certificate",
                            "iso15118CertificateHashData"}
ID_TOKEN_FIELDS = {"value", "type", "additional_info"}


def future(minutes: int = 30) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat(
        timespec="seconds").replace("+00:00", "Z")


def log_records(rig: Rig) -> list[dict[str, Any]]:
    return rig.log_records()


def warnings_about(rig: Rig, *words: str) -> list[dict[str, Any]]:
    """Warning (or worse) log records whose event text contains every one of ``words``."""
    return [r for r in log_records(rig)
            if r.get("level") in ("warning", "error")
            and all(w in str(r.get("event", "")).lower() for w in words)]


class GatedEvse(ScriptedEvse):
    """A scripted EVSE manager whose ``get_evse`` answer is held back until ``gate`` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.gate = threading.Event()
        super().__init__(*args, **kwargs)

    def _recorder(self, name: str, answer: Any) -> Callable[[dict[str, Any]], Any]:
        handle = super()._recorder(name, answer)
        if name != "get_evse":
            return handle

        def gated(args: dict[str, Any]) -> Any:
            self.gate.wait(30)
            return handle(args)
        return gated


@pytest.fixture
def station(broker: Mosquitto, tmp_path: Path) -> Iterator[Callable[..., tuple[Rig, RawClient]]]:
    """``station(gated=False, ...)`` -> (rig, raw): a scripted station, raw client recording
    ``everest/#`` from before the module started. ``gated``: EVSE manager 2 holds its
    ``get_evse`` answer back until ``rig.evse(2).gate.set()`` (the module is not waited for)."""
    made: list[tuple[Rig, RawClient]] = []

    def build(*, gated: bool = False, config: dict[str, Any] | None = None,
              extra: dict[str, Any] | None = None) -> tuple[Rig, RawClient]:
        rig = Rig(broker, tmp_path, scripted=True, validators=VALIDATORS,
                  config={"connection_timeout": 30, **(config or {})}, extra=extra)
        raw = RawClient(broker.host, broker.port)
        made.append((rig, raw))
        rig.write_station()
        rig.start_simulators()
        if gated:
            rig.evses[1].stop()
            late = GatedEvse(rig._bus, "evse_manager_2", 2, rig.evse_specs[1])
            late.start()
            rig.evses[1] = late
        raw.start()
        rig.start_module(wait_ready=not gated)
        return rig, raw

    yield build
    for rig, raw in made:
        for evse in rig.evses:
            if isinstance(evse, GatedEvse):
                evse.gate.set()
        raw.stop()
        rig.stop()


def cmd_topic(impl: str, name: str) -> str:
    return f"{P}modules/{MID}/impl/{impl}/cmd/{name}"


def assert_result(env: dict[str, Any], call_id: str, retval: Any) -> None:
    assert env == {"msg_type": "CmdResult",
                   "data": {"type": "result",
                            "data": {"id": call_id, "retval": retval, "origin": MID}}}, env


def assert_error(env: dict[str, Any], call_id: str, events: set[str] | str) -> str:
    """Check the exact error envelope; return the error's msg."""
    events = {events} if isinstance(events, str) else events
    assert set(env) == {"msg_type", "data"}, env
    assert env["msg_type"] == "CmdResult", env
    assert set(env["data"]) == {"type", "data"} and env["data"]["type"] == "result", env
    inner = env["data"]["data"]
    assert set(inner) == {"id", "error", "origin"}, env
    assert inner["id"] == call_id and inner["origin"] == MID, env
    assert set(inner["error"]) == {ERROR_TYPE, ERROR_MSG}, env
    assert inner["error"][ERROR_TYPE] in events, env
    assert isinstance(inner["error"][ERROR_MSG], str)
    return str(inner["error"][ERROR_MSG])


def wait_called(raw: RawClient, module_id: str, name: str, timeout: float = DEADLINE_S) -> None:
    topic = f"{P}modules/{module_id}/impl/evse/cmd/{name}"
    wait_until(lambda: raw.on(topic), timeout, f"the module calling {module_id} {name}")


def wait_session_event(raw: RawClient, evse_id: int, event: str,
                       timeout: float = DEADLINE_S) -> None:
    topic = f"{P}modules/evse_manager_{evse_id}/impl/evse/var/session_event"
    wait_until(lambda: any(json.loads(p)["data"]["data"]["event"] == event for p in raw.on(topic)),
               timeout, f"{event} of EVSE {evse_id} on the broker")


# --- envelopes ---------------------------------------------------------------------------------


def check_module_envelope(topic: str, env: Any, counts: dict[str, int]) -> None:
    """Fail unless ``env`` on ``topic`` is exactly a §3 envelope the module may publish."""
    assert isinstance(env, dict), (topic, env)
    if topic == f"{P}modules/{MID}/ready":
        assert env == {"msg_type": "ModuleReady", "data": True}, env
        counts["ModuleReady"] += 1
        return
    m = re.fullmatch(rf"{P}modules/{MID}/impl/(main|reservation)/(var|cmd)/([^/]+)"
                     r"(?:/response/([^/]+))?", topic)
    assert m, f"unexpected topic published under the module: {topic}"
    impl, kind, name, caller = m.groups()
    if kind == "var":
        assert (impl, name) in {("main", "token_validation_status"),
                                ("reservation", "reservation_update")}, topic
        assert set(env) == {"msg_type", "data"} and env["msg_type"] == "Var", env
        assert set(env["data"]) == {"data"}, env
        counts[f"Var {name}"] += 1
        return
    if caller is None:
        return  # a call *to* the module, published by a caller
    assert set(env) == {"msg_type", "data"} and env["msg_type"] == "CmdResult", env
    assert set(env["data"]) == {"type", "data"} and env["data"]["type"] == "result", env
    inner = env["data"]["data"]
    assert inner.get("origin") == MID, env
    assert isinstance(inner.get("id"), str) and inner["id"], env
    if "error" in inner:
        assert set(inner) == {"id", "error", "origin"}, env
        assert set(inner["error"]) == {ERROR_TYPE, ERROR_MSG}, env
        assert inner["error"][ERROR_TYPE] in ERROR_EVENTS, env
    else:
        assert set(inner) == {"id", "retval", "origin"}, env
    counts["CmdResult"] += 1


def test_every_envelope_has_the_contract_shape(station: Callable[..., tuple[Rig, RawClient]]
                                               ) -> None:
    rig, raw = station()

    # results, on P modules/auth/impl/IID/cmd/NAME/response/CALLER (raw.call waits on exactly that)
    assert_result(raw.call(MID, "main", "set_connection_timeout", {"connection_timeout": 30},
                           call_id="c-1"), "c-1", None)
    assert_result(raw.call(MID, "main", "set_master_pass_group_id", {"master_pass_group_id": ""},
                           call_id="c-2"), "c-2", None)
    assert_result(raw.call(MID, "main", "withdraw_authorization", {"request": {"evse_id": 1}},
                           call_id="c-3"), "c-3", "AuthorizationNotFound")
    assert_result(raw.call(MID, "reservation", "exists_reservation",
                           {"request": {"id_token": "NOBODY"}}, call_id="c-4"),
                  "c-4", "NotReserved")
    assert_result(raw.call(MID, "reservation", "reserve_now",
                           {"request": {"reservation_id": 7, "id_token": "RES_TOKEN",
                                        "expiry_time": future(), "evse_id": 2}},
                           call_id="c-5"), "c-5", "Accepted")
    assert_result(raw.call(MID, "reservation", "cancel_reservation", {"reservation_id": 7},
                           call_id="c-6"), "c-6", True)
    assert_error(raw.call(MID, "main", "set_connection_timeout", {"connection_timeout": "x"},
                          call_id="e-1"), "e-1", "SchemaValidationError")
    # another caller gets its answer on its own response topic
    assert_result(raw.call(MID, "main", "set_connection_timeout", {"connection_timeout": 30},
                           call_id="c-7", origin="other_caller"), "c-7", None)

    rig.swipe(VALID_1, connectors=[1])
    rig.statuses.wait(VALID_1, "UsedToStart")
    wait_until(lambda: rig.reservation_updates, DEADLINE_S, "reservation_update Placed")
    wait_until(lambda: rig.commands(1, "authorize_response"), DEADLINE_S, "authorize_response")

    counts: dict[str, int] = {"ModuleReady": 0, "CmdResult": 0, "Cmd": 0,
                              "Var token_validation_status": 0, "Var reservation_update": 0}
    for _t, topic, payload in raw.snapshot():
        env = json.loads(payload)  # everything on the bus here is a JSON object
        assert isinstance(env, dict), (topic, payload)
        if topic.startswith(f"{P}modules/{MID}/"):
            check_module_envelope(topic, env, counts)
            continue
        data = env.get("data")
        if re.fullmatch(rf"{P}modules/[^/]+/impl/[^/]+/cmd/[^/]+", topic) \
                and isinstance(data, dict) and data.get("origin") == MID:
            # a call the module makes (get_evse, validate_token, authorize_response, ...)
            assert set(env) == {"msg_type", "data"} and env["msg_type"] == "Cmd", env
            assert set(data) == {"id", "args", "origin"}, env
            assert isinstance(data["id"], str) and data["id"], env
            assert isinstance(data["args"], dict), env
            counts["Cmd"] += 1
    assert counts["ModuleReady"] == 1, counts
    assert counts["CmdResult"] >= 8, counts
    assert counts["Var token_validation_status"] >= 3, counts
    assert counts["Var reservation_update"] >= 1, counts
    assert counts["Cmd"] >= 4, counts  # 2x get_evse, validate_token, authorize_response
    update = rig.reservation_updates[0]
    assert update == {"reservation_id": 7, "reservation_status": "Placed"}, update


# --- start-up ----------------------------------------------------------------------------------


def test_ready_only_after_every_get_evse_answered_and_not_ready_commands(
        station: Callable[..., tuple[Rig, RawClient]]) -> None:
    rig, raw = station(gated=True, extra={"timeouts": {"validator_s": 2.0, "command_s": 15.0}})
    assert rig.proc is not None
    wait_called(raw, "evse_manager_2", "get_evse")
    first_answer = f"{P}modules/evse_manager_1/impl/evse/cmd/get_evse/response/{MID}"
    assert raw.on(first_answer), "EVSE manager 1 answered get_evse before 2 was asked"

    # EVSE manager 2 has not answered: no ready, and the guarded commands answer NotReady
    for call_id, impl, name, args in [
        ("nr-1", "reservation", "reserve_now",
         {"request": {"reservation_id": 1, "id_token": "RES", "expiry_time": future()}}),
        ("nr-2", "main", "withdraw_authorization", {"request": {"evse_id": 1}}),
        ("nr-3", "reservation", "exists_reservation", {"request": {"id_token": "RES"}}),
        ("nr-4", "reservation", "cancel_reservation", {"reservation_id": 1}),
    ]:
        assert_error(raw.call(MID, impl, name, args, call_id=call_id), call_id, "NotReady")
    assert not raw.on(f"{P}modules/{MID}/ready")
    assert rig.ready_count == 0
    assert rig.proc.poll() is None

    rig.evse(2).gate.set()
    answer_2 = f"{P}modules/evse_manager_2/impl/evse/cmd/get_evse/response/{MID}"
    ready = f"{P}modules/{MID}/ready"
    wait_until(lambda: raw.on(ready), 10.0, "ready after EVSE manager 2 answered")
    topics = [t for _t, t, _p in raw.snapshot()]
    assert topics.index(answer_2) < topics.index(ready), "ready came before the last get_evse answer"
    assert json.loads(raw.on(ready)[0]) == {"msg_type": "ModuleReady", "data": True}
    assert_result(raw.call(MID, "main", "withdraw_authorization", {"request": {"evse_id": 1}},
                           call_id="after-ready"), "after-ready", "AuthorizationNotFound")


def test_tokens_before_ready_dropped_session_events_replayed(
        station: Callable[..., tuple[Rig, RawClient]]) -> None:
    rig, raw = station(gated=True, extra={"timeouts": {"validator_s": 2.0, "command_s": 15.0}})
    wait_called(raw, "evse_manager_2", "get_evse")  # connected and subscribed, not ready

    rig.swipe(VALID_2, connectors=[1])
    wait_until(lambda: warnings_about(rig, "token"), DEADLINE_S,
               "a warning that the early token was dropped")
    rig.evse(1).plug_in()
    plug_topic = f"{P}modules/evse_manager_1/impl/evse/var/session_event"
    wait_until(lambda: raw.on(plug_topic), DEADLINE_S, "the plug-in event on the broker")
    # The broker now delivers the plug-in to the module before the get_evse answer below.
    rig.evse(2).gate.set()
    wait_until(lambda: raw.on(f"{P}modules/{MID}/ready"), 10.0, "ready")

    # PlugEvents with two candidates would wait for a car (connection_timeout 30 s); the
    # replayed plug-in at EVSE 1 makes the choice at once.
    rig.swipe(VALID_1, connectors=[1, 2])
    rig.statuses.wait(VALID_1, "UsedToStart")
    assert rig.statuses.of(VALID_1) == ["Processing", "Accepted", "UsedToStart"]
    used = rig.statuses.messages(VALID_1, "UsedToStart")[0]
    assert used["token"].get("connectors") == [1], used
    auth = wait_until(lambda: rig.commands(1, "authorize_response"), DEADLINE_S,
                      "authorize_response at EVSE 1")
    assert [a["validation_result"]["authorization_status"] for a in auth] == ["Accepted"], auth
    assert not rig.commands(2, "authorize_response")
    assert rig.statuses.of(VALID_2) == [], "a token sent before ready was processed"


# --- malformed and schema-invalid commands -----------------------------------------------------


SCHEMA_INVALID = [
    ("wrong-type", "main", "set_connection_timeout", {"connection_timeout": "abc"}),
    ("below-minimum", "main", "set_connection_timeout", {"connection_timeout": 0}),
    ("missing-arg", "main", "set_connection_timeout", {}),
    ("unknown-arg", "main", "set_connection_timeout", {"connection_timeout": 5, "bogus": 1}),
    ("wrong-type-str", "main", "set_master_pass_group_id", {"master_pass_group_id": 5}),
    ("nested-wrong-type", "main", "withdraw_authorization", {"request": {"evse_id": "one"}}),
    ("missing-nested", "reservation", "reserve_now",
     {"request": {"reservation_id": 1, "id_token": "X"}}),
    ("bad-enum", "reservation", "reserve_now",
     {"request": {"reservation_id": 1, "id_token": "X", "expiry_time": "2030-01-01T00:00:00Z",
                  "connector_type": "NoSuchPlug"}}),
    ("bad-date-time", "reservation", "reserve_now",
     {"request": {"reservation_id": 1, "id_token": "X", "expiry_time": "tomorrow"}}),
    ("token-too-long", "main", "withdraw_authorization",
     {"request": {"id_token": {"value": "X" * 37, "type": "ISO14443"}}}),
    ("int-as-string", "reservation", "cancel_reservation", {"reservation_id": "1"}),
    ("missing-field", "reservation", "exists_reservation", {"request": {"evse_id": 1}}),
]


def test_schema_invalid_and_malformed_commands_answer_errors_never_crash(
        station: Callable[..., tuple[Rig, RawClient]]) -> None:
    rig, raw = station()
    assert rig.proc is not None
    for case, impl, name, args in SCHEMA_INVALID:
        env = raw.call(MID, impl, name, args, call_id=f"schema-{case}")
        msg = assert_error(env, f"schema-{case}", "SchemaValidationError")
        assert msg, f"{case}: the error says nothing"

    # args that is not an object: the id and origin are readable, so it is answered
    topic = cmd_topic("main", "set_connection_timeout")
    raw.publish(topic, {"msg_type": "Cmd", "data": {"id": "x", "origin": "tester",
                                                    "args": "notadict"}})
    assert_error(raw.response(f"{topic}/response/tester", "x"), "x",
                 {"MessageParsingError", "SchemaValidationError"})
    # wrong msg_type with a readable id
    raw.publish(topic, {"msg_type": "Var", "data": {"id": "wrong-type", "origin": "tester",
                                                    "args": {"connection_timeout": 5}}})
    assert_error(raw.response(f"{topic}/response/tester", "wrong-type"), "wrong-type",
                 {"MessageParsingError", "SchemaValidationError"})
    # nothing to answer: garbage bytes, non-object JSON, an envelope without an id
    for payload in (b"\x00\xff\xfegarbage{{", b"[1, 2, 3]", b"null", b"",
                    b'{"msg_type": "Cmd", "data": "x"}',
                    b'{"msg_type": "Cmd", "data": {"origin": "tester", "args": {}}}'):
        raw.publish(topic, payload)
        raw.publish(cmd_topic("reservation", "reserve_now"), payload)

    # still alive and serving
    assert_result(raw.call(MID, "main", "set_connection_timeout", {"connection_timeout": 30},
                           call_id="after"), "after", None)
    assert_result(raw.call(MID, "reservation", "exists_reservation",
                           {"request": {"id_token": "NOBODY"}}, call_id="after-2"),
                  "after-2", "NotReserved")
    rig.swipe(VALID_1, connectors=[1])
    rig.statuses.wait(VALID_1, "UsedToStart")
    assert rig.proc.poll() is None
    assert "Traceback" not in rig.module_log()


# --- withdraw_authorization --------------------------------------------------------------------


def test_withdraw_authorization_results(station: Callable[..., tuple[Rig, RawClient]]) -> None:
    rig, _raw = station()

    def withdraw(request: dict[str, Any]) -> Any:
        return rig.call("main", "withdraw_authorization", {"request": request})

    assert withdraw({"evse_id": 1}) == "AuthorizationNotFound"
    assert withdraw({"evse_id": 9}) == "EvseNotFound"
    assert withdraw({}) == "AuthorizationNotFound"

    rig.swipe(VALID_1, connectors=[1])
    rig.statuses.wait(VALID_1, "UsedToStart")
    assert withdraw({"evse_id": 1}) == "Accepted"
    wait_until(lambda: rig.commands(1, "withdraw_authorization"), DEADLINE_S,
               "withdraw_authorization sent to EVSE manager 1")
    assert withdraw({"evse_id": 1}) == "AuthorizationNotFound"

    rig.swipe(VALID_1, connectors=[1])
    rig.statuses.wait(VALID_1, "UsedToStart", count=2)
    # by token, compared case-insensitively
    assert withdraw({"id_token": {"value": VALID_1.lower(), "type": "ISO14443"}}) == "Accepted"
    wait_until(lambda: len(rig.commands(1, "withdraw_authorization")) == 2, DEADLINE_S,
               "the second withdraw_authorization")
    assert withdraw({"id_token": {"value": VALID_1, "type": "ISO14443"}}) == "AuthorizationNotFound"
    assert not rig.commands(2, "withdraw_authorization")


# --- token_validation_status -------------------------------------------------------------------


def check_status_message(msg: dict[str, Any], value: str) -> None:
    assert {"token", "status"} <= set(msg) <= {"token", "status", "messages"}, msg
    token = msg["token"]
    assert set(token) <= PROVIDED_ID_TOKEN_FIELDS, token
    assert {"id_token", "authorization_type"} <= set(token), token
    assert set(token["id_token"]) <= ID_TOKEN_FIELDS, token
    assert token["id_token"]["value"] == value and token["id_token"]["type"] == "ISO14443", token
    assert token["authorization_type"] == "RFID", token


def test_token_validation_status_messages(station: Callable[..., tuple[Rig, RawClient]]) -> None:
    rig, _raw = station()
    rig.swipe(VALID_1, connectors=[1], request_id=42)
    rig.statuses.wait(VALID_1, "UsedToStart")
    rig.swipe(INVALID, connectors=[2])
    rig.statuses.wait(INVALID, "Rejected")

    assert rig.statuses.of(VALID_1) == ["Processing", "Accepted", "UsedToStart"]
    assert rig.statuses.of(INVALID) == ["Processing", "Rejected"]
    for value in (VALID_1, INVALID):
        for _t, _s, msg in [e for e in rig.statuses.entries if e[0] == value]:
            check_status_message(msg, value)
    for _t, _s, msg in [e for e in rig.statuses.entries if e[0] == VALID_1]:
        assert msg["token"].get("request_id") == 42, msg
    used = rig.statuses.messages(VALID_1, "UsedToStart")[0]
    assert used["token"].get("connectors") == [1], used


# --- malformed variables -----------------------------------------------------------------------


def test_malformed_variables_dropped_and_logged(station: Callable[..., tuple[Rig, RawClient]]
                                                ) -> None:
    rig, raw = station()
    assert rig.proc is not None
    provided = f"{P}modules/rfid_reader/impl/main/var/provided_token"
    session = f"{P}modules/evse_manager_1/impl/evse/var/session_event"
    update = f"{P}modules/validator/impl/main/var/validate_result_update"
    fault = f"{P}modules/evse_manager_1/impl/evse/error/evse_manager/Inoperative"
    bad: list[tuple[str, bytes | dict[str, Any]]] = [
        (provided, {"msg_type": "Var", "data": {"data": {"authorization_type": "RFID"}}}),
        (provided, {"msg_type": "Var", "data": {"data": {
            "id_token": {"value": "NO_AUTH_TYPE", "type": "ISO14443"}}}}),
        (session, {"msg_type": "Var", "data": {"data": {
            "uuid": "u-1", "event": "NoSuchEvent", "timestamp": "2030-01-01T00:00:00Z",
            "connector_id": 1}}}),
        (provided, b"\x00\xffgarbage"),
        (session, b"garbage{"),
        (provided, {"msg_type": "Var", "data": {}}),
        (update, b"not json"),
        (fault, b"not json either"),
    ]
    before = len(warnings_about(rig, "malformed"))
    for topic, payload in bad:
        raw.publish(topic, payload)
    wait_until(lambda: len(warnings_about(rig, "malformed")) - before >= len(bad), DEADLINE_S,
               f"{len(bad)} warnings about malformed messages")

    rig.swipe(VALID_1, connectors=[1])
    rig.statuses.wait(VALID_1, "UsedToStart")
    assert [e[0] for e in rig.statuses.entries] == [VALID_1] * 3, rig.statuses.entries
    assert rig.proc.poll() is None
    assert "Traceback" not in rig.module_log()


# --- case-insensitive tokens -------------------------------------------------------------------


def test_token_values_compared_case_insensitively(station: Callable[..., tuple[Rig, RawClient]]
                                                  ) -> None:
    rig, raw = station()
    sent = rig.swipe(VALID_1, connectors=[1])
    rig.statuses.wait(VALID_1, "UsedToStart")
    rig.evse(1).transaction_started(sent)
    # Once the broker has passed the event on, it reaches the module before the next token
    # (a token presented again before its transaction started is "already in process").
    wait_session_event(raw, 1, "TransactionStarted")
    rig.swipe(VALID_1.lower(), connectors=[1])
    rig.statuses.wait(VALID_1.lower(), "UsedToStop")
    assert rig.statuses.of(VALID_1.lower()) == ["Processing", "UsedToStop"]
    wait_until(lambda: rig.commands(1, "stop_transaction"), DEADLINE_S, "stop_transaction")
    stops = rig.commands(1, "stop_transaction")
    assert len(stops) == 1 and stops[0]["request"]["reason"] == "Local", stops
