"""The station file: the contract's examples load as written; every mistake is one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from auth_module.station import (
    BusConnection,
    PluginConnection,
    Station,
    StationError,
    load_station,
)
from auth_module.types import AuthorizationStatus, SelectionAlgorithm

pytestmark = pytest.mark.timeout(10)

ROOT = Path(__file__).resolve().parents[2]

# CONTRACT.md section 2, exactly as written there (comments included).
CONTRACT_EXAMPLE = """\
mqtt:
  host: 127.0.0.1          # default 127.0.0.1
  port: 1883               # default 1883
  prefix: everest/         # topic prefix, default "everest/"
module_id: auth            # this module's id on the bus, default "auth"
config:                    # the keys of EVerest's Auth manifest, same names, same defaults
  selection_algorithm: PlugEvents        # PlugEvents | PlugEventsLIFO | FindFirst (UserInput: refuse with a clear error)
  connection_timeout: 30                 # integer seconds, >= 1
  master_pass_group_id: ""
  prioritize_authorization_over_stopping_transaction: true
  ignore_connector_faults: false
  plug_in_timeout_enabled: false
  stop_transaction_on_reswipe: true      # false: a re-presented token (or one of its group) reports UsedToReauthorize
connections:               # the modules this one talks to, as in an EVerest config
  token_provider:
    - module_id: rfid_reader
      implementation_id: main
  token_validator:
    - module_id: validator
      implementation_id: main
  evse_manager:            # listed in evse id order: the first entry is evse id 1, ...
    - module_id: evse_manager_1
      implementation_id: evse
    - module_id: evse_manager_2
      implementation_id: evse
"""

# CONTRACT.md section 7, the connections example, exactly as written there.
CONTRACT_PLUGINS = """\
connections:
  token_validator:
    - plugin: allow_list
      file: tokens.yaml            # relative paths are relative to the station file
    - plugin: ocpp16
      csms_url: ws://127.0.0.1:9000/ocpp   # the charge point id is appended as the last path segment
      charge_point_id: CP001
      timeout_s: 5                 # longest wait for the CSMS before falling back
      local_authorize_offline: true
      allow_offline_tx_for_unknown_id: false
    - module_id: validator
      implementation_id: main
  token_provider:
    - plugin: serial
      port: /dev/ttyAMA0
      protocol: rdm6300            # or: lines
    - plugin: hid
      device: /dev/input/by-id/usb-reader-event-kbd
    - plugin: stdin
"""

MINIMAL_CONNECTIONS = """\
connections:
  token_provider: [{module_id: rfid_reader, implementation_id: main}]
  token_validator: [{module_id: validator, implementation_id: main}]
  evse_manager: [{module_id: evse_manager_1, implementation_id: evse}]
"""


def _write(tmp_path: Path, text: str, name: str = "station.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _example() -> dict[str, Any]:
    return yaml.safe_load(CONTRACT_EXAMPLE)


# --- what must load -------------------------------------------------------------------------


def test_contract_example_loads_exactly(tmp_path: Path) -> None:
    station = load_station(_write(tmp_path, CONTRACT_EXAMPLE))
    assert station.mqtt.host == "127.0.0.1"
    assert station.mqtt.port == 1883
    assert station.mqtt.prefix == "everest/"
    assert station.module_id == "auth"
    assert station.config.selection_algorithm is SelectionAlgorithm.PlugEvents
    assert station.config.connection_timeout == 30
    assert station.config.master_pass_group_id == ""
    assert station.config.prioritize_authorization_over_stopping_transaction is True
    assert station.config.ignore_connector_faults is False
    assert station.config.plug_in_timeout_enabled is False
    assert station.config.stop_transaction_on_reswipe is True
    assert [str(c) for c in station.token_providers] == ["rfid_reader/main"]
    assert [str(c) for c in station.token_validators] == ["validator/main"]
    assert [(c.module_id, c.implementation_id) for c in station.evse_managers] == [
        ("evse_manager_1", "evse"),
        ("evse_manager_2", "evse"),
    ]
    assert [c.key_path for c in station.evse_managers] == [
        "connections.evse_manager[0]",
        "connections.evse_manager[1]",
    ]
    assert station.base_dir == tmp_path.resolve()


@pytest.mark.parametrize("algorithm", ["PlugEvents", "PlugEventsLIFO", "FindFirst"])
@pytest.mark.parametrize("reswipe", [True, False])
def test_contract_values_of_the_2026_keys_load(tmp_path: Path, algorithm: str, reswipe: bool) -> None:
    """``selection_algorithm: PlugEventsLIFO`` and ``stop_transaction_on_reswipe`` as §2 writes them."""
    text = CONTRACT_EXAMPLE.replace("selection_algorithm: PlugEvents ", f"selection_algorithm: {algorithm} ")
    text = text.replace("stop_transaction_on_reswipe: true ",
                        f"stop_transaction_on_reswipe: {str(reswipe).lower()} ")
    station = load_station(_write(tmp_path, text))
    assert station.config.selection_algorithm is SelectionAlgorithm(algorithm)
    assert station.config.stop_transaction_on_reswipe is reswipe


def test_defaults_when_only_connections_given(tmp_path: Path) -> None:
    station = load_station(_write(tmp_path, MINIMAL_CONNECTIONS))
    assert (station.mqtt.host, station.mqtt.port, station.mqtt.prefix) == ("127.0.0.1", 1883, "everest/")
    assert station.module_id == "auth"
    assert station.config.selection_algorithm is SelectionAlgorithm.FindFirst
    assert station.config.connection_timeout == 30
    assert station.logging.level == "info" and station.logging.format == "auto"
    assert station.logging.show_tokens is False
    assert station.timeouts.validator_s == 5.0 and station.timeouts.command_s == 5.0
    assert station.reservation_store == tmp_path.resolve() / ".state" / "auth-reservations.json"


def test_empty_sections_mean_defaults(tmp_path: Path) -> None:
    text = "mqtt:\nconfig:\n  # selection_algorithm: PlugEvents\nlogging:\n" + MINIMAL_CONNECTIONS
    station = load_station(_write(tmp_path, text))
    assert station.mqtt.port == 1883
    assert station.config.selection_algorithm is SelectionAlgorithm.FindFirst


def test_extras(tmp_path: Path) -> None:
    text = (
        "module_id: auth_2\n"
        "reservations: {store: state/res.json}\n"
        "logging: {level: DEBUG, format: json, show_tokens: true}\n"
        "timeouts: {validator_s: 0.5, command_s: 2}\n" + MINIMAL_CONNECTIONS
    )
    station = load_station(_write(tmp_path, text))
    assert station.reservation_store == tmp_path.resolve() / "state" / "res.json"
    assert station.logging.level == "debug" and station.logging.format == "json"
    assert station.logging.show_tokens is True
    assert station.timeouts.validator_s == 0.5 and station.timeouts.command_s == 2.0
    default_store = load_station(_write(tmp_path, "module_id: auth_2\n" + MINIMAL_CONNECTIONS, "b.yaml"))
    assert default_store.reservation_store.name == "auth_2-reservations.json"


def test_plugins_accepted_for_providers_and_validators_in_order(tmp_path: Path) -> None:
    text = CONTRACT_PLUGINS + "  evse_manager:\n    - module_id: evse_manager_1\n      implementation_id: evse\n"
    station = load_station(_write(tmp_path, text))
    validators = station.token_validators
    assert [type(v) for v in validators] == [PluginConnection, PluginConnection, BusConnection]
    assert validators[0].plugin == "allow_list" and validators[0].options == {"file": "tokens.yaml"}
    assert validators[1].plugin == "ocpp16"
    assert validators[1].options == {
        "csms_url": "ws://127.0.0.1:9000/ocpp",
        "charge_point_id": "CP001",
        "timeout_s": 5,
        "local_authorize_offline": True,
        "allow_offline_tx_for_unknown_id": False,
    }
    assert [p.plugin for p in station.token_providers] == ["serial", "hid", "stdin"]
    assert station.token_providers[2].options == {}
    assert station.token_providers[1].key_path == "connections.token_provider[1]"
    assert station.resolve(validators[0].options["file"]) == tmp_path.resolve() / "tokens.yaml"
    err = station.error(f"{validators[0].key_path}.file", "file not found")
    assert str(err) == f"{tmp_path / 'station.yaml'}: connections.token_validator[0].file: file not found"


def test_example_config_files() -> None:
    demo = load_station(ROOT / "config" / "demo.yaml")
    assert [str(c) for c in demo.evse_managers] == ["evse_manager_1/evse", "evse_manager_2/evse"]
    assert [str(c) for c in demo.token_providers] == ["rfid_reader/main"]
    assert [str(c) for c in demo.token_validators] == ["validator/main"]
    assert demo.config.selection_algorithm is SelectionAlgorithm.PlugEvents
    assert demo.config.connection_timeout == 15
    assert (demo.mqtt.prefix, demo.mqtt.port) == ("everest/", 1883)

    single = load_station(ROOT / "config" / "single-evse.yaml")
    assert len(single.evse_managers) == 1
    assert single.config.selection_algorithm is SelectionAlgorithm.FindFirst


def test_demo_tokens_file() -> None:
    tokens = yaml.safe_load((ROOT / "config" / "tokens.yaml").read_text())["tokens"]
    by_id = {t["id_token"]: t for t in tokens}
    assert set(by_id) == {"VALID_RFID_1", "VALID_RFID_2", "VALID_RFID_3", "BLOCKED_RFID", "MASTER_RFID"}
    assert by_id["VALID_RFID_1"]["parent_id_token"] == "PARENT_RFID"
    assert by_id["VALID_RFID_3"]["parent_id_token"] == "PARENT_RFID"
    assert "parent_id_token" not in by_id["VALID_RFID_2"]
    assert by_id["BLOCKED_RFID"]["status"] == "Blocked"
    assert by_id["MASTER_RFID"]["parent_id_token"] == "MASTER_GROUP"
    for token in tokens:
        assert set(token) <= {"id_token", "status", "expiry", "parent_id_token", "evse_ids"}
        AuthorizationStatus(token.get("status", "Accepted"))


# --- what must be refused, with one line naming file and key ------------------------------------


def _set(path: str, value: Any):
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[int(last) if last.isdigit() else last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return change


_DELETE = object()

BAD_VALUES = [
    ("config.connection_timeout", 0, "config.connection_timeout: must be an integer >= 1 (got 0)"),
    ("config.connection_timeout", -5, "config.connection_timeout: must be an integer >= 1 (got -5)"),
    ("config.connection_timeout", 1.5, "config.connection_timeout: must be an integer >= 1 (got 1.5)"),
    ("config.connection_timeout", True, "config.connection_timeout: must be an integer >= 1 (got true)"),
    ("config.connection_timeout", "30", "config.connection_timeout: must be an integer >= 1 (got '30')"),
    (
        "config.selection_algorithm",
        "UserInput",
        "config.selection_algorithm: UserInput is not implemented; use PlugEvents, PlugEventsLIFO or FindFirst",
    ),
    ("config.selection_algorithm", "Random", "config.selection_algorithm: must be PlugEvents, PlugEventsLIFO or FindFirst (got 'Random')"),
    ("config.ignore_connector_faults", "no", "config.ignore_connector_faults: must be true or false (got 'no')"),
    ("config.plug_in_timeout_enabled", 1, "config.plug_in_timeout_enabled: must be true or false (got 1)"),
    ("config.stop_transaction_on_reswipe", "no",
     "config.stop_transaction_on_reswipe: must be true or false (got 'no')"),
    ("config.master_pass_group_id", 42, "config.master_pass_group_id: must be a string (got 42)"),
    ("config.master_pass_group_id", "G" * 37, "config.master_pass_group_id: must be at most 36 characters (got 37)"),
    ("mqtt.port", 0, "mqtt.port: must be an integer between 1 and 65535 (got 0)"),
    ("mqtt.port", 65536, "mqtt.port: must be an integer between 1 and 65535 (got 65536)"),
    ("mqtt.port", "1883", "mqtt.port: must be an integer between 1 and 65535 (got '1883')"),
    ("mqtt.host", "", "mqtt.host: must be a host name or address (got '')"),
    ("mqtt.prefix", "everest/#", "mqtt.prefix: must be a topic prefix without '+' or '#'"),
    ("mqtt", "localhost", "mqtt: must be a mapping (got 'localhost')"),
    ("module_id", "a/b", "module_id: must be a non-empty name without '/', '+', '#' or spaces (got 'a/b')"),
    ("module_id", "", "module_id: must be a non-empty name"),
    ("config.foo", 1, "config: unknown key 'foo'"),
    ("foo", 1, "unknown key 'foo'"),
    ("mqtt.user", "x", "mqtt: unknown key 'user'"),
    ("connections.evse_manager", [], "connections.evse_manager: must list at least 1 entry (got 0)"),
    ("connections.token_provider", [], "connections.token_provider: must list at least 1 entry (got 0)"),
    ("connections.token_validator", [], "connections.token_validator: must list at least 1 entry (got 0)"),
    ("connections.evse_manager", _DELETE, "connections.evse_manager: required key is missing"),
    ("connections", _DELETE, "connections: required key is missing"),
    ("connections.evse_manager", {"module_id": "e"}, "connections.evse_manager: must be a list (got a mapping)"),
    ("connections.evse_manager.0.implementation_id", _DELETE, "connections.evse_manager[0].implementation_id: required key is missing"),
    ("connections.evse_manager.1.colour", "red", "connections.evse_manager[1]: unknown key 'colour'"),
    ("connections.evse_manager.1.module_id", 7, "connections.evse_manager[1].module_id: must be a string (got 7)"),
    ("connections.evse_manager.1", "evse_manager_2", "connections.evse_manager[1]: must be a mapping (got 'evse_manager_2')"),
    (
        "connections.evse_manager.1",
        {"module_id": "evse_manager_1", "implementation_id": "evse"},
        "connections.evse_manager[1]: evse_manager_1/evse is listed twice (also at [0])",
    ),
    (
        "connections.evse_manager.1",
        {"plugin": "fake_evse"},
        "connections.evse_manager[1]: in-process plugins are only allowed under token_provider and token_validator",
    ),
    ("connections.token_validator.0", {"plugin": ""}, "connections.token_validator[0].plugin: must be a non-empty name"),
    ("connections.token_provider.0", {"implementation_id": "main"}, "connections.token_provider[0].module_id: required key is missing"),
    ("logging", {"level": "loud"}, "logging.level: must be one of"),
    ("logging", {"format": "xml"}, "logging.format: must be one of"),
    ("timeouts", {"validator_s": 0}, "timeouts.validator_s: must be a number > 0 (got 0)"),
    ("timeouts", {"command_s": "5"}, "timeouts.command_s: must be a number > 0 (got '5')"),
    ("reservations", {"store": 5}, "reservations.store: must be a string (got 5)"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_VALUES, ids=[f"{k}={v!r}"[:60] for k, v, _ in BAD_VALUES])
def test_bad_values_are_one_line_naming_file_and_key(tmp_path: Path, key: str, value: Any, expected: str) -> None:
    doc = _example()
    _set(key, value)(doc)
    path = _write(tmp_path, yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(StationError) as caught:
        load_station(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert message[len(f"{path}: ") :].startswith(expected), message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mqtt:\n  host: [a\n", "line 3, column 1: invalid YAML"),
        ("mqtt:\n  port: 1: 2\n", "line 2, column 10: invalid YAML: mapping values are not allowed here"),
        ("mqtt:\n  port: 1\n  port: 2\n", "line 3, column 3: invalid YAML: duplicate key 'port'"),
        ("\tmqtt: 1\n", "line 1, column 1: invalid YAML"),
        ("", "top level must be a mapping of keys (got an empty file)"),
        ("# only a comment\n", "top level must be a mapping of keys (got an empty file)"),
        ("- a\n- b\n", "top level must be a mapping of keys (got a list)"),
        ("just text\n", "top level must be a mapping of keys (got a single value 'just text')"),
        ("1: x\n", "unknown key 1"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(StationError) as caught:
        load_station(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message == f"{path}: {expected}" or message.startswith(f"{path}: {expected}"), message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StationError, match=r"nope\.yaml: file not found$"):
        load_station(tmp_path / "nope.yaml")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(StationError, match="is a directory"):
        load_station(tmp_path)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, CONTRACT_EXAMPLE)

    def denied(self: Path, *args: Any, **kwargs: Any) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(StationError) as caught:
        load_station(path)
    assert str(caught.value) == f"{path}: cannot read: Permission denied"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "station.yaml"
    path.write_bytes(b"mqtt:\n  host: \xff\xfe\n")
    with pytest.raises(StationError, match="cannot read: not UTF-8 text"):
        load_station(path)


def test_error_names_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "foo: 1\n" + MINIMAL_CONNECTIONS)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StationError) as caught:
        load_station("station.yaml")
    assert str(caught.value) == "station.yaml: unknown key 'foo'"


def test_station_is_immutable(tmp_path: Path) -> None:
    station = load_station(_write(tmp_path, CONTRACT_EXAMPLE))
    assert isinstance(station, Station)
    with pytest.raises(Exception):
        station.config.connection_timeout = 5  # type: ignore[misc]
