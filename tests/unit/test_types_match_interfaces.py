"""The pydantic models in ``auth_module.types`` and the YAML in ``interfaces/`` must agree.

Rules checked:

* every model has a same-named type in ``interfaces/types/*.yaml`` (or an alias below), with
  exactly the same property names;
* a field is required on the wire (YAML ``required``) exactly when the model either requires
  it or fills it with a non-None default when reading (e.g. ``tariff_messages`` defaults to
  ``[]``, ``meter_value`` to zero energy): lenient when parsing, complete when writing;
* a field's JSON type (string / integer / boolean / array / object) matches its annotation,
  and a StrEnum-typed field has exactly the YAML enum;
* every StrEnum equals the same-named YAML enum, or is used by a field whose YAML enum it
  equals (``ReservationUpdate`` is inline in EVerest);
* the manifest's config keys, types and defaults are exactly what ``station.py`` uses.
"""

from __future__ import annotations

import inspect
import types as pytypes
import typing
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from auth_module import station, types
from auth_module.schema import InterfaceSchemas

pytestmark = pytest.mark.timeout(10)

ROOT = Path(__file__).resolve().parents[2]
ALIASES = {"EvseConnector": "Connector"}  # model name -> YAML type name


def _yaml_types() -> dict[str, tuple[str, dict[str, Any]]]:
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for path in sorted((ROOT / "interfaces" / "types").glob("*.yaml")):
        for name, schema in yaml.safe_load(path.read_text())["types"].items():
            assert name not in found, f"type {name} defined in {found[name][0]} and {path.stem}"
            found[name] = (path.stem, schema)
    return found


YAML_TYPES = _yaml_types()


def _deref(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with a ``$ref`` replaced by the referenced type (its own keys win)."""
    while "$ref" in schema:
        target = YAML_TYPES[schema["$ref"].split("#/")[1]][1]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _models() -> list[type[BaseModel]]:
    return [
        obj
        for name, obj in vars(types).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseModel)
        and obj.__module__ == types.__name__
        and not name.startswith("_")
    ]


def _enums() -> list[type[StrEnum]]:
    return [
        obj
        for obj in vars(types).values()
        if inspect.isclass(obj) and issubclass(obj, StrEnum) and obj.__module__ == types.__name__
    ]


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, pytypes.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        assert len(args) == 1, f"unexpected union {annotation}"
        return args[0]
    return annotation


def _check_field(owner: str, field: str, annotation: Any, prop: dict[str, Any]) -> list[str]:
    """Problems between one model field and its YAML property."""
    where = f"{owner}.{field}"
    prop = _deref(prop)
    ann = _strip_optional(annotation)
    origin = typing.get_origin(ann)
    json_type = prop.get("type")
    if origin is list:
        if json_type != "array":
            return [f"{where}: model has a list, YAML has {json_type}"]
        (inner,) = typing.get_args(ann)
        return _check_field(owner, f"{field}[]", inner, prop.get("items", {}))
    if origin is dict or ann is dict or (inspect.isclass(ann) and issubclass(ann, BaseModel)):
        return [] if json_type == "object" else [f"{where}: model has an object, YAML has {json_type}"]
    if inspect.isclass(ann) and issubclass(ann, StrEnum):
        if json_type != "string":
            return [f"{where}: model has an enum, YAML has {json_type}"]
        values = [m.value for m in ann]
        if values != prop.get("enum"):
            return [f"{where}: {ann.__name__} {values} != YAML enum {prop.get('enum')}"]
        return []
    expected = {str: "string", int: "integer", bool: "boolean", float: "number"}.get(ann)
    if expected is None:
        return [f"{where}: cannot compare annotation {ann!r}"]
    return [] if json_type == expected else [f"{where}: model has {expected}, YAML has {json_type}"]


def _wire_required(info: Any) -> bool:
    return info.is_required() or info.default_factory is not None or info.default is not None


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.__name__)
def test_model_matches_yaml_type(model: type[BaseModel]) -> None:
    yaml_name = ALIASES.get(model.__name__, model.__name__)
    assert yaml_name in YAML_TYPES, f"no type {yaml_name} in interfaces/types/*.yaml"
    schema = YAML_TYPES[yaml_name][1]
    assert schema.get("type") == "object"
    props = schema.get("properties", {})
    fields = {info.alias or name: info for name, info in model.model_fields.items()}

    assert sorted(fields) == sorted(props), f"{model.__name__}: fields differ from YAML properties"
    required = sorted(name for name, info in fields.items() if _wire_required(info))
    assert required == sorted(schema.get("required", [])), f"{model.__name__}: required differs"

    problems: list[str] = []
    for name, info in fields.items():
        problems += _check_field(model.__name__, name, info.annotation, props[name])
    assert not problems, "\n".join(problems)


def test_every_model_is_checked() -> None:
    names = {m.__name__ for m in _models()}
    assert {"IdToken", "ProvidedIdToken", "ValidationResult", "SessionEvent", "Reservation"} <= names
    assert len(names) >= 15


def _enums_used_by_fields() -> dict[type[StrEnum], list[Any]]:
    used: dict[type[StrEnum], list[Any]] = {}
    for model in _models():
        props = YAML_TYPES[ALIASES.get(model.__name__, model.__name__)][1].get("properties", {})
        for name, info in model.model_fields.items():
            ann = _strip_optional(info.annotation)
            prop = _deref(props[name])
            if typing.get_origin(ann) is list:
                (ann,) = typing.get_args(ann)
                prop = _deref(prop.get("items", {}))
            if inspect.isclass(ann) and issubclass(ann, StrEnum):
                used.setdefault(ann, []).append(prop.get("enum"))
    return used


@pytest.mark.parametrize("enum", _enums(), ids=lambda e: e.__name__)
def test_enum_matches_yaml(enum: type[StrEnum]) -> None:
    values = [m.value for m in enum]
    if enum.__name__ in YAML_TYPES:
        assert values == YAML_TYPES[enum.__name__][1].get("enum")
    else:
        used = _enums_used_by_fields().get(enum)
        assert used, f"{enum.__name__}: no YAML type of that name and no field uses it"
        assert all(u == values for u in used)


def test_every_yaml_ref_resolves_and_schemas_load() -> None:
    schemas = InterfaceSchemas.load()
    assert set(schemas.interfaces) == {
        "auth",
        "reservation",
        "auth_token_provider",
        "auth_token_validator",
        "evse_manager",
    }


# --- manifest <-> station.py ----------------------------------------------------------------


MANIFEST = yaml.safe_load((ROOT / "manifest.yaml").read_text())
CONTRACT_CONFIG_KEYS = [
    "selection_algorithm",
    "connection_timeout",
    "master_pass_group_id",
    "prioritize_authorization_over_stopping_transaction",
    "ignore_connector_faults",
    "plug_in_timeout_enabled",
    "stop_transaction_on_reswipe",
]


def test_manifest_config_keys_are_the_contracts() -> None:
    assert list(MANIFEST["config"]) == CONTRACT_CONFIG_KEYS
    assert list(station.StationConfig.model_fields) == CONTRACT_CONFIG_KEYS


def test_manifest_defaults_are_what_station_uses() -> None:
    defaults = station.StationConfig()
    for key, spec in MANIFEST["config"].items():
        assert getattr(defaults, key) == spec["default"], key
    # the EVerest Auth manifest defaults (connection_timeout has none there; ours is 30)
    assert defaults.selection_algorithm == "FindFirst"
    assert defaults.connection_timeout == 30
    assert defaults.master_pass_group_id == ""
    assert defaults.prioritize_authorization_over_stopping_transaction is True
    assert defaults.ignore_connector_faults is False
    assert defaults.plug_in_timeout_enabled is False
    assert defaults.stop_transaction_on_reswipe is True


def test_manifest_types_match_station_fields() -> None:
    json_of = {str: "string", int: "integer", bool: "boolean"}
    for key, info in station.StationConfig.model_fields.items():
        ann = info.annotation
        expected = "string" if issubclass(ann, StrEnum) else json_of[ann]
        assert MANIFEST["config"][key]["type"] == expected, key
        assert MANIFEST["config"][key].get("description"), key


def test_station_without_config_section_gets_manifest_defaults(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "connections:\n"
        "  token_provider: [{module_id: r, implementation_id: main}]\n"
        "  token_validator: [{module_id: v, implementation_id: main}]\n"
        "  evse_manager: [{module_id: e, implementation_id: evse}]\n"
    )
    loaded = station.load_station(path)
    assert loaded.config.model_dump(mode="json") == {k: v["default"] for k, v in MANIFEST["config"].items()}


def test_manifest_provides_and_requires() -> None:
    schemas = InterfaceSchemas.load()
    assert {k: v["interface"] for k, v in MANIFEST["provides"].items()} == {
        "main": "auth",
        "reservation": "reservation",
    }
    for name, req in MANIFEST["requires"].items():
        assert req["interface"] in schemas.interfaces, name
        assert req["min_connections"] == 1
        assert req["max_connections"] >= req["min_connections"]
    assert set(MANIFEST["requires"]) == {"token_provider", "token_validator", "evse_manager"}
    assert set(station.Connections.model_fields) == set(MANIFEST["requires"])
