"""Plugins found through entry points, and every way of failing reported in one line."""

from __future__ import annotations


import sys
import threading
import types
from collections.abc import Callable
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field
from structlog.testing import capture_logs

from auth_module.bus_ports import BusPorts
from auth_module.plugins import loader
from auth_module.plugins.base import PluginContext
from auth_module.plugins.loader import (
    PROVIDER_GROUP,
    VALIDATOR_GROUP,
    GuardedProvider,
    GuardedValidator,
    available,
    build_provider,
    build_validator,
)
from auth_module.station import PluginConnection, Station, StationError, load_station
from auth_module.types import (
    AuthorizationStatus,
    AuthorizationType,
    IdToken,
    IdTokenType,
    ProvidedIdToken,
    ValidationResult,
)

pytestmark = pytest.mark.timeout(10)


def token(value: str = "AA01") -> ProvidedIdToken:
    return ProvidedIdToken(id_token=IdToken(value=value, type=IdTokenType.ISO14443),
                           authorization_type=AuthorizationType.RFID)


def station_with(tmp_path: Path, validators: list[dict[str, Any]],
                 providers: list[dict[str, Any]] | None = None) -> Station:
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump({"connections": {
        "token_provider": providers or [{"module_id": "reader", "implementation_id": "main"}],
        "token_validator": validators,
        "evse_manager": [{"module_id": "evse_manager_1", "implementation_id": "evse"}],
    }}))
    return load_station(path)


def plugins(entries: list[Any]) -> list[PluginConnection]:
    return [e for e in entries if isinstance(e, PluginConnection)]


# --- a third-party package, as far as entry points can tell ------------------------------------


class VendorOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout_s: float = Field(default=1.0, gt=0)
    accept: list[str] = []


class VendorValidator:
    def __init__(self, options: VendorOptions, context: PluginContext) -> None:
        self.name = "vendor"
        self.options, self.context = options, context
        self.closed = False

    def validate(self, tok: ProvidedIdToken) -> Any:
        if tok.id_token.value == "BOOM":
            raise RuntimeError("backend said no\nand more")
        if tok.id_token.value == "DICT":
            return {"authorization_status": "Blocked"}
        ok = tok.id_token.value in self.options.accept
        return ValidationResult(authorization_status=AuthorizationStatus.Accepted if ok
                                else AuthorizationStatus.Invalid)

    def close(self) -> None:
        self.closed = True


class VendorProvider:
    name = "vendor-reader"

    def __init__(self, fail_start: bool) -> None:
        self.fail_start = fail_start
        self.on_token: Callable[[Any], None] | None = None

    def start(self, on_token: Callable[[Any], None]) -> None:
        if self.fail_start:
            raise OSError("no such reader")
        self.on_token = on_token

    def close(self) -> None:
        raise RuntimeError("close failed")


def _vendor_validator(options: dict[str, Any], context: PluginContext) -> VendorValidator:
    return VendorValidator(VendorOptions.model_validate(options), context)


def _vendor_provider(options: dict[str, Any], context: PluginContext) -> VendorProvider:
    return VendorProvider(bool(options.get("fail_start")))


def _exploding(options: dict[str, Any], context: PluginContext) -> Any:
    raise RuntimeError("cannot reach\nthe licence server")


def _not_a_validator(options: dict[str, Any], context: PluginContext) -> Any:
    return object()


@pytest.fixture
def vendor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installs "vendor_auth" the way pip would: a module plus entry points."""
    module = types.ModuleType("vendor_auth")
    module.create_validator = _vendor_validator  # type: ignore[attr-defined]
    module.create_provider = _vendor_provider  # type: ignore[attr-defined]
    module.exploding = _exploding  # type: ignore[attr-defined]
    module.not_a_validator = _not_a_validator  # type: ignore[attr-defined]
    module.NOT_CALLABLE = 42  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vendor_auth", module)
    extra = {
        VALIDATOR_GROUP: [
            EntryPoint("vendor", "vendor_auth:create_validator", VALIDATOR_GROUP),
            EntryPoint("exploding", "vendor_auth:exploding", VALIDATOR_GROUP),
            EntryPoint("hollow", "vendor_auth:not_a_validator", VALIDATOR_GROUP),
            EntryPoint("constant", "vendor_auth:NOT_CALLABLE", VALIDATOR_GROUP),
            EntryPoint("uninstalled", "vendor_auth_gone.plugin:create", VALIDATOR_GROUP),
        ],
        PROVIDER_GROUP: [EntryPoint("vendor_reader", "vendor_auth:create_provider",
                                    PROVIDER_GROUP)],
    }
    real = loader.entry_points

    def entry_points(*, group: str) -> list[EntryPoint]:
        return [*real(group=group), *extra.get(group, [])]

    monkeypatch.setattr(loader, "entry_points", entry_points)


# --- discovery ----------------------------------------------------------------------------------


def test_built_in_plugins_are_entry_points() -> None:
    assert {"allow_list", "ocpp16"} <= set(available(VALIDATOR_GROUP))
    assert {"serial", "hid", "stdin"} <= set(available(PROVIDER_GROUP))
    assert available(VALIDATOR_GROUP)["allow_list"].value == "auth_module.plugins.allow_list:create"


def test_built_in_allow_list_from_a_station_file(tmp_path: Path) -> None:
    (tmp_path / "tokens.yaml").write_text("tokens:\n  - id_token: AA01\n")
    station = station_with(tmp_path, [{"plugin": "allow_list", "file": "tokens.yaml"}])
    v = build_validator(plugins(station.token_validators)[0], station)
    assert isinstance(v, GuardedValidator)
    assert v.validate(token("aa01")).authorization_status == AuthorizationStatus.Accepted
    assert v.validate(token("ZZ")).authorization_status == AuthorizationStatus.Unknown


def test_a_third_party_plugin_is_found_through_its_entry_point(tmp_path: Path,
                                                               vendor: None) -> None:
    station = station_with(tmp_path, [
        {"module_id": "validator", "implementation_id": "main"},
        {"plugin": "vendor", "timeout_s": 3, "accept": ["AA01"]},
    ])
    entry = plugins(station.token_validators)[0]
    v = build_validator(entry, station)
    assert v.name == "vendor"
    inner = v.plugin  # type: ignore[attr-defined]
    assert inner.options.timeout_s == 3
    assert inner.context.base_dir == tmp_path  # relative paths: from the station file
    assert v.validate(token("AA01")).authorization_status == AuthorizationStatus.Accepted
    assert v.validate(token("BB02")).authorization_status == AuthorizationStatus.Invalid
    assert v.validate(token("DICT")).authorization_status == AuthorizationStatus.Blocked
    v.close()
    assert inner.closed


# --- failing at start-up: one line naming the key -------------------------------------------------


def one_line(err: pytest.ExceptionInfo[StationError]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_unknown_plugin_names_it_and_the_known_ones(tmp_path: Path) -> None:
    station = station_with(tmp_path, [{"plugin": "allow_lst", "file": "x"}])
    with pytest.raises(StationError) as err:
        build_validator(plugins(station.token_validators)[0], station)
    text = one_line(err)
    assert text.startswith(f"{tmp_path / 'station.yaml'}: connections.token_validator[0]: ")
    assert "unknown validator plugin 'allow_lst'" in text
    assert "installed: allow_list, ocpp16" in text


def test_unknown_provider_plugin(tmp_path: Path) -> None:
    station = station_with(tmp_path, [{"module_id": "v", "implementation_id": "main"}],
                           providers=[{"module_id": "reader", "implementation_id": "main"},
                                      {"plugin": "nfc"}])
    with pytest.raises(StationError) as err:
        build_provider(plugins(station.token_providers)[0], station)
    text = one_line(err)
    assert "connections.token_provider[1]: unknown token provider plugin 'nfc'" in text
    assert "hid, pcsc, pn532, serial, stdin" in text


def test_bad_option_names_the_key(tmp_path: Path, vendor: None) -> None:
    station = station_with(tmp_path, [
        {"module_id": "validator", "implementation_id": "main"},
        {"plugin": "vendor", "timeout_s": -2},
    ])
    with pytest.raises(StationError) as err:
        build_validator(plugins(station.token_validators)[0], station)
    text = one_line(err)
    assert "connections.token_validator[1].timeout_s: " in text
    assert "greater than 0" in text and "(got -2)" in text


def test_unknown_option_names_it_and_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "tokens.yaml").write_text("tokens: []\n")
    station = station_with(tmp_path, [{"plugin": "allow_list", "fle": "tokens.yaml"}])
    with pytest.raises(StationError) as err:
        build_validator(plugins(station.token_validators)[0], station)
    text = one_line(err)
    assert "connections.token_validator[0].fle: unknown option" in text
    assert "known options: file, format, reload_interval_s" in text


def test_missing_option(tmp_path: Path) -> None:
    station = station_with(tmp_path, [{"module_id": "v", "implementation_id": "main"}],
                           providers=[{"plugin": "serial", "protocol": "lines"}])
    with pytest.raises(StationError) as err:
        build_provider(plugins(station.token_providers)[0], station)
    assert "connections.token_provider[0].port: required option is missing" in one_line(err)


def test_common_provider_options_are_checked(tmp_path: Path) -> None:
    station = station_with(tmp_path, [{"module_id": "v", "implementation_id": "main"}],
                           providers=[{"plugin": "stdin", "token_type": "RFID"}])
    with pytest.raises(StationError) as err:
        build_provider(plugins(station.token_providers)[0], station)
    assert "connections.token_provider[0].token_type: " in one_line(err)


def test_plugin_error_names_its_option(tmp_path: Path) -> None:
    station = station_with(tmp_path, [{"plugin": "allow_list", "file": "missing.csv"}])
    with pytest.raises(StationError) as err:
        build_validator(plugins(station.token_validators)[0], station)
    text = one_line(err)
    assert "connections.token_validator[0].file: " in text and "file not found" in text


@pytest.mark.parametrize(("name", "expected"), [
    ("exploding", "validator plugin 'exploding' failed to load: RuntimeError: cannot reach "
                  "the licence server"),
    ("hollow", "validator plugin 'hollow' returned an object of type object that has no "
               "validate() or close()"),
    ("constant", "entry point vendor_auth:NOT_CALLABLE is not a factory"),
    ("uninstalled", "validator plugin 'uninstalled' cannot be imported: ModuleNotFoundError"),
])
def test_factory_failures_are_one_line(tmp_path: Path, vendor: None, name: str,
                                       expected: str) -> None:
    station = station_with(tmp_path, [{"plugin": name}])
    with pytest.raises(StationError) as err:
        build_validator(plugins(station.token_validators)[0], station)
    text = one_line(err)
    assert text.startswith(f"{tmp_path / 'station.yaml'}: connections.token_validator[0]: ")
    assert expected in text


def test_missing_optional_dependency_says_what_to_install(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "serial", None)
    station = station_with(tmp_path, [{"module_id": "v", "implementation_id": "main"}],
                           providers=[{"plugin": "serial", "port": "/dev/serial0"}])
    with pytest.raises(StationError) as err:
        build_provider(plugins(station.token_providers)[0], station)
    assert "pip install 'auth-module[serial]'" in one_line(err)


# --- failing while running: logged in one line, the module carries on ---------------------------


def validate_and_wait(ports: BusPorts, tok: ProvidedIdToken) -> list[Any]:
    """BusPorts.validate calls back (here on the plugin's pool thread); wait for it."""
    done = threading.Event()
    answers: list[Any] = []

    def on_results(results: list[Any]) -> None:
        answers.extend(results)
        done.set()

    ports.validate(tok, on_results)
    assert done.wait(5.0), "validate never called back"
    return answers


def test_a_validator_that_raises_counts_as_unknown(tmp_path: Path, vendor: None) -> None:
    station = station_with(tmp_path, [{"plugin": "vendor", "accept": ["AA01"]}])
    v = build_validator(plugins(station.token_validators)[0], station)
    ports = BusPorts(bus=None, evse_managers=[], validators=[v],  # type: ignore[arg-type]
                     command_timeout_s=1.0, validator_timeout_s=2.0)
    try:
        with capture_logs() as logs:
            [result] = validate_and_wait(ports, token("BOOM"))
            [ok] = validate_and_wait(ports, token("AA01"))
    finally:
        ports.close()
    assert result.authorization_status == AuthorizationStatus.Unknown
    assert ok.authorization_status == AuthorizationStatus.Accepted
    [warning] = [e for e in logs if e["log_level"] == "warning"]
    assert warning["validator"] == "vendor"
    assert "RuntimeError: backend said no and more" in warning["reason"]  # one line


def test_a_provider_that_fails_is_logged_and_the_module_carries_on(tmp_path: Path,
                                                                   vendor: None) -> None:
    station = station_with(tmp_path, [{"module_id": "v", "implementation_id": "main"}],
                           providers=[{"plugin": "vendor_reader", "fail_start": True},
                                      {"plugin": "vendor_reader"}])
    failing, working = (build_provider(e, station) for e in plugins(station.token_providers))
    assert isinstance(failing, GuardedProvider)
    got: list[ProvidedIdToken] = []

    def on_token(t: ProvidedIdToken) -> None:
        if t.id_token.value == "BAD":
            raise ValueError("handler broke")
        got.append(t)

    with capture_logs() as logs:
        failing.start(on_token)  # raises inside; not here
        working.start(on_token)
        inner = working.plugin  # type: ignore[attr-defined]
        inner.on_token({"id_token": {"value": "AA01", "type": "ISO14443"},
                        "authorization_type": "RFID"})  # a dict is converted
        inner.on_token(token("BAD"))
        inner.on_token({"id_token": "not a token"})
        failing.close()
        working.close()
        inner.on_token(token("AFTER_CLOSE"))
    assert [t.id_token.value for t in got] == ["AA01"]
    problems = [e["event"] for e in logs if e["log_level"] in ("warning", "error")]
    assert len(problems) == 5  # start failed, 2 tokens dropped, 2 closes failed
    assert all("\n" not in p for p in problems)
    assert any("failed to start" in p and "no such reader" in p for p in problems)


def test_the_raspberry_pi_station_file_builds() -> None:
    root = Path(__file__).resolve().parents[2]
    station = load_station(root / "config" / "raspberry-pi.yaml")
    [reader] = [build_provider(e, station) for e in plugins(station.token_providers)]
    [allow] = [build_validator(e, station) for e in plugins(station.token_validators)]
    assert reader.plugin.kind == "pn532"  # type: ignore[attr-defined]
    assert reader.plugin.options.port == "/dev/serial0"  # type: ignore[attr-defined]
    accepted = allow.validate(token("VALID_RFID_1"))
    assert accepted.authorization_status == AuthorizationStatus.Accepted
    assert len(station.evse_managers) in (1, 2)
    assert len(station.token_validators) == 2  # the allow list, then a bus validator
