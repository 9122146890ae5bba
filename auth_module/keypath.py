"""One-line, key-path errors for YAML files checked by pydantic (the station file).

``connections.evse_manager[1].module_id: required key is missing``: the path of the key a
user must fix and what is wrong with it, never a traceback or pydantic's own report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from .text import show_value


class Located(ValueError):
    """A problem found by a validator that knows a more precise key path than pydantic."""

    def __init__(self, key_path: str, problem: str) -> None:
        super().__init__(problem)
        self.key_path = key_path
        self.problem = problem


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping."""


def _construct_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key; let the constructor complain
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith("<") and part.endswith(">"):
            continue  # a union tag, not a key
        else:
            out += f".{part}" if out else str(part)
    return out


_KIND = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def problem_of(err: Mapping[str, Any]) -> tuple[str, str]:
    """(key path, problem) of one pydantic error."""
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    given = err.get("input")
    if kind == "extra_forbidden":
        return key_path(loc[:-1]), f"unknown key {str(loc[-1])!r}"
    if kind == "missing":
        return key_path(loc), "required key is missing"
    if kind == "value_error":
        cause = ctx.get("error")
        if isinstance(cause, Located):
            return cause.key_path, cause.problem
        return key_path(loc), str(cause) if cause is not None else err["msg"]
    if kind in _KIND:
        return key_path(loc), f"must be {_KIND[kind]} (got {show_value(given)})"
    if kind == "literal_error":
        return key_path(loc), f"must be one of {ctx.get('expected', '')} (got {show_value(given)})"
    if kind == "too_short" and isinstance(given, list):
        least = ctx.get("min_length")
        return key_path(loc), f"must list at least {least} entr{'y' if least == 1 else 'ies'} (got {len(given)})"
    if kind == "too_long" and isinstance(given, list):
        return key_path(loc), f"must list at most {ctx.get('max_length')} entries (got {len(given)})"
    if kind == "string_too_long":
        return key_path(loc), f"must be at most {ctx.get('max_length')} characters (got {len(given or '')})"
    return key_path(loc), f"{err.get('msg', 'invalid')} (got {show_value(given)})"


def yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}invalid YAML: {problem}"


def kind_of(value: Any) -> str:
    if value is None:
        return "an empty file"
    if isinstance(value, list):
        return "a list"
    return f"a single value {show_value(value)}"


