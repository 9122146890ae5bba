"""Command arguments, results and variables checked against ``interfaces/``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from auth_module.schema import InterfaceSchemas, SchemaLoadError

pytestmark = pytest.mark.timeout(10)

S = InterfaceSchemas.load()

RESERVATION = {
    "reservation_id": 7,
    "id_token": "VALID_RFID_1",
    "expiry_time": "2030-01-01T12:00:00Z",
}


def _with(**changes: Any) -> dict[str, Any]:
    request = {**RESERVATION, **changes}
    return {"request": {k: v for k, v in request.items() if v is not ...}}


# --- reserve_now ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        _with(),
        _with(evse_id=1),
        _with(evse_id=2, parent_id_token="PARENT_RFID", connector_type="cType2"),
        _with(expiry_time="2030-01-01T12:00:00.123+02:00"),
    ],
)
def test_reserve_now_valid(args: dict[str, Any]) -> None:
    assert S.command_args_error("reservation", "reserve_now", args) is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (_with(reservation_id="x"), "request.reservation_id: 'x' is not of type 'integer'"),
        (_with(reservation_id=1.5), "request.reservation_id: 1.5 is not of type 'integer'"),
        (_with(evse_id="1"), "request.evse_id: '1' is not of type 'integer'"),
        (_with(id_token=5), "request.id_token: 5 is not of type 'string'"),
        (_with(expiry_time=...), "request: missing required field 'expiry_time'"),
        (_with(reservation_id=...), "request: missing required field 'reservation_id'"),
        (_with(expiry_time="tomorrow"), "request.expiry_time: 'tomorrow' is not a valid date-time"),
        (_with(expiry_time="2030-01-01T12:00:00"), "is not a valid date-time"),  # no time zone
        (_with(expiry_time="2030-13-01T12:00:00Z"), "is not a valid date-time"),
        (_with(connector_type="Type2"), "request.connector_type: 'Type2' is not a valid ConnectorTypeEnum"),
        (_with(colour="red"), "request: unknown field 'colour'"),
        ({}, "missing argument 'request'"),
        ({**_with(), "extra": 1}, "unknown argument 'extra'"),
        ({"request": "x"}, "request: 'x' is not of type 'object'"),
        ([], "arguments must be an object"),
    ],
)
def test_reserve_now_invalid(args: Any, expected: str) -> None:
    problem = S.command_args_error("reservation", "reserve_now", args)
    assert problem is not None
    assert expected in problem
    assert "\n" not in problem


# --- cancel_reservation, withdraw_authorization, set_connection_timeout -------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"reservation_id": 3}, None),
        ({"reservation_id": -1}, None),
        ({"reservation_id": "3"}, "reservation_id: '3' is not of type 'integer'"),
        ({"reservation_id": True}, "reservation_id: True is not of type 'integer'"),
        ({"reservation_id": None}, "reservation_id: None is not of type 'integer'"),
        ({}, "missing argument 'reservation_id'"),
        ({"reservation_id": 3, "evse_id": 1}, "unknown argument 'evse_id'"),
    ],
)
def test_cancel_reservation(args: dict[str, Any], expected: str | None) -> None:
    assert S.command_args_error("reservation", "cancel_reservation", args) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"request": {}}, None),
        ({"request": {"evse_id": 1}}, None),
        ({"request": {"id_token": {"value": "VALID_RFID_1", "type": "ISO14443"}}}, None),
        ({"request": {"evse_id": 2, "id_token": {"value": "A", "type": "Local"}}}, None),
        ({"request": {"evse_id": "one"}}, "request.evse_id: 'one' is not of type 'integer'"),
        (
            {"request": {"id_token": {"value": "A", "type": "RFID"}}},
            "request.id_token.type: 'RFID' is not a valid IdTokenType",
        ),
        ({"request": {"id_token": {"value": "A"}}}, "request.id_token: missing required field 'type'"),
        (
            {"request": {"id_token": {"value": "A" * 37, "type": "Local"}}},
            "request.id_token.value: 'AAAA",
        ),
        ({"request": {"id_token": {"value": "A", "type": "Local", "x": 1}}}, "request.id_token: unknown field 'x'"),
        ({}, "missing argument 'request'"),
        ({"request": {}, "evse_id": 1}, "unknown argument 'evse_id'"),
    ],
)
def test_withdraw_authorization(args: dict[str, Any], expected: str | None) -> None:
    problem = S.command_args_error("auth", "withdraw_authorization", args)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(expected), problem


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"connection_timeout": 30}, None),
        ({"connection_timeout": 1}, None),
        ({"connection_timeout": "30"}, "connection_timeout: '30' is not of type 'integer'"),
        ({"connection_timeout": 2.5}, "connection_timeout: 2.5 is not of type 'integer'"),
        ({"connection_timeout": False}, "connection_timeout: False is not of type 'integer'"),
        ({"connection_timeout": 0}, "connection_timeout: 0 is less than the minimum of 1"),
        ({}, "missing argument 'connection_timeout'"),
        ({"connection_timeout": 30, "unit": "s"}, "unknown argument 'unit'"),
        ({"timeout": 30}, "unknown argument 'timeout'"),
    ],
)
def test_set_connection_timeout(args: dict[str, Any], expected: str | None) -> None:
    assert S.command_args_error("auth", "set_connection_timeout", args) == expected


def test_set_master_pass_group_id() -> None:
    check = S.args_checker("auth", "set_master_pass_group_id")
    assert check({"master_pass_group_id": ""}) is None
    assert check({"master_pass_group_id": "MASTER_GROUP"}) is None
    assert check({"master_pass_group_id": 1}) == "master_pass_group_id: 1 is not of type 'string'"
    assert check({"master_pass_group_id": "x" * 37}).startswith("master_pass_group_id: ")


def test_exists_reservation() -> None:
    ok = {"request": {"id_token": "A", "evse_id": 1, "group_id_token": "G"}}
    assert S.command_args_error("reservation", "exists_reservation", ok) is None
    assert S.command_args_error("reservation", "exists_reservation", {"request": {"evse_id": 1}}) == (
        "request: missing required field 'id_token'"
    )


def test_command_without_arguments() -> None:
    assert S.command_args_error("evse_manager", "get_evse", {}) is None
    assert S.command_args_error("evse_manager", "get_evse", None) is None
    assert S.command_args_error("evse_manager", "withdraw_authorization", {"x": 1}) == "unknown argument 'x'"


def test_unknown_interface_or_command_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        S.command_args_error("auth", "no_such_cmd", {})
    with pytest.raises(KeyError):
        S.command_args_error("no_such_interface", "x", {})
    with pytest.raises(KeyError):
        S.var_error("auth", "no_such_var", {})
    with pytest.raises(KeyError):
        S.args_checker("reservation", "nope")


# --- results and variables -------------------------------------------------------------------


TOKEN = {"id_token": {"value": "VALID_RFID_1", "type": "ISO14443"}, "authorization_type": "RFID"}


def test_results() -> None:
    assert S.result_error("reservation", "reserve_now", "Accepted") is None
    assert S.result_error("reservation", "reserve_now", "Yes").startswith("result: 'Yes' is not a valid ReservationResult")
    assert S.result_error("reservation", "cancel_reservation", False) is None
    assert S.result_error("reservation", "cancel_reservation", "false") == "result: 'false' is not of type 'boolean'"
    assert S.result_error("auth", "withdraw_authorization", "EvseNotFound") is None
    assert S.result_error("auth", "set_connection_timeout", None) is None
    assert S.result_error("auth", "set_connection_timeout", 1) == "result: expected null (got 1)"
    assert S.result_error("evse_manager", "get_evse", {"id": 1, "connectors": [{"id": 1, "type": "cType2"}]}) is None
    assert S.result_error("evse_manager", "get_evse", {"id": 1, "connectors": []}) is not None
    assert S.result_error("evse_manager", "get_evse", {"id": 1}) == "result: missing required field 'connectors'"
    assert S.result_error("auth_token_validator", "validate_token", {"authorization_status": "Accepted", "tariff_messages": []}) is None
    assert S.result_error("auth_token_validator", "validate_token", {"authorization_status": "Accepted"}) == (
        "result: missing required field 'tariff_messages'"
    )


def test_variables() -> None:
    assert S.var_error("auth_token_provider", "provided_token", TOKEN) is None
    assert S.var_error("auth_token_provider", "provided_token", {**TOKEN, "connectors": [0]}) == (
        "provided_token.connectors[0]: 0 is less than the minimum of 1"
    )
    assert S.var_error("auth", "token_validation_status", {"token": TOKEN, "status": "Processing"}) is None
    assert S.var_error("reservation", "reservation_update", {"reservation_id": 1, "reservation_status": "Placed"}) is None
    assert S.var_error("reservation", "reservation_update", {"reservation_id": 1, "reservation_status": "Gone"}) is not None
    event = {
        "uuid": "u1",
        "event": "TransactionStarted",
        "timestamp": "2024-05-01T10:00:00.000Z",
        "connector_id": 1,
        "transaction_started": {
            "id_tag": TOKEN,
            "meter_value": {"timestamp": "2024-05-01T10:00:00Z", "energy_Wh_import": {"total": 12.5, "L1": 4}},
            "signed_meter_value": {"whatever": True},
        },
        "charging_paused_evse": {"reasons": ["UserPause"]},
    }
    assert S.var_error("evse_manager", "session_event", event) is None
    assert S.var_error("evse_manager", "session_event", {**event, "event": "Bogus"}).startswith("session_event.event: 'Bogus'")
    broken = {**event, "transaction_started": {"id_tag": TOKEN, "meter_value": {}}}
    assert S.var_error("evse_manager", "session_event", broken) == (
        "session_event.transaction_started.meter_value: missing required field 'energy_Wh_import'"
    )


def test_evse_manager_interface_has_what_the_contract_uses() -> None:
    assert {"get_evse", "authorize_response", "withdraw_authorization", "reserve", "cancel_reservation", "stop_transaction"} <= set(
        S.commands("evse_manager")
    )
    assert S.arguments("evse_manager", "authorize_response") == ["provided_token", "validation_result"]
    assert S.arguments("evse_manager", "reserve") == ["reservation_id"]
    assert S.arguments("evse_manager", "stop_transaction") == ["request"]
    assert not S.has_result("evse_manager", "cancel_reservation")
    assert S.variables("evse_manager") == ["session_event"]
    assert S.error_types("evse_manager") == ["evse_manager/Inoperative"]
    assert S.command_args_error("evse_manager", "stop_transaction", {"request": {"reason": "MasterPass", "id_tag": TOKEN}}) is None
    assert S.command_args_error("evse_manager", "reserve", {"reservation_id": -1}) is None


def test_provided_interfaces_match_contract() -> None:
    assert S.commands("auth") == ["set_connection_timeout", "set_master_pass_group_id", "withdraw_authorization"]
    assert S.variables("auth") == ["token_validation_status"]
    assert S.commands("reservation") == ["reserve_now", "cancel_reservation", "exists_reservation"]
    assert S.variables("reservation") == ["reservation_update"]
    assert S.commands("auth_token_validator") == ["validate_token"]
    assert S.variables("auth_token_validator") == ["validate_result_update"]
    assert S.variables("auth_token_provider") == ["provided_token"]


# --- loading -----------------------------------------------------------------------------------


def test_load_is_cached() -> None:
    assert InterfaceSchemas.load() is S
    assert InterfaceSchemas.load(S.folder) is S


def test_bad_ref_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "types").mkdir()
    (tmp_path / "types" / "a.yaml").write_text("types:\n  T:\n    type: object\n")
    (tmp_path / "x.yaml").write_text(
        "description: x\ncmds:\n  c:\n    arguments:\n      r:\n        type: object\n        $ref: /a#/Missing\n"
    )
    with pytest.raises(SchemaLoadError, match="unresolvable"):
        InterfaceSchemas.load(tmp_path)


def test_other_folder(tmp_path: Path) -> None:
    (tmp_path / "types").mkdir()
    (tmp_path / "types" / "a.yaml").write_text("types:\n  N:\n    type: integer\n    minimum: 5\n")
    (tmp_path / "x.yaml").write_text(
        "description: x\ncmds:\n  c:\n    arguments:\n      n:\n        type: integer\n        $ref: /a#/N\n"
    )
    schemas = InterfaceSchemas.load(tmp_path)
    assert schemas.command_args_error("x", "c", {"n": 5}) is None
    assert schemas.command_args_error("x", "c", {"n": 4}) == "n: 4 is less than the minimum of 5"


def test_valid_reserve_now_is_fast() -> None:
    args = _with(evse_id=1, connector_type="cType2")
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        S.command_args_error("reservation", "reserve_now", args)
    per_call = (time.perf_counter() - start) / n
    assert per_call < 0.001  # measured ~30 us; generous bound for slow CI machines
