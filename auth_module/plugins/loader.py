"""Finding the in-process plugins a station file names, through Python entry points.

Entry point groups: ``auth_module.validators`` and ``auth_module.token_providers``. Each
entry point names a factory ``factory(options: dict, context: PluginContext)``. A name no
installed package provides, or options the factory refuses, end the start-up with one
line (a :class:`~auth_module.station.StationError`), exit status 2::

    station.yaml: connections.token_validator[1]: unknown validator plugin 'ocpp' (installed: allow_list, ocpp16)
    station.yaml: connections.token_validator[1].timeout_s: must be a number > 0 (got 'soon')

How a factory refuses its options, so that the line names the right key:

* raise a pydantic ``ValidationError`` (e.g. from ``Options.model_validate(options)`` with
  ``extra="forbid"``): every error's ``loc`` is appended to the entry's key path;
* raise :class:`PluginError` (or any exception with an ``option`` attribute) naming the
  option, e.g. ``PluginError("file not found: tokens.yaml", option="file")``;
* any other exception is reported as the plugin failing to load.

Once built, every plugin is wrapped so that one that misbehaves while running is reported
in one log line and cannot take the module down: a provider whose ``start``/``close``
raises or whose callback fails is logged; a validator that raises still raises, with its
message made one line (the bus ports log it and count it as ``Unknown``), and one that
answers a plain dict is converted.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import structlog
from pydantic import ValidationError

from ..station import PluginConnection, Station, StationError
from ..text import exception_line, one_line, show_value
from ..types import ProvidedIdToken, ValidationResult
from .base import PluginContext, ReaderHealth, TokenProvider, TokenValidator

VALIDATOR_GROUP = "auth_module.validators"
PROVIDER_GROUP = "auth_module.token_providers"

log = structlog.get_logger("plugins")

#: The extra of this package that installs what a built-in plugin needs.
_EXTRAS = {"serial": "serial", "hid": "hid", "ocpp16": "ocpp", "pn532": "serial", "pcsc": "pcsc"}


class PluginError(Exception):
    """A plugin refusing its options or its environment, in one line.

    ``option`` names the offending option (``"file"``, ``"port"``...) so that the message
    reads ``connections.token_validator[0].file: ...``; leave it None for the entry itself.
    """

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


def available(group: str) -> dict[str, EntryPoint]:
    """The plugins installed for ``group`` by name (the first one wins on a duplicate)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)
    return found


def build_validator(entry: PluginConnection, station: Station) -> TokenValidator:
    plugin = _build(entry, station, VALIDATOR_GROUP, "validator")
    return GuardedValidator(plugin, _plugin_name(plugin, entry))


def build_provider(entry: PluginConnection, station: Station) -> TokenProvider:
    plugin = _build(entry, station, PROVIDER_GROUP, "token provider")
    return GuardedProvider(plugin, _plugin_name(plugin, entry))


# --- building ---------------------------------------------------------------------------------


def _build(entry: PluginConnection, station: Station, group: str, kind: str) -> Any:
    installed = available(group)
    ep = installed.get(entry.plugin)
    if ep is None:
        known = ", ".join(sorted(installed)) or "none"
        raise station.error(entry.key_path,
                            f"unknown {kind} plugin '{entry.plugin}' (installed: {known})")
    try:
        factory = ep.load()
    except Exception as exc:  # ImportError above all: a missing optional dependency
        raise station.error(entry.key_path, f"{kind} plugin '{entry.plugin}' cannot be "
                            f"imported: {exception_line(exc)}{_install_hint(entry.plugin, exc)}"
                            ) from None
    if not callable(factory):
        raise station.error(entry.key_path, f"{kind} plugin '{entry.plugin}': entry point "
                            f"{ep.value} is not a factory")
    context = PluginContext(base_dir=station.base_dir)
    try:
        plugin = factory(dict(entry.options), context)
    except ValidationError as exc:
        key, problem = _option_problem(exc)
        raise station.error(f"{entry.key_path}{key}", problem) from None
    except StationError:
        raise
    except Exception as exc:
        option = getattr(exc, "option", None)
        if isinstance(exc, PluginError) or option:
            key = f"{entry.key_path}.{option}" if option else entry.key_path
            raise station.error(key, one_line(str(exc))) from None
        raise station.error(entry.key_path, f"{kind} plugin '{entry.plugin}' failed to load: "
                            f"{exception_line(exc)}{_install_hint(entry.plugin, exc)}") from None
    missing = [m for m in _required_methods(group) if not callable(getattr(plugin, m, None))]
    if missing:
        methods = " or ".join(f"{m}()" for m in missing)
        raise station.error(entry.key_path, f"{kind} plugin '{entry.plugin}' returned an object "
                            f"of type {type(plugin).__name__} that has no {methods}")
    return plugin


def _required_methods(group: str) -> tuple[str, ...]:
    return ("validate", "close") if group == VALIDATOR_GROUP else ("start", "close")


def _plugin_name(plugin: Any, entry: PluginConnection) -> str:
    name = getattr(plugin, "name", None)
    return name if isinstance(name, str) and name else entry.plugin


def _install_hint(plugin: str, exc: BaseException) -> str:
    extra = _EXTRAS.get(plugin)
    missing = getattr(exc, "name", None) or ""
    if extra and isinstance(exc, ImportError) and not missing.startswith("auth_module"):
        return f" (install it with: pip install 'auth-module[{extra}]')"
    return ""


def _loc(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _option_problem(exc: ValidationError) -> tuple[str, str]:
    """The first error of a plugin's options as (``.key`` suffix, problem)."""
    errors = exc.errors(include_url=False)
    # an unknown option first: a misspelt one is also why a required one seems missing
    err = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
    loc, kind = tuple(err.get("loc", ())), err.get("type", "")
    if kind == "extra_forbidden":
        known = _known_options(exc)
        hint = f" (known options: {', '.join(known)})" if known else ""
        return _loc(loc), f"unknown option{hint}"
    if kind == "missing":
        return _loc(loc), "required option is missing"
    msg = one_line(err.get("msg", "invalid"))
    msg = re.sub(r"^Value error, ", "", msg)
    if "input" in err and kind not in ("value_error", "assertion_error"):
        msg = f"{msg} (got {show_value(err['input'])})"
    return _loc(loc), msg


def _known_options(exc: ValidationError) -> list[str]:
    """The option names of the model that raised ``exc``, if it can be found."""
    model = _MODELS.get(exc.title)
    return sorted(model.model_fields) if model is not None else []


#: Options models by class name, so that "unknown option" can list the known ones.
_MODELS: dict[str, Any] = {}


def register_options_model(model: Any) -> Any:
    """Class decorator for a plugin's pydantic options model: lets the loader list its
    option names when a station file uses an unknown one."""
    _MODELS[model.__name__] = model
    return model


# --- guarding a running plugin ------------------------------------------------------------------


class GuardedValidator:
    """A validator as the module sees it: same answers, results always ValidationResults."""

    def __init__(self, plugin: Any, name: str) -> None:
        self.plugin = plugin
        self.name = name

    def validate(self, token: ProvidedIdToken) -> ValidationResult:
        try:
            result = self.plugin.validate(token)
        except Exception as exc:  # the caller logs it; make sure that is one line
            flat = one_line(str(exc))
            if flat == str(exc):
                raise
            try:
                same_kind = type(exc)(flat)
            except Exception:
                same_kind = RuntimeError(f"{type(exc).__name__}: {flat}")
            raise same_kind from None
        if isinstance(result, ValidationResult):
            return result
        return ValidationResult.model_validate(result)  # a dict; malformed -> Unknown upstream

    def close(self) -> None:
        self.plugin.close()

    def __repr__(self) -> str:
        return f"<validator plugin {self.name}>"


class GuardedProvider:
    """A provider whose failures are logged in one line instead of ending the module."""

    def __init__(self, plugin: Any, name: str) -> None:
        self.plugin = plugin
        self.name = name
        self._closed = threading.Event()

    def start(self, on_token: Callable[[ProvidedIdToken], None]) -> None:
        def deliver(token: Any) -> None:
            if self._closed.is_set():
                return
            try:
                if not isinstance(token, ProvidedIdToken):
                    token = ProvidedIdToken.model_validate(token)
                on_token(token)
            except Exception as exc:
                log.error(f"token provider {self.name}: token dropped: {exception_line(exc)}")

        try:
            self.plugin.start(deliver)
        except Exception as exc:
            log.error(f"token provider {self.name} failed to start; it provides no tokens: "
                      f"{exception_line(exc)}")

    def health(self) -> ReaderHealth | None:
        """The plugin's ``health()`` (see :mod:`.base`), or None if it has none or it fails."""
        probe = getattr(self.plugin, "health", None)
        if not callable(probe):
            return None
        try:
            result = probe()
        except Exception:
            return None
        return result if isinstance(result, ReaderHealth) else None

    def close(self) -> None:
        self._closed.set()
        try:
            self.plugin.close()
        except Exception as exc:
            log.warning(f"token provider {self.name} did not close cleanly: {exception_line(exc)}")

    def __repr__(self) -> str:
        return f"<token provider plugin {self.name}>"


__all__ = ["available", "build_provider", "build_validator", "GuardedProvider",
           "GuardedValidator", "one_line", "PluginError", "register_options_model",
           "StationError", "VALIDATOR_GROUP", "PROVIDER_GROUP"]
