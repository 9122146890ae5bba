"""The wire format of CONTRACT.md §3: builders, parsers, and refusal of malformed input."""

from __future__ import annotations

import json
import re

import pytest

from auth_module.bus import envelopes as env
from auth_module.bus.envelopes import EnvelopeError

P = "everest/"


# --- topics ------------------------------------------------------------------------------


@pytest.mark.timeout(5)
def test_topics_follow_the_contract() -> None:
    assert env.var_topic(P, "auth", "main", "token_validation_status") == (
        "everest/modules/auth/impl/main/var/token_validation_status"
    )
    assert env.cmd_topic(P, "evse_manager_1", "evse", "get_evse") == (
        "everest/modules/evse_manager_1/impl/evse/cmd/get_evse"
    )
    assert env.cmd_response_topic(P, "evse_manager_1", "evse", "get_evse", "auth") == (
        "everest/modules/evse_manager_1/impl/evse/cmd/get_evse/response/auth"
    )
    assert env.error_topic(P, "evse_manager_1", "evse", "evse_manager/Inoperative") == (
        "everest/modules/evse_manager_1/impl/evse/error/evse_manager/Inoperative"
    )
    assert env.ready_topic(P, "auth") == "everest/modules/auth/ready"
    assert env.cmd_response_wildcard(P, "auth") == "everest/modules/+/impl/+/cmd/+/response/auth"


@pytest.mark.timeout(5)
def test_prefix_is_prepended_verbatim() -> None:
    assert env.ready_topic("site/a/", "auth") == "site/a/modules/auth/ready"
    assert env.ready_topic("", "auth") == "modules/auth/ready"


@pytest.mark.timeout(5)
@pytest.mark.parametrize("bad", ["", "a/b", "a+", "#", "x#y"])
def test_topic_segments_refuse_empty_slashes_and_wildcards(bad: str) -> None:
    with pytest.raises(ValueError):
        env.var_topic(P, bad, "main", "v")
    with pytest.raises(ValueError):
        env.cmd_topic(P, "auth", bad, "c")
    with pytest.raises(ValueError):
        env.cmd_response_topic(P, "auth", "main", "c", bad)


@pytest.mark.timeout(5)
def test_error_type_may_contain_a_slash_but_no_wildcard() -> None:
    assert env.error_topic(P, "m", "i", "a/b/c").endswith("/error/a/b/c")
    with pytest.raises(ValueError):
        env.error_topic(P, "m", "i", "a/+")


# --- builders ----------------------------------------------------------------------------


@pytest.mark.timeout(5)
def test_var_envelope_shape_and_round_trip() -> None:
    value = {"token": {"id_token": {"value": "X", "type": "ISO14443"}}, "status": "Accepted"}
    built = env.var_envelope(value)
    assert built == {"msg_type": "Var", "data": {"data": value}}
    assert env.parse_var(env.encode(built)) == value
    assert env.parse_var(env.encode(env.var_envelope(None))) is None


@pytest.mark.timeout(5)
def test_cmd_envelope_shape_and_round_trip() -> None:
    built = env.cmd_envelope("id-1", {"connection_timeout": 10}, "auth")
    assert built == {
        "msg_type": "Cmd",
        "data": {"id": "id-1", "args": {"connection_timeout": 10}, "origin": "auth"},
    }
    parsed = env.parse_cmd(env.encode(built))
    assert parsed == env.CmdMessage(id="id-1", args={"connection_timeout": 10}, origin="auth")
    assert env.cmd_envelope("id-2", None, "auth")["data"]["args"] == {}


@pytest.mark.timeout(5)
def test_cmd_result_envelope_shape_and_round_trip() -> None:
    built = env.cmd_result_envelope("id-1", None, "evse_manager_1")
    assert built == {
        "msg_type": "CmdResult",
        "data": {"type": "result", "data": {"id": "id-1", "retval": None, "origin": "evse_manager_1"}},
    }
    assert '"retval":null' in env.encode(built).decode()
    parsed = env.parse_cmd_result(env.encode(built))
    assert parsed == env.CmdResultMessage(id="id-1", origin="evse_manager_1", retval=None, error=None)
    parsed = env.parse_cmd_result(env.encode(env.cmd_result_envelope("id-2", {"id": 1}, "m")))
    assert parsed.retval == {"id": 1}


@pytest.mark.timeout(5)
def test_cmd_error_envelope_shape_and_round_trip() -> None:
    built = env.cmd_error_envelope("id-1", "HandlerException", "boom", "auth")
    assert built == {
        "msg_type": "CmdResult",
        "data": {
            "type": "result",
            "data": {"id": "id-1", "origin": "auth",
                     "error": {"__everest__error_type": "HandlerException", "__everest__error_msg": "boom"}},
        },
    }
    assert "retval" not in built["data"]["data"]
    parsed = env.parse_cmd_result(env.encode(built))
    assert parsed.error == ("HandlerException", "boom")
    assert parsed.retval is None


@pytest.mark.timeout(5)
def test_cmd_error_types_are_everests() -> None:
    """The six strings of EVerest's lib/conversions.cpp, and only those."""
    assert env.CMD_ERROR_TYPES == {"MessageParsingError", "SchemaValidationError", "HandlerException",
                                   "CmdTimeout", "Shutdown", "NotReady"}


@pytest.mark.timeout(5)
@pytest.mark.parametrize("error_type", sorted(env.CMD_ERROR_TYPES))
def test_every_contract_error_type_round_trips(error_type: str) -> None:
    parsed = env.parse_cmd_result(env.encode(env.cmd_error_envelope("i", error_type, "m", "o")))
    assert parsed.error == (error_type, "m")


@pytest.mark.timeout(5)
@pytest.mark.parametrize("old", ["Oops", "SchemaValidationFailed", "MessageParsingFailed", "Timeout"])
def test_cmd_error_envelope_refuses_unknown_type(old: str) -> None:
    with pytest.raises(ValueError):
        env.cmd_error_envelope("i", old, "m", "o")


@pytest.mark.timeout(5)
@pytest.mark.parametrize("error", [
    {"msg": "m"},
    {"event": "HandlerException", "msg": "the shape this project used to send"},
    {"__everest__error_type": "NoSuchType", "__everest__error_msg": "m"},
])
def test_an_unreadable_error_object_still_fails_the_call(error: dict) -> None:
    """An error answer we cannot read is still an error (HandlerException), not a retval and
    not a dropped message that would leave the call to time out."""
    payload = {"msg_type": "CmdResult",
               "data": {"type": "result", "data": {"id": "x", "origin": "o", "error": error}}}
    parsed = env.parse_cmd_result(json.dumps(payload))
    assert parsed.error is not None and parsed.error[0] == "HandlerException"
    assert parsed.retval is None


@pytest.mark.timeout(5)
def test_raise_and_clear_error_envelopes() -> None:
    raised = env.raise_error_envelope("evse_manager_1", "evse", "evse_manager/Inoperative", "faulted")
    assert raised["msg_type"] == "RaiseError"
    data = raised["data"]
    assert data["type"] == "evse_manager/Inoperative"
    assert data["message"] == "faulted"
    assert data["severity"] == "High"
    assert data["origin"] == {"module_id": "evse_manager_1", "implementation_id": "evse"}
    assert data["state"] == "Active"
    assert data["description"] == "" and data["sub_type"] == "" and data["vendor_id"] == ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["timestamp"])
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", data["uuid"])
    # every key of EVerest's error_json.hpp: its readers take each one with .at()
    assert set(data) == {"type", "sub_type", "description", "message", "severity", "origin",
                         "vendor_id", "state", "timestamp", "uuid"}

    cleared = env.clear_error_envelope("evse_manager_1", "evse", "evse_manager/Inoperative", "ok")
    assert cleared["msg_type"] == "ClearError"
    assert set(cleared["data"]) == set(data)
    assert cleared["data"]["state"] == "ClearedByModule"

    parsed = env.parse_error(env.encode(raised))
    assert parsed.raised is True and parsed.data == data
    parsed = env.parse_error(env.encode(cleared))
    assert parsed.raised is False and parsed.data["message"] == "ok"


@pytest.mark.timeout(5)
def test_error_envelope_carries_description_sub_type_vendor_and_checks_state() -> None:
    built = env.raise_error_envelope("m", "i", "t/x", "msg", description="what it means",
                                     sub_type="welded", vendor_id="acme", severity="Medium")
    data = built["data"]
    assert (data["description"], data["sub_type"], data["vendor_id"], data["severity"]) == (
        "what it means", "welded", "acme", "Medium")
    assert env.clear_error_envelope("m", "i", "t/x", state="ClearedByReboot")["data"]["state"] == \
        "ClearedByReboot"
    with pytest.raises(ValueError):
        env.clear_error_envelope("m", "i", "t/x", state="Cleared")
    with pytest.raises(ValueError):
        env.raise_error_envelope("m", "i", "t/x", severity="Critical")


@pytest.mark.timeout(5)
def test_error_envelope_accepts_given_uuid_and_timestamp() -> None:
    built = env.raise_error_envelope("m", "i", "t/x", "", uuid="u-1", timestamp="2024-01-01T00:00:00.000Z")
    assert built["data"]["uuid"] == "u-1"
    assert built["data"]["timestamp"] == "2024-01-01T00:00:00.000Z"


@pytest.mark.timeout(5)
def test_ready_envelope() -> None:
    assert env.ready_envelope() == {"msg_type": "ModuleReady", "data": True}
    assert env.parse_ready(env.encode(env.ready_envelope())) is True


@pytest.mark.timeout(5)
def test_encode_is_compact_utf8_json() -> None:
    raw = env.encode(env.var_envelope({"v": "ü"}))
    assert raw == '{"msg_type":"Var","data":{"data":{"v":"ü"}}}'.encode()
    with pytest.raises((TypeError, ValueError)):
        env.encode(env.var_envelope({1, 2}))
    with pytest.raises(ValueError):
        env.encode(env.var_envelope(float("nan")))


@pytest.mark.timeout(5)
def test_parsers_accept_str_bytes_and_dicts() -> None:
    built = env.var_envelope(3)
    assert env.parse_var(built) == 3
    assert env.parse_var(json.dumps(built)) == 3
    assert env.parse_var(bytearray(json.dumps(built).encode())) == 3


@pytest.mark.timeout(5)
def test_new_call_ids_are_unique_strings() -> None:
    ids = {env.new_call_id() for _ in range(100)}
    assert len(ids) == 100 and all(isinstance(i, str) for i in ids)


# --- malformed input ---------------------------------------------------------------------


MALFORMED_ANY = [
    b"",
    b"not json",
    b"\xff\xfe",
    b"[1, 2]",
    b'"text"',
    b"null",
    b'{"msg_type": "Var"',
]


@pytest.mark.timeout(5)
@pytest.mark.parametrize("payload", MALFORMED_ANY)
@pytest.mark.parametrize(
    "parser", [env.parse_var, env.parse_cmd, env.parse_cmd_result, env.parse_error, env.parse_ready]
)
def test_garbage_raises_envelope_error(parser: object, payload: bytes) -> None:
    with pytest.raises(EnvelopeError):
        parser(payload)  # type: ignore[operator]


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "payload",
    [
        {"msg_type": "Cmd", "data": {"data": 1}},
        {"data": {"data": 1}},
        {"msg_type": "Var"},
        {"msg_type": "Var", "data": 5},
        {"msg_type": "Var", "data": {}},
    ],
)
def test_parse_var_refuses_wrong_shapes(payload: dict) -> None:
    with pytest.raises(EnvelopeError):
        env.parse_var(json.dumps(payload))


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "data",
    [
        {"args": {}, "origin": "auth"},
        {"id": "", "args": {}, "origin": "auth"},
        {"id": 7, "args": {}, "origin": "auth"},
        {"id": "x", "args": {}},
        {"id": "x", "args": {}, "origin": ""},
        {"id": "x", "args": {}, "origin": "a/b"},
        {"id": "x", "args": {}, "origin": "a+"},
        {"id": "x", "args": [1], "origin": "auth"},
        {"id": "x", "args": "s", "origin": "auth"},
    ],
)
def test_parse_cmd_refuses_wrong_shapes(data: dict) -> None:
    with pytest.raises(EnvelopeError):
        env.parse_cmd(json.dumps({"msg_type": "Cmd", "data": data}))


@pytest.mark.timeout(5)
def test_parse_cmd_refuses_wrong_msg_type_and_reads_missing_args_as_empty() -> None:
    with pytest.raises(EnvelopeError, match="msg_type"):
        env.parse_cmd(json.dumps({"msg_type": "Var", "data": {"id": "x", "args": {}, "origin": "a"}}))
    assert env.parse_cmd(json.dumps({"msg_type": "Cmd", "data": {"id": "x", "origin": "a"}})).args == {}


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "payload",
    [
        {"msg_type": "CmdResult", "data": {"type": "other", "data": {"id": "x", "retval": 1}}},
        {"msg_type": "CmdResult", "data": {"type": "result"}},
        {"msg_type": "CmdResult", "data": {"type": "result", "data": {"retval": 1}}},
        {"msg_type": "CmdResult", "data": {"type": "result", "data": {"id": "x", "error": "boom"}}},
        {"msg_type": "CmdResult", "data": {"type": "result", "data": {"id": "x", "origin": 5}}},
        {"msg_type": "Cmd", "data": {"type": "result", "data": {"id": "x", "retval": 1}}},
    ],
)
def test_parse_cmd_result_refuses_wrong_shapes(payload: dict) -> None:
    with pytest.raises(EnvelopeError):
        env.parse_cmd_result(json.dumps(payload))


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "payload",
    [
        {"msg_type": "Error", "data": {"type": "a/b"}},
        {"msg_type": "RaiseError"},
        {"msg_type": "RaiseError", "data": {"message": "no type"}},
        {"msg_type": "ClearError", "data": []},
    ],
)
def test_parse_error_refuses_wrong_shapes(payload: dict) -> None:
    with pytest.raises(EnvelopeError):
        env.parse_error(json.dumps(payload))


@pytest.mark.timeout(5)
def test_parse_ready_refuses_non_boolean() -> None:
    with pytest.raises(EnvelopeError):
        env.parse_ready(json.dumps({"msg_type": "ModuleReady", "data": "yes"}))
    with pytest.raises(EnvelopeError):
        env.parse_ready(json.dumps({"msg_type": "ModuleReady"}))


@pytest.mark.timeout(5)
def test_envelope_error_is_a_value_error_with_a_reason() -> None:
    with pytest.raises(ValueError, match="data.args must be an object"):
        env.parse_cmd(json.dumps({"msg_type": "Cmd", "data": {"id": "x", "origin": "a", "args": 1}}))


# --- salvaging id and origin of broken commands ------------------------------------------


@pytest.mark.timeout(5)
def test_salvage_from_truncated_json() -> None:
    raw = b'{"msg_type": "Cmd", "data": {"id": "abc-1", "origin": "tool", "args": {"x": '
    assert env.salvage_cmd_id_origin(raw) == ("abc-1", "tool")


@pytest.mark.timeout(5)
def test_salvage_from_valid_json_with_bad_args() -> None:
    raw = json.dumps({"msg_type": "Cmd", "data": {"id": "abc", "origin": "tool", "args": [1]}})
    with pytest.raises(EnvelopeError):
        env.parse_cmd(raw)
    assert env.salvage_cmd_id_origin(raw) == ("abc", "tool")


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "raw",
    [
        b"garbage",
        b'{"msg_type": "Cmd", "data": {"origin": "tool", "args": ',
        b'{"msg_type": "Cmd", "data": {"id": "x", "args": ',
        b'{"msg_type": "Cmd", "data": {"id": "x", "origin": "a/b", "args": ',
        json.dumps({"msg_type": "Cmd", "data": {"id": "x"}}).encode(),
        json.dumps({"msg_type": "Cmd", "data": {"id": "x", "origin": "a/#"}}).encode(),
    ],
)
def test_salvage_gives_up_without_a_usable_id_and_origin(raw: bytes) -> None:
    assert env.salvage_cmd_id_origin(raw) is None
