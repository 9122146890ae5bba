"""JSON-schema checks of command arguments, results and variables, from ``interfaces/``.

The interface files are EVerest's format: ``cmds`` with ``arguments`` and ``result``,
``vars``, ``errors``; types live in ``interfaces/types/NAME.yaml`` and are referred to as
``$ref: /NAME#/Type``. On loading, every such reference is replaced by the referenced
type itself (recursively; the types have no cycles), so the validators never resolve a
reference at run time. A reference that names a missing file or type is an error at load
time, not at the first message that needs it.

Semantics follow JSON Schema 2020-12 (a ``$ref`` next to other keywords applies both, as
EVerest's validator does). ``format: date-time`` is checked (RFC 3339, with a time zone).

Every argument of a command is required, and no other argument is allowed, as in EVerest.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match

from .text import short_repr

__all__ = ["InterfaceSchemas", "SchemaLoadError", "interfaces_dir"]

_REF = re.compile(r"^/(?P<file>[A-Za-z0-9_]+)#/(?P<type>[A-Za-z0-9_]+)$")
_DROP = frozenset({"$ref", "description"})  # descriptions are for people, not validators
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})"
)


class SchemaLoadError(Exception):
    """An interface or type file is missing, unreadable or inconsistent."""


def interfaces_dir() -> Path:
    """The ``interfaces`` folder at the top of the project."""
    return Path(__file__).resolve().parent / "interfaces"  # a link to the top-level folder


_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # format only constrains strings
    if not _RFC3339.fullmatch(value):
        return False
    datetime.fromisoformat(value.replace(" ", "T").replace("t", "T").replace("z", "Z"))
    return True


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SchemaLoadError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SchemaLoadError(f"{path}: top level must be a mapping")
    return data


def _message(error: ValidationError, prefix: str) -> str:
    path = prefix
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    if error.validator == "enum":
        options = list(error.validator_value)
        listed = ", ".join(map(str, options[:8])) + (", ..." if len(options) > 8 else "")
        name = error.schema.get("title") if isinstance(error.schema, dict) else None
        what = f"a valid {name}" if name else "one of"
        text = f"{short_repr(error.instance)} is not {what} ({listed})"
    elif error.validator == "format":
        text = f"{short_repr(error.instance)} is not a valid {error.validator_value}"
    elif error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        text = f"missing required field {missing[0]!r}" if missing else error.message
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extra = sorted(k for k in error.instance if k not in known)
        text = f"unknown field {extra[0]!r}" if extra else error.message
    else:
        text = error.message
        if len(text) > 200:
            text = text[:197] + "..."
    return f"{path}: {text}" if path else text


class _Check:
    """One compiled schema; ``error(value, prefix)`` is None or a one-line message."""

    __slots__ = ("_validator", "_is_valid")

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._validator = Draft202012Validator(schema, format_checker=_FORMATS)
        self._is_valid = self._validator.is_valid

    def error(self, value: Any, prefix: str) -> str | None:
        if self._is_valid(value):
            return None
        found = best_match(self._validator.iter_errors(value))
        return _message(found, prefix) if found is not None else f"{prefix}: invalid"


class _Command:
    __slots__ = ("args", "arg_names", "result")

    def __init__(self, args: dict[str, _Check], result: _Check | None) -> None:
        self.args = args
        self.arg_names = frozenset(args)
        self.result = result


class _Interface:
    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description
        self.cmds: dict[str, _Command] = {}
        self.vars: dict[str, _Check] = {}
        self.errors: list[str] = []


class InterfaceSchemas:
    """Validators for every command, result and variable of the interfaces in a folder.

    Build with :meth:`load`; the same folder is read and compiled only once per process.
    Instances are immutable and safe to use from any thread.
    """

    _cache: dict[Path, InterfaceSchemas] = {}
    _cache_lock = threading.Lock()

    def __init__(self, folder: Path, interfaces: dict[str, _Interface], types: dict[str, Any]):
        self.folder = folder
        self._interfaces = interfaces
        self._types = types  # {"authorization": {"IdToken": {...resolved...}}, ...}

    # --- building ---------------------------------------------------------------------

    @classmethod
    def load(cls, folder: str | Path | None = None) -> InterfaceSchemas:
        """Read ``folder`` (default: the project's ``interfaces/``), once per process."""
        root = Path(folder if folder is not None else interfaces_dir()).resolve()
        with cls._cache_lock:
            found = cls._cache.get(root)
            if found is None:
                found = cls._cache[root] = cls._build(root)
            return found

    @classmethod
    def _build(cls, root: Path) -> InterfaceSchemas:
        if not root.is_dir():
            raise SchemaLoadError(f"{root}: interfaces folder not found")
        raw_types: dict[str, dict[str, Any]] = {}
        for path in sorted((root / "types").glob("*.yaml")):
            types = _read_yaml(path).get("types") or {}
            if not isinstance(types, dict):
                raise SchemaLoadError(f"{path}: 'types' must be a mapping")
            raw_types[path.stem] = types

        resolved: dict[tuple[str, str], Any] = {}
        resolving: set[tuple[str, str]] = set()

        def resolve_ref(ref: str, where: str) -> Any:
            m = _REF.match(ref)
            if not m or m["type"] not in raw_types.get(m["file"], {}):
                raise SchemaLoadError(f"{where}: unresolvable $ref {ref!r}")
            key = (m["file"], m["type"])
            if key not in resolved:
                if key in resolving:
                    raise SchemaLoadError(f"{where}: $ref cycle through {ref!r}")
                resolving.add(key)
                schema = inline(raw_types[key[0]][key[1]], f"types/{key[0]}.yaml: {key[1]}")
                resolved[key] = {"title": key[1], **schema} if isinstance(schema, dict) else schema
                resolving.discard(key)
            return resolved[key]

        def inline(node: Any, where: str) -> Any:
            if isinstance(node, list):
                return [inline(item, where) for item in node]
            if not isinstance(node, dict):
                return node
            out = {k: inline(v, where) for k, v in node.items() if k not in _DROP}
            if "$ref" not in node:
                return out
            target = resolve_ref(node["$ref"], where)
            clash = any(k in target and target[k] != v for k, v in out.items())
            if clash:  # keep both constraints, as a $ref beside other keywords does
                return {**out, "allOf": [*out.get("allOf", []), target]}
            return {**target, **out}

        for file, types in raw_types.items():
            for name in types:
                resolve_ref(f"/{file}#/{name}", f"types/{file}.yaml")
        types_out: dict[str, Any] = {}
        for (file, name), schema in resolved.items():
            types_out.setdefault(file, {})[name] = schema

        interfaces: dict[str, _Interface] = {}
        for path in sorted(root.glob("*.yaml")):
            doc = _read_yaml(path)
            iface = _Interface(path.stem, str(doc.get("description", "")))
            where = path.name
            for cmd, spec in (doc.get("cmds") or {}).items():
                spec = spec or {}
                args = {
                    arg: _Check(inline(arg_schema, f"{where}: {cmd}.{arg}"))
                    for arg, arg_schema in (spec.get("arguments") or {}).items()
                }
                result = spec.get("result")
                iface.cmds[cmd] = _Command(
                    args, _Check(inline(result, f"{where}: {cmd}")) if result else None
                )
            for var, spec in (doc.get("vars") or {}).items():
                iface.vars[var] = _Check(inline(spec, f"{where}: {var}"))
            for entry in doc.get("errors") or []:
                ref = str(entry.get("reference", "")) if isinstance(entry, dict) else ""
                m = re.match(r"^/errors/(\w+)(?:#/(\w+))?$", ref)
                if not m:
                    raise SchemaLoadError(f"{where}: bad error reference {ref!r}")
                iface.errors.append(f"{m[1]}/{m[2]}" if m[2] else f"{m[1]}/*")
            interfaces[iface.name] = iface
        return cls(root, interfaces, types_out)

    # --- looking up ----------------------------------------------------------------------

    def _iface(self, interface: str) -> _Interface:
        try:
            return self._interfaces[interface]
        except KeyError:
            raise KeyError(f"unknown interface {interface!r}") from None

    def _cmd(self, interface: str, cmd: str) -> _Command:
        try:
            return self._iface(interface).cmds[cmd]
        except KeyError:
            raise KeyError(f"interface {interface!r} has no command {cmd!r}") from None

    @property
    def interfaces(self) -> list[str]:
        """Names of the loaded interfaces."""
        return sorted(self._interfaces)

    def commands(self, interface: str) -> list[str]:
        return list(self._iface(interface).cmds)

    def arguments(self, interface: str, cmd: str) -> list[str]:
        return list(self._cmd(interface, cmd).args)

    def has_result(self, interface: str, cmd: str) -> bool:
        return self._cmd(interface, cmd).result is not None

    def variables(self, interface: str) -> list[str]:
        return list(self._iface(interface).vars)

    def error_types(self, interface: str) -> list[str]:
        """Error types the interface may raise, e.g. ``["evse_manager/Inoperative"]``."""
        return list(self._iface(interface).errors)

    # --- checking --------------------------------------------------------------------------

    def command_args_error(self, interface: str, cmd: str, args: Any) -> str | None:
        """None if ``args`` are valid arguments of ``interface.cmd``, else a one-line reason.

        Raises KeyError for an unknown interface or command (a programming error).
        """
        command = self._cmd(interface, cmd)
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return f"arguments must be an object (got {short_repr(args)})"
        if args.keys() != command.arg_names:
            unknown = sorted(k for k in args if k not in command.arg_names)
            if unknown:
                return f"unknown argument {unknown[0]!r}"
            missing = [k for k in command.args if k not in args]
            return f"missing argument {missing[0]!r}"
        for name, check in command.args.items():
            problem = check.error(args[name], name)
            if problem is not None:
                return problem
        return None

    def args_checker(self, interface: str, cmd: str) -> Callable[[Any], str | None]:
        """``command_args_error`` bound to one command, e.g. for a bus ``validate=`` hook."""
        self._cmd(interface, cmd)  # fail now, not at the first call

        def check(args: Any) -> str | None:
            return self.command_args_error(interface, cmd, args)

        return check

    def result_error(self, interface: str, cmd: str, retval: Any) -> str | None:
        """None if ``retval`` is a valid result of ``interface.cmd``, else a one-line reason.

        A command without a result must answer ``None`` (``"retval": null``).
        """
        command = self._cmd(interface, cmd)
        if command.result is None:
            return None if retval is None else f"result: expected null (got {short_repr(retval)})"
        return command.result.error(retval, "result")

    def var_error(self, interface: str, var: str, value: Any) -> str | None:
        """None if ``value`` is a valid value of variable ``interface.var``, else a reason."""
        try:
            check = self._iface(interface).vars[var]
        except KeyError:
            raise KeyError(f"interface {interface!r} has no variable {var!r}") from None
        return check.error(value, var)
