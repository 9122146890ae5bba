"""EVerest's manager's answer → the same :class:`Station` a station file gives.

The answer (EVEREST-MANAGER.md §c) carries the module's config as
``configuration_parameters["!module"]`` (every manifest key, defaults filled, as
``{"name", "value", "characteristics"}``) and its connections as ``connections``
(``{requirement: [{"module_id", "implementation_id", "requirement": {"id", "index"?}}]}``).
Both are rewritten into a station file's shape and checked by the one station model
(:func:`auth_module.station.station_from_data`): the Auth keys go to ``config``, our
extra keys (:data:`EXTRA_CONFIG`) to their station sections, the broker comes from the
environment. Errors name the key as the EVerest config spells it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from ..station import Station, StationConfig, StationError, station_from_data
from .env import ManagerEnv

__all__ = [
    "EXTRA_CONFIG",
    "ManagerConfigError",
    "ignored_parameters",
    "module_config_of",
    "station_from_manager",
    "translate_error",
]


class ManagerConfigError(Exception):
    """The answer cannot be used; ``str()`` is one line for the log."""


#: Config keys beyond EVerest's Auth keys, for what only this module has. All optional
#: (the manager refuses a config that lacks a key without default); written into the
#: generated manifest as they are here.
EXTRA_CONFIG: dict[str, dict[str, Any]] = {
    "token_provider_plugins": {
        "description": (
            "In-process token providers (card readers), used beside the connected token "
            "providers: a YAML or JSON list of {plugin: NAME, OPTION: VALUE, ...} as in a "
            "station file, e.g. '[{plugin: pcsc}]'. Empty: none."),
        "type": "string",
        "default": "",
    },
    "token_validator_plugins": {
        "description": (
            "In-process token validators (allow_list, ocpp16, ...), consulted after the "
            "connected token validators, in the order listed: a YAML or JSON list of "
            "{plugin: NAME, OPTION: VALUE, ...}. Relative file paths are relative to this "
            "module's folder. Empty: none."),
        "type": "string",
        "default": "",
    },
    "reservation_store": {
        "description": (
            "File that keeps reservations across restarts. Empty: "
            ".state/<module id>-reservations.json in this module's folder; relative paths "
            "are relative to that folder."),
        "type": "string",
        "default": "",
    },
    "log_level": {
        "description": "Lowest level this module logs: debug, info, warning, error or critical.",
        "type": "string",
        "enum": ["debug", "info", "warning", "error", "critical"],
        "default": "info",
    },
    "log_format": {
        "description": "Log lines as console text or JSON; auto: text on a terminal, else JSON.",
        "type": "string",
        "enum": ["auto", "console", "json"],
        "default": "auto",
    },
    "show_tokens": {
        "description": (
            "true: token values appear in log lines and files. They are personal data; "
            "keep false outside a test bench."),
        "type": "boolean",
        "default": False,
    },
}

_PLUGIN_KEYS = {"token_provider_plugins": "token_provider",
                "token_validator_plugins": "token_validator"}
_STATION_KEY = {  # a station key path -> the EVerest config key it came from
    "reservations.store": "config_module.reservation_store",
    "logging.level": "config_module.log_level",
    "logging.format": "config_module.log_format",
    "logging.show_tokens": "config_module.show_tokens",
}
_REQUIREMENTS = ("token_provider", "token_validator", "evse_manager")


def _obj(parent: Any, key: str, where: str) -> dict[str, Any]:
    value = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(value, dict):
        raise ManagerConfigError(f"malformed configuration answer: {where}{key} is not an object")
    return value


def module_config_of(payload: bytes, module_id: str) -> dict[str, Any]:
    """The ``module_config`` object of a ConfigurationResponse, checked for what we read."""
    try:
        envelope = json.loads(payload)
    except ValueError:
        raise ManagerConfigError("malformed configuration answer: not JSON") from None
    if not isinstance(envelope, dict) or envelope.get("msg_type") != "ConfigurationResponse":
        raise ManagerConfigError("malformed configuration answer: not a ConfigurationResponse")
    data = _obj(envelope, "data", "")
    if data.get("status") != "Ok":
        raise ManagerConfigError(
            f"EVerest's manager answered {data.get('status')!r}: {data.get('status_info', '')}")
    response = _obj(data, "response", "data.")
    if response.get("type") != "Module":
        raise ManagerConfigError("malformed configuration answer: data.response.type is not 'Module'")
    module_config = _obj(_obj(response, "data", "data.response."), "module_config",
                         "data.response.data.")
    if module_config.get("module_id") != module_id:
        raise ManagerConfigError(
            f"configuration answer is for module {module_config.get('module_id')!r}, "
            f"not for EV_MODULE={module_id!r}")
    for key in ("configuration_parameters", "connections"):
        if not isinstance(module_config.get(key), dict):
            raise ManagerConfigError(f"malformed configuration answer: module_config.{key} "
                                     "is not an object")
    return module_config


def _parameters(module_config: dict[str, Any]) -> dict[str, Any]:
    entries = module_config["configuration_parameters"].get("!module", [])
    if not isinstance(entries, list):
        raise ManagerConfigError("malformed configuration answer: configuration_parameters"
                                 "['!module'] is not a list")
    params: dict[str, Any] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                or "value" not in entry:
            raise ManagerConfigError("malformed configuration answer: a configuration "
                                     "parameter without name or value")
        params[entry["name"]] = entry["value"]
    return params


def _connections(module_config: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Bus connections per requirement, in the manager's order (``requirement.index``)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for requirement in _REQUIREMENTS:
        entries = module_config["connections"].get(requirement, [])
        if not isinstance(entries, list):
            raise ManagerConfigError(f"malformed configuration answer: connections."
                                     f"{requirement} is not a list")
        indexed = []
        for position, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ManagerConfigError(f"malformed configuration answer: connections."
                                         f"{requirement}[{position}] is not an object")
            req = entry.get("requirement")
            index = req.get("index", 0) if isinstance(req, dict) else 0
            indexed.append((index if isinstance(index, int) else position, position,
                            {"module_id": entry.get("module_id"),
                             "implementation_id": entry.get("implementation_id")}))
        out[requirement] = [conn for _, _, conn in sorted(indexed, key=lambda t: t[:2])]
    return out


def _plugins(text: Any, key: str, source: str) -> list[Any]:
    if text in ("", None):
        return []
    try:
        entries = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError:
        entries = None
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and "plugin" in e for e in entries):
        raise StationError(f"{source}: config_module.{key}: must be a YAML list of "
                           "{plugin: NAME, ...} mappings")
    return entries


class _Layout:
    """Where each part of the built station came from, to name keys in error messages."""

    def __init__(self, source: str, bus_counts: dict[str, int]) -> None:
        self.source = source
        self.bus_counts = bus_counts

    def translate(self, message: str) -> str:
        """A station error's key path, rewritten to the EVerest config's key."""
        head = f"{self.source}: "
        if not message.startswith(head):
            return message
        key, sep, problem = message[len(head):].partition(": ")
        if not sep:
            return message
        return f"{head}{self._key(key)}: {problem}"

    def _key(self, key: str) -> str:
        if key.startswith("config."):
            return "config_module." + key[len("config."):]
        for station_key, everest_key in _STATION_KEY.items():
            if key == station_key or key.startswith(station_key + "."):
                return everest_key + key[len(station_key):]
        match = re.match(r"connections\.(token_provider|token_validator)\[(\d+)\](.*)", key)
        if match:
            requirement, index, rest = match.group(1), int(match.group(2)), match.group(3)
            bus = self.bus_counts.get(requirement, 0)
            if index >= bus:
                return f"config_module.{requirement}_plugins[{index - bus}]{rest}"
        if key.startswith("mqtt"):
            return f"{key} (from the EV_MQTT_* environment)"
        return key


def station_from_manager(module_config: dict[str, Any], env: ManagerEnv,
                         module_dir: Path) -> Station:
    """The Station the manager's answer describes; StationError (one line) if unusable."""
    source = f"EVerest config of module '{env.module_id}'"
    params = _parameters(module_config)
    conns = _connections(module_config)
    layout = _Layout(source, {k: len(v) for k, v in conns.items()})
    try:
        config = {k: v for k, v in params.items() if k in StationConfig.model_fields}
        connections: dict[str, list[Any]] = {k: list(v) for k, v in conns.items()}
        for key, requirement in _PLUGIN_KEYS.items():
            connections[requirement] += _plugins(params.get(key), key, source)
        mqtt: dict[str, Any] = {"prefix": env.prefix}
        if env.socket_path:
            mqtt["socket_path"] = env.socket_path
        else:
            mqtt.update(host=env.host, port=env.port)
        data: dict[str, Any] = {
            "mqtt": mqtt,
            "module_id": env.module_id,
            "config": config,
            "connections": connections,
            "reservations": {"store": params.get("reservation_store") or None},
            "logging": {"level": params.get("log_level", "info"),
                        "format": params.get("log_format", "auto"),
                        "show_tokens": params.get("show_tokens", False)},
        }
        return station_from_data(data, source, module_dir)
    except StationError as exc:
        raise StationError(layout.translate(str(exc))) from None


def translate_error(exc: StationError, module_config: dict[str, Any], env: ManagerEnv) -> str:
    """A StationError raised later (a plugin's options) with the EVerest config's key names."""
    conns = _connections(module_config)
    layout = _Layout(f"EVerest config of module '{env.module_id}'",
                     {k: len(v) for k, v in conns.items()})
    return layout.translate(str(exc))


def ignored_parameters(module_config: dict[str, Any]) -> list[str]:
    """Parameters the module does not use (a manifest newer than this code)."""
    known = set(StationConfig.model_fields) | set(EXTRA_CONFIG)
    return sorted(set(_parameters(module_config)) - known)
