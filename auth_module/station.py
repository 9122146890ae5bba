"""The station file: which broker, which module id, the Auth config, and the connections.

Loaded with :func:`load_station`, which either returns a :class:`Station` or raises
:class:`StationError` whose text is one line naming the file, the key and the problem::

    station.yaml: config.connection_timeout: must be an integer >= 1 (got 0)

The defaults of the ``config`` section are read from the module manifest
(``manifest.yaml`` at the top of the project) and from nowhere else; so are the minimum
and maximum number of connections per requirement.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from auth_module.broker_access import AccessProblem, BrokerAccess, MqttSettings, resolve_broker
from auth_module.console.settings import ConsoleSettings
from auth_module.types import SelectionAlgorithm
from auth_module.keypath import Located, UniqueKeyLoader, kind_of, problem_of, yaml_problem
from auth_module.text import show_value

__all__ = [
    "BusConnection",
    "Connections",
    "LoggingSettings",
    "MqttSettings",
    "PluginConnection",
    "ReservationSettings",
    "Station",
    "StationConfig",
    "StationError",
    "TimeoutSettings",
    "load_station",
    "station_from_data",
    "manifest",
    "manifest_path",
]


class StationError(Exception):
    """A station file that cannot be used; ``str(error)`` is one line for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- the manifest: the one place for config defaults -------------------------------------


def manifest_path() -> Path:
    """``manifest.yaml`` at the top of the project (next to ``interfaces/``)."""
    return Path(__file__).resolve().parent / "manifest.yaml"  # a link to the top-level file


@lru_cache(maxsize=None)
def _load_manifest(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise RuntimeError(f"{path}: not a module manifest (no 'config' mapping)")
    return data


def manifest(path: str | Path | None = None) -> dict[str, Any]:
    """The parsed module manifest (cached; do not modify it)."""
    return _load_manifest(Path(path).resolve() if path is not None else manifest_path())


def _config_default(key: str) -> Any:
    return manifest()["config"][key]["default"]


def _connections(requirement: str, bound: str) -> int:
    return int(manifest()["requires"][requirement][bound])


# --- small helpers -------------------------------------------------------------------------


def _name(value: Any) -> str:
    """A non-empty id that can be a segment of an MQTT topic."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {show_value(value)})")
    if not value or any(c in value for c in "/+#") or value != value.strip():
        raise ValueError(f"must be a non-empty name without '/', '+', '#' or spaces (got {show_value(value)})")
    return value


def _positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"must be a number > 0 (got {show_value(value)})")
    return float(value)


Name = Annotated[str, BeforeValidator(_name)]
Seconds = Annotated[float, BeforeValidator(_positive_number)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- sections ------------------------------------------------------------------------------


_IMPLEMENTED_SELECTION = (SelectionAlgorithm.PlugEvents, SelectionAlgorithm.PlugEventsLIFO,
                          SelectionAlgorithm.FindFirst)


class StationConfig(_Section):
    """The Auth module's config keys; names and defaults are those of ``manifest.yaml``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)

    selection_algorithm: SelectionAlgorithm = Field(default=_config_default("selection_algorithm"))
    connection_timeout: int = Field(default=_config_default("connection_timeout"))
    master_pass_group_id: str = Field(default=_config_default("master_pass_group_id"), max_length=36)
    prioritize_authorization_over_stopping_transaction: bool = Field(
        default=_config_default("prioritize_authorization_over_stopping_transaction")
    )
    ignore_connector_faults: bool = Field(default=_config_default("ignore_connector_faults"))
    plug_in_timeout_enabled: bool = Field(default=_config_default("plug_in_timeout_enabled"))
    stop_transaction_on_reswipe: bool = Field(default=_config_default("stop_transaction_on_reswipe"))

    @field_validator("selection_algorithm", mode="before")
    @classmethod
    def _selection(cls, value: Any) -> SelectionAlgorithm:
        if value == SelectionAlgorithm.UserInput:
            raise ValueError("UserInput is not implemented; use PlugEvents, PlugEventsLIFO or FindFirst")
        if value in _IMPLEMENTED_SELECTION:
            return SelectionAlgorithm(value)
        raise ValueError(f"must be PlugEvents, PlugEventsLIFO or FindFirst (got {show_value(value)})")

    @field_validator("connection_timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"must be an integer >= 1 (got {show_value(value)})")
        return value


class BusConnection(_Section):
    """A module on the bus, as in an EVerest config."""

    module_id: Name
    implementation_id: Name
    _key_path: str = PrivateAttr(default="")

    @property
    def key_path(self) -> str:
        """Where this entry is in the station file, e.g. ``connections.evse_manager[0]``."""
        return self._key_path

    def __str__(self) -> str:
        return f"{self.module_id}/{self.implementation_id}"


class PluginConnection(BaseModel):
    """An in-process plugin: ``plugin: NAME`` plus the plugin's options as sibling keys.

    The options are kept as written; the plugin checks them (report problems with
    :meth:`Station.error` and ``key_path``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    plugin: Name
    options: dict[str, Any] = Field(default_factory=dict)
    _key_path: str = PrivateAttr(default="")

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if isinstance(data, dict) and "options" not in data:
            return {"plugin": data.get("plugin"), "options": {k: v for k, v in data.items() if k != "plugin"}}
        return data

    @property
    def key_path(self) -> str:
        """Where this entry is in the station file, e.g. ``connections.token_validator[1]``."""
        return self._key_path

    def __str__(self) -> str:
        return f"plugin {self.plugin}"


def _entry_kind(value: Any) -> str:
    if isinstance(value, PluginConnection) or (isinstance(value, dict) and "plugin" in value):
        return "<plugin>"
    return "<bus>"


def _bus_only(value: Any) -> Any:
    if isinstance(value, dict) and "plugin" in value:
        raise ValueError(
            "in-process plugins are only allowed under token_provider and token_validator; "
            "an evse_manager entry needs module_id and implementation_id"
        )
    return value


Entry = Annotated[
    Annotated[BusConnection, Tag("<bus>")] | Annotated[PluginConnection, Tag("<plugin>")],
    Discriminator(_entry_kind),
]
EvseEntry = Annotated[BusConnection, BeforeValidator(_bus_only)]


class Connections(_Section):
    token_provider: list[Entry] = Field(
        min_length=_connections("token_provider", "min_connections"),
        max_length=_connections("token_provider", "max_connections"),
    )
    token_validator: list[Entry] = Field(
        min_length=_connections("token_validator", "min_connections"),
        max_length=_connections("token_validator", "max_connections"),
    )
    evse_manager: list[EvseEntry] = Field(
        min_length=_connections("evse_manager", "min_connections"),
        max_length=_connections("evse_manager", "max_connections"),
    )

    @model_validator(mode="after")
    def _paths_and_duplicates(self) -> Connections:
        for name in ("token_provider", "token_validator", "evse_manager"):
            seen: dict[tuple[str, str], int] = {}
            for i, entry in enumerate(getattr(self, name)):
                entry._key_path = f"connections.{name}[{i}]"
                if isinstance(entry, BusConnection):
                    key = (entry.module_id, entry.implementation_id)
                    if key in seen:
                        raise Located(
                            f"connections.{name}[{i}]",
                            f"{entry} is listed twice (also at [{seen[key]}])",
                        )
                    seen[key] = i
        return self


class ReservationSettings(_Section):
    store: str | None = None
    """Where reservations are kept across restarts; relative paths are relative to the
    station file. Default: ``.state/<module_id>-reservations.json``."""


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    format: Literal["auto", "console", "json"] = "auto"
    show_tokens: bool = False

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class TimeoutSettings(_Section):
    validator_s: Seconds = 5.0
    command_s: Seconds = 5.0


# --- the station ------------------------------------------------------------------------------


class Station(_Section):
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    module_id: Name = "auth"
    config: StationConfig = Field(default_factory=StationConfig)
    connections: Connections
    reservations: ReservationSettings = Field(default_factory=ReservationSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    console: ConsoleSettings | None = None  # the station console (CONTRACT.md §9): off if absent

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _source: str = PrivateAttr(default="station file")
    _broker: BrokerAccess | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """``config:`` with nothing under it (e.g. all lines commented out) means defaults."""
        if isinstance(data, dict):
            optional = ("mqtt", "config", "reservations", "logging", "timeouts", "console")
            if any(k in data and data[k] is None for k in optional):
                return {k: ({} if k in optional and v is None else v) for k, v in data.items()}
        return data

    @property
    def base_dir(self) -> Path:
        """The folder of the station file; relative paths in it are relative to this."""
        return self._base_dir

    @property
    def source(self) -> str:
        """The station file's path as it was given (used in error messages)."""
        return self._source

    @property
    def broker(self) -> BrokerAccess:
        """The broker connection, checked and resolved (``mqtt`` section, CONTRACT §2.1)."""
        if self._broker is None:
            self._broker = resolve_broker(self.mqtt, self._base_dir, self.module_id)
        return self._broker

    @property
    def evse_managers(self) -> list[BusConnection]:
        """In evse id order: the first is evse id 1."""
        return list(self.connections.evse_manager)

    @property
    def token_providers(self) -> list[BusConnection | PluginConnection]:
        return list(self.connections.token_provider)

    @property
    def token_validators(self) -> list[BusConnection | PluginConnection]:
        """In the order they are consulted."""
        return list(self.connections.token_validator)

    @property
    def reservation_store(self) -> Path:
        """Absolute path of the reservation store file."""
        store = self.reservations.store or f".state/{self.module_id}-reservations.json"
        return self.resolve(store)

    def resolve(self, path: str | Path) -> Path:
        """``path`` made absolute, relative to the station file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self._base_dir / p)

    def error(self, key_path: str, problem: str) -> StationError:
        """A :class:`StationError` about this station file, e.g. for a plugin's options::

            raise station.error(f"{entry.key_path}.file", "file not found")
        """
        return StationError(f"{self._source}: {key_path}: {problem}")


# --- loading ------------------------------------------------------------------------------------


def load_station(path: str | Path) -> Station:
    """Read and check the station file at ``path``; raise :class:`StationError` if unusable."""
    name = str(path)
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StationError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise StationError(f"{name}: is a directory, not a station file") from None
    except UnicodeDecodeError:
        raise StationError(f"{name}: cannot read: not UTF-8 text") from None
    except OSError as exc:
        raise StationError(f"{name}: cannot read: {exc.strerror or exc}") from None

    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise StationError(f"{name}: {yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise StationError(f"{name}: top level must be a mapping of keys (got {kind_of(data)})")
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise StationError(f"{name}: unknown key {show_value(bad_keys[0])}")

    return station_from_data(data, name, p.resolve().parent)


def station_from_data(data: dict[str, Any], source: str, base_dir: Path) -> Station:
    """Check already-parsed station data: a station file's, or the one built from EVerest's
    manager's answer (:mod:`auth_module.everest.settings`), so both go through one model.

    ``source`` names the origin in error messages; relative paths resolve against ``base_dir``.
    """
    try:
        station = Station.model_validate(data)
    except ValidationError as exc:
        key, problem = problem_of(exc.errors(include_url=False)[0])
        raise StationError(f"{source}: {key}: {problem}" if key else f"{source}: {problem}") from None
    station._base_dir = base_dir
    station._source = source
    try:
        station._broker = resolve_broker(station.mqtt, station._base_dir, station.module_id)
    except AccessProblem as exc:
        raise StationError(f"{source}: {exc.key}: {exc.problem}") from None
    return station
