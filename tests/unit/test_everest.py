"""EVerest manager mode without a broker: the environment, the configuration answer turned
into the one station model, the module folder and its manifest (CONTRACT.md §8)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from auth_module.cli import main
from auth_module.everest.env import EnvError, ManagerEnv
from auth_module.everest.folder import everest_manifest, module_py, write_module_folder
from auth_module.everest.handshake import config_request, _encode
from auth_module.everest.settings import (
    EXTRA_CONFIG,
    ManagerConfigError,
    ignored_parameters,
    module_config_of,
    station_from_manager,
)
from auth_module.station import BusConnection, PluginConnection, StationError
from auth_module.types import SelectionAlgorithm
from tests.integration.everest_manager import ModuleSpec, build_config_answer, dump

REPO = Path(__file__).resolve().parents[2]
EVEREST_DEFS = REPO.parent / "shared" / "everest-defs"
needs_defs = pytest.mark.skipif(
    not (EVEREST_DEFS / "schemas" / "manifest.yaml").is_file(),
    reason=f"EVerest's definitions not found at {EVEREST_DEFS} (../shared beside the repo)")

#: The manager's answer for Auth with one reader, one validator and two EVSE managers, byte
#: for byte as spec/EVEREST-MANAGER.md §c gives it (framework aa8113f9).
SPEC_ANSWER = b'''{"data":{"response":{"data":{"mappings":{"auth":null,"probe":{"implementations":{"evse_manager_1":{"evse":1},"evse_manager_2":{"evse":2}}},"token_provider_1":null,"token_validator":null},"module_config":{"access":null,"configuration_parameters":{"!module":[{"characteristics":{"datatype":"integer","mutability":"ReadOnly"},"name":"connection_timeout","value":10},{"characteristics":{"datatype":"bool","mutability":"ReadOnly"},"name":"ignore_connector_faults","value":false},{"characteristics":{"datatype":"string","mutability":"ReadOnly"},"name":"master_pass_group_id","value":""},{"characteristics":{"datatype":"bool","mutability":"ReadOnly"},"name":"plug_in_timeout_enabled","value":false},{"characteristics":{"datatype":"bool","mutability":"ReadOnly"},"name":"prioritize_authorization_over_stopping_transaction","value":true},{"characteristics":{"datatype":"string","mutability":"ReadOnly"},"name":"selection_algorithm","value":"FindFirst"},{"characteristics":{"datatype":"bool","mutability":"ReadOnly"},"name":"stop_transaction_on_reswipe","value":true}],"main":[],"reservation":[]},"connections":{"evse_manager":[{"implementation_id":"evse_manager_1","module_id":"probe","requirement":{"id":"evse_manager"}},{"implementation_id":"evse_manager_2","module_id":"probe","requirement":{"id":"evse_manager","index":1}}],"token_provider":[{"implementation_id":"main","module_id":"token_provider_1","requirement":{"id":"token_provider"}}],"token_validator":[{"implementation_id":"main","module_id":"token_validator","requirement":{"id":"token_validator"}}]},"mapping":null,"module_id":"auth","module_name":"Auth","standalone":false,"telemetry_enabled":false}},"type":"Module"},"status":"Ok","status_info":"","type":"Get"},"msg_type":"ConfigurationResponse"}'''

ENV = ManagerEnv(module_id="auth", prefix="everest/", socket_path=None, host="localhost",
                 port=1883)


def answer(params: dict[str, Any] | None = None, **connections: list[tuple[str, str]]
           ) -> dict[str, Any]:
    """A module_config as the manager sends it, with our defaults and some overrides."""
    entries = [{"name": k, "value": v, "characteristics": {"datatype": "x",
                                                           "mutability": "ReadOnly"}}
               for k, v in sorted({"connection_timeout": 10, **(params or {})}.items())]
    conns = {"token_provider": [("rfid", "main")], "token_validator": [("validator", "main")],
             "evse_manager": [("evse_1", "evse")], **connections}
    return {"module_id": "auth", "configuration_parameters": {"!module": entries, "main": [],
                                                              "reservation": []},
            "connections": {req: [{"module_id": m, "implementation_id": i,
                                   "requirement": {"id": req, **({"index": n} if n else {})}}
                                  for n, (m, i) in enumerate(targets)]
                            for req, targets in conns.items()}}


# --- the environment -------------------------------------------------------------------


def test_environment_as_the_manager_sets_it() -> None:
    env = ManagerEnv.from_environ({"EV_MODULE": "auth", "EV_MQTT_EVEREST_PREFIX": "ev/",
                                   "EV_MQTT_BROKER_HOST": "10.0.0.2",
                                   "EV_MQTT_BROKER_PORT": "1884"})
    assert (env.module_id, env.prefix, env.host, env.port, env.socket_path) == (
        "auth", "ev/", "10.0.0.2", 1884, None)
    sock = ManagerEnv.from_environ({"EV_MODULE": "auth",
                                    "EV_MQTT_BROKER_SOCKET_PATH": "/run/mqtt.sock"})
    assert sock.socket_path == "/run/mqtt.sock" and sock.prefix == "everest/"


@pytest.mark.parametrize("environ, problem", [
    ({}, "EV_MODULE is not set"),
    ({"EV_MODULE": "a/b"}, "cannot be a module id"),
    ({"EV_MODULE": "auth", "EV_MQTT_BROKER_PORT": "x"}, "not a port number"),
    ({"EV_MODULE": "auth", "EV_MQTT_EVEREST_PREFIX": "a/#"}, "cannot be a topic prefix"),
])
def test_environment_that_no_manager_makes(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(EnvError, match=problem):
        ManagerEnv.from_environ(environ)


def test_everest_without_a_manager_exits_2_with_one_line(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EV_MODULE", raising=False)
    assert main(["--everest"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "EV_MODULE is not set" in err[0]


def test_the_configuration_request_is_the_frameworks() -> None:
    assert _encode(config_request("auth")) == (
        b'{"data":{"origin":"auth","request":{"type":"Module"},"type":"Get"},'
        b'"msg_type":"ConfigurationRequest"}')


# --- the answer -> the station -------------------------------------------------------------


def test_the_managers_answer_from_the_spec_fills_the_station(tmp_path: Path) -> None:
    module_config = module_config_of(SPEC_ANSWER, "auth")
    station = station_from_manager(module_config, ENV, tmp_path)
    assert station.module_id == "auth"
    assert station.config.selection_algorithm == SelectionAlgorithm.FindFirst
    assert station.config.connection_timeout == 10
    assert [str(c) for c in station.evse_managers] == ["probe/evse_manager_1",
                                                       "probe/evse_manager_2"]
    assert [str(c) for c in station.token_providers] == ["token_provider_1/main"]
    assert [str(c) for c in station.token_validators] == ["token_validator/main"]
    assert (station.mqtt.host, station.mqtt.port, station.mqtt.prefix) == (
        "localhost", 1883, "everest/")
    # every Auth key the answer carries is used, none silently dropped
    assert ignored_parameters(module_config) == []
    assert station.config.stop_transaction_on_reswipe is True
    assert station.reservation_store == tmp_path / ".state" / "auth-reservations.json"


def test_evse_order_is_the_requirement_index_not_the_name(tmp_path: Path) -> None:
    module_config = answer(evse_manager=[("z_evse", "evse"), ("a_evse", "evse")])
    module_config["connections"]["evse_manager"].reverse()  # as stored; index tells the order
    station = station_from_manager(module_config, ENV, tmp_path)
    assert [c.module_id for c in station.evse_managers] == ["z_evse", "a_evse"]


def test_our_extra_keys_go_where_the_station_file_puts_them(tmp_path: Path) -> None:
    params = {"token_validator_plugins": "[{plugin: allow_list, file: tokens.yaml}]",
              "token_provider_plugins": '[{"plugin": "stdin"}]',
              "reservation_store": "state/r.json", "log_level": "debug",
              "log_format": "json", "show_tokens": True}
    station = station_from_manager(answer(params), ENV, tmp_path)
    validators = station.token_validators
    assert isinstance(validators[0], BusConnection)  # the connected ones first
    assert isinstance(validators[1], PluginConnection) and validators[1].plugin == "allow_list"
    assert validators[1].options == {"file": "tokens.yaml"}
    assert [getattr(p, "plugin", None) for p in station.token_providers] == [None, "stdin"]
    assert station.reservation_store == tmp_path / "state" / "r.json"
    assert (station.logging.level, station.logging.format, station.logging.show_tokens) == (
        "debug", "json", True)


@pytest.mark.parametrize("params, key", [
    ({"selection_algorithm": "UserInput"}, "config_module.selection_algorithm"),
    ({"connection_timeout": 0}, "config_module.connection_timeout"),
    ({"token_validator_plugins": "plugin: allow_list"}, "config_module.token_validator_plugins"),
    ({"log_level": "loud"}, "config_module.log_level"),
])
def test_an_unusable_value_is_one_line_naming_the_everest_key(
        tmp_path: Path, params: dict[str, Any], key: str) -> None:
    with pytest.raises(StationError) as caught:
        station_from_manager(answer(params), ENV, tmp_path)
    text = str(caught.value)
    assert "\n" not in text and text.startswith("EVerest config of module 'auth': ")
    assert f": {key}:" in text, text


def test_a_plugins_own_problem_names_the_everest_key(tmp_path: Path) -> None:
    from auth_module.everest.settings import translate_error

    params = {"token_validator_plugins": "[{plugin: allow_list}]"}
    module_config = answer(params)
    station = station_from_manager(module_config, ENV, tmp_path)
    problem = station.error(station.token_validators[1].key_path + ".file", "required")
    assert translate_error(problem, module_config, ENV) == (
        "EVerest config of module 'auth': config_module.token_validator_plugins[0].file: "
        "required")


@pytest.mark.parametrize("payload, problem", [
    (b"not json", "not JSON"),
    (b'{"msg_type":"Var","data":{}}', "not a ConfigurationResponse"),
    (dump({"msg_type": "ConfigurationResponse", "data": {
        "status": "Error", "status_info": "Unknown origin module: auth", "response": None}}),
     "Unknown origin module: auth"),
    (dump({"msg_type": "ConfigurationResponse", "data": {
        "status": "Ok", "type": "Get", "response": {"type": "Module", "data": {
            "module_config": {"module_id": "other"}}}}}), "not for EV_MODULE='auth'"),
])
def test_an_answer_that_cannot_be_used(payload: bytes, problem: str) -> None:
    with pytest.raises(ManagerConfigError, match=problem):
        module_config_of(payload, "auth")


# --- the stand-in against the spec ------------------------------------------------------------


@needs_defs
def test_the_stand_in_builds_the_answer_byte_for_byte_as_the_spec() -> None:
    auth = yaml.safe_load((EVEREST_DEFS / "modules" / "Auth" / "manifest.yaml").read_text())
    config = {
        "auth": ModuleSpec("Auth", {"connection_timeout": 10, "selection_algorithm": "FindFirst"},
                           {"token_provider": [{"module_id": "token_provider_1",
                                                "implementation_id": "main"}],
                            "token_validator": [{"module_id": "token_validator",
                                                 "implementation_id": "main"}],
                            "evse_manager": [{"module_id": "probe",
                                              "implementation_id": "evse_manager_1"},
                                             {"module_id": "probe",
                                              "implementation_id": "evse_manager_2"}]}),
        "token_provider_1": ModuleSpec("DummyTokenProviderManual"),
        "token_validator": ModuleSpec("DummyTokenValidator"),
        "probe": ModuleSpec("ProbeModule", mapping={"implementations": {
            "evse_manager_1": {"evse": 1}, "evse_manager_2": {"evse": 2}}}),
    }
    assert dump(build_config_answer(config, {"Auth": auth}, "auth")) == SPEC_ANSWER


# --- the module folder ------------------------------------------------------------------------


@needs_defs
def test_the_manifest_is_valid_for_everest() -> None:
    schema = yaml.safe_load((EVEREST_DEFS / "schemas" / "manifest.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(everest_manifest())


@needs_defs
def test_the_manifest_has_every_auth_key_as_everest_declares_it() -> None:
    upstream = yaml.safe_load((EVEREST_DEFS / "modules" / "Auth" / "manifest.yaml").read_text())
    ours = everest_manifest()
    for key, entry in upstream["config"].items():
        assert key in ours["config"], f"EVerest's Auth key {key} is missing"
        assert ours["config"][key]["type"] == entry["type"], key
        assert ours["config"][key].get("default") == entry.get("default"), key
        assert ("default" in ours["config"][key]) == ("default" in entry), key
    assert ours["provides"] == {k: {"description": ours["provides"][k]["description"],
                                    "interface": v["interface"]}
                                for k, v in upstream["provides"].items()}
    assert ours["requires"] == upstream["requires"]
    for key, entry in EXTRA_CONFIG.items():  # the extras cannot make a config invalid
        assert key not in upstream["config"] and "default" in entry


def test_everest_module_writes_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    assert main(["everest-module", str(tmp_path / "modules")]) == 0
    folder = tmp_path / "modules" / "PyAuth"
    assert yaml.safe_load((folder / "manifest.yaml").read_text()) == everest_manifest()
    mode = (folder / "module.py").stat().st_mode
    assert mode & stat.S_IXUSR
    text = (folder / "module.py").read_text()
    compile(text, "module.py", "exec")
    assert repr(os.path.abspath(sys.executable)) in text
    assert "module: PyAuth" in capsys.readouterr().out
    assert main(["everest-module", str(tmp_path), "--name", "MyAuth"]) == 0
    assert (tmp_path / "MyAuth" / "module.py").is_file()


def test_everest_module_refuses_a_bad_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    assert main(["everest-module", str(tmp_path), "--name", "../x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--name" in err[0]


def test_module_py_records_the_interpreter_unresolved() -> None:
    text = module_py("/opt/venv/bin/python3")
    assert "RECORDED_PYTHON = '/opt/venv/bin/python3'" in text
    assert '"-P", "-m", "auth_module", "--everest"' in text


def test_the_stand_in_flags_what_would_kill_a_cpp_receiver() -> None:
    from tests.integration.everest_manager import envelope_problem

    good = {"type": "result", "data": {"id": "1", "origin": "auth", "error": {
        "__everest__error_type": "NotReady", "__everest__error_msg": "starting"}}}
    assert envelope_problem("CmdResult", good) is None
    old = {"type": "result", "data": {"id": "1", "origin": "auth",
                                      "error": {"event": "NotReady", "msg": "starting"}}}
    assert envelope_problem("CmdResult", old) is not None
    assert envelope_problem("Var", {"value": 1}) is not None
    assert envelope_problem("Cmd", {"id": "1", "args": {}}) is not None
    assert envelope_problem("RaiseError", {"type": "evse_manager/Inoperative"}) is not None
