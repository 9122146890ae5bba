"""A simulated EVerest token validator (interface ``auth_token_validator``) on the MQTT bus.

It answers ``validate_token`` {provided_token} -> ValidationResult from an allow list in the
format of CONTRACT.md §7::

    tokens:
      - id_token: VALID_RFID_1         # compared case-insensitively
        status: Accepted               # any AuthorizationStatus; default Accepted
        expiry: 2027-01-01T00:00:00Z   # optional; after it the token is Expired
        parent_id_token: PARENT_RFID   # optional -> {value, type: ISO14443}
        evse_ids: [1, 2]               # optional

A token not in the list is ``Invalid`` (``unknown_status`` changes that). For tests the
validator can answer late (``delay_s``), fail (``fail=True``: the handler raises, which the
bus answers as ``HandlerException``) or never answer (``silent=True``). These are plain
attributes and may be changed while it runs.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import structlog
import yaml
from pydantic import ValidationError

from auth_module.types import (
    AuthorizationStatus,
    IdTokenType,
    ProvidedIdToken,
    ValidationResult,
    ValidationResultUpdate,
    to_wire,
)
from simulators.evse_manager import mask_token, resolve_bus

__all__ = ["ValidatorSim", "TokenEntry", "load_tokens", "TokensFileError"]


class TokensFileError(ValueError):
    """The allow-list file is missing or malformed (message names file and key)."""


class TokenEntry:
    __slots__ = ("id_token", "status", "expiry", "parent_id_token", "evse_ids")

    def __init__(self, id_token: str, status: AuthorizationStatus,
                 expiry: datetime | None, parent_id_token: str | None,
                 evse_ids: list[int] | None) -> None:
        self.id_token = id_token
        self.status = status
        self.expiry = expiry
        self.parent_id_token = parent_id_token
        self.evse_ids = evse_ids

    def result(self, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        status = self.status
        if self.expiry is not None and now >= self.expiry:
            status = AuthorizationStatus.Expired
        res: dict[str, Any] = {"authorization_status": status.value, "tariff_messages": []}
        if self.expiry is not None:
            res["expiry_time"] = self.expiry.isoformat().replace("+00:00", "Z")
        if self.parent_id_token:
            res["parent_id_token"] = {"value": self.parent_id_token,
                                      "type": IdTokenType.ISO14443.value}
        if self.evse_ids is not None:
            res["evse_ids"] = list(self.evse_ids)
        return to_wire(ValidationResult.model_validate(res))


def _parse_expiry(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise TokensFileError(f"{where}.expiry: not an RFC 3339 time: {value!r}") from None
    else:
        raise TokensFileError(f"{where}.expiry: not an RFC 3339 time: {value!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_tokens(data: Any, source: str = "tokens") -> dict[str, TokenEntry]:
    """The allow list (``{"tokens": [...]}`` or a bare list) keyed by casefolded id."""
    if data is None:
        return {}
    if isinstance(data, dict):
        unknown = set(data) - {"tokens"}
        if unknown:
            raise TokensFileError(f"{source}: unknown key {sorted(unknown)[0]!r}")
        items = data.get("tokens") or []
    else:
        items = data
    if not isinstance(items, list):
        raise TokensFileError(f"{source}: tokens: must be a list")
    out: dict[str, TokenEntry] = {}
    for n, item in enumerate(items):
        where = f"{source}: tokens[{n}]"
        if not isinstance(item, dict):
            raise TokensFileError(f"{where}: must be a mapping")
        unknown = set(item) - {"id_token", "status", "expiry", "parent_id_token", "evse_ids"}
        if unknown:
            raise TokensFileError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        tok = item.get("id_token")
        if tok is None or isinstance(tok, bool | dict | list):
            raise TokensFileError(f"{where}.id_token: required, a string")
        tok = str(tok)
        try:
            status = AuthorizationStatus(item.get("status", "Accepted"))
        except ValueError:
            raise TokensFileError(
                f"{where}.status: {item.get('status')!r} is not an AuthorizationStatus"
            ) from None
        evse_ids = item.get("evse_ids")
        if evse_ids is not None and (
            not isinstance(evse_ids, list)
            or not all(isinstance(e, int) and not isinstance(e, bool) for e in evse_ids)
        ):
            raise TokensFileError(f"{where}.evse_ids: must be a list of integers")
        parent = item.get("parent_id_token")
        out[tok.casefold()] = TokenEntry(
            tok, status, _parse_expiry(item.get("expiry"), where),
            str(parent) if parent is not None else None, evse_ids,
        )
    return out


def load_tokens(path: str | os.PathLike[str]) -> dict[str, TokenEntry]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TokensFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TokensFileError(f"{p}: bad YAML: {str(exc).splitlines()[0]}") from None
    return parse_tokens(data, str(p))


class ValidatorSim:
    """A token validator answering ``validate_token`` from an allow list.

    ``bus`` is a ``BusClient`` with module id ``module_id`` or a factory
    ``f(module_id) -> BusClient`` (then owned: started by ``start()``, stopped by ``stop()``).
    ``tokens_file`` is a path to the §7 YAML (re-read when it changes) and/or ``tokens`` the
    same content as Python data (``{"tokens": [...]}`` or a list of entries).
    """

    def __init__(
        self,
        bus: Any,
        module_id: str = "validator",
        impl_id: str = "main",
        tokens_file: str | os.PathLike[str] | None = None,
        *,
        tokens: Any = None,
        delay_s: float = 0.0,
        fail: bool = False,
        silent: bool = False,
        unknown_status: str = "Invalid",
        silent_max_s: float = 600.0,
        logger: Any = None,
    ) -> None:
        self.module_id = module_id
        self.impl_id = impl_id
        self.tokens_file = Path(tokens_file) if tokens_file is not None else None
        self.delay_s = float(delay_s)
        self.fail = bool(fail)
        self.silent = bool(silent)
        self.silent_max_s = float(silent_max_s)
        self.unknown_status = AuthorizationStatus(unknown_status)
        self.bus, self._owns_bus = resolve_bus(bus, module_id)
        self.log = (logger or structlog.get_logger("sim.validator")).bind(module=module_id)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        #: every ``validate_token`` call received: ``("validate_token", args)``
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._inline = parse_tokens(tokens, "tokens") if tokens is not None else {}
        self._file_tokens: dict[str, TokenEntry] = {}
        self._file_mtime: float | None = None
        if self.tokens_file is not None:
            self._reload(force=True)
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def start(self, wait_connected: float | None = 5.0) -> ValidatorSim:
        with self._lock:
            if self._started:
                return self
            self._started = True
        self.bus.provide_command(self.impl_id, "validate_token", self._h_validate,
                                 validate=_validate_args)
        if self._owns_bus:
            self.bus.start()
            if wait_connected and not self.bus.wait_connected(timeout=wait_connected):
                self.log.warning(f"validator {self.module_id}: not connected to the broker yet")
        self.bus.publish_ready()
        self.log.info(f"validator {self.module_id} ready: {len(self.tokens())} tokens")
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._owns_bus:
            self.bus.stop()

    def __enter__(self) -> ValidatorSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the allow list

    def _reload(self, force: bool = False) -> None:
        if self.tokens_file is None:
            return
        try:
            mtime = self.tokens_file.stat().st_mtime
        except OSError:
            if force:
                raise TokensFileError(f"{self.tokens_file}: cannot read: no such file") from None
            return
        if not force and mtime == self._file_mtime:
            return
        try:
            self._file_tokens = load_tokens(self.tokens_file)
            self._file_mtime = mtime
        except TokensFileError as exc:
            if force:
                raise
            self.log.warning(f"validator {self.module_id}: keeping the old list: {exc}")

    def tokens(self) -> dict[str, TokenEntry]:
        with self._lock:
            self._reload()
            return {**self._file_tokens, **self._inline}

    def set_token(self, id_token: str, status: str = "Accepted", *, expiry: Any = None,
                  parent_id_token: str | None = None, evse_ids: list[int] | None = None) -> None:
        """Add or replace one allow-list entry at run time."""
        entry = TokenEntry(id_token, AuthorizationStatus(status), _parse_expiry(expiry, "expiry"),
                           parent_id_token, evse_ids)
        with self._lock:
            self._inline[id_token.casefold()] = entry

    def validate(self, value: str) -> dict[str, Any]:
        """The ValidationResult (wire dict) for the token ``value``."""
        entry = self.tokens().get(value.casefold())
        if entry is None:
            return {"authorization_status": self.unknown_status.value, "tariff_messages": []}
        return entry.result()

    # ------------------------------------------------------------------ the command

    def _h_validate(self, args: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.received.append(("validate_token", args))
        token = ProvidedIdToken.model_validate(args["provided_token"])
        value = token.id_token.value
        if self.silent:
            self.log.info(f"validator {self.module_id}: {mask_token(value)} -> (silent)")
            # Hold the answer back until we are stopped (or a generous cap): the caller
            # sees a timeout. The reply that may follow at stop is for a call long gone.
            self._stopping.wait(self.silent_max_s)
            raise RuntimeError("simulated validator never answered")
        if self.delay_s > 0:
            self._stopping.wait(self.delay_s)
        if self.fail:
            self.log.info(f"validator {self.module_id}: {mask_token(value)} -> (failure)")
            raise RuntimeError("simulated validator failure")
        result = self.validate(value)
        self.log.info(f"validator {self.module_id}: {mask_token(value)} -> "
                      f"{result['authorization_status']}")
        return result

    def publish_update(self, connector_id: int, validation_result: Any) -> dict[str, Any]:
        """Publish var ``validate_result_update`` {validation_result, connector_id}."""
        if hasattr(validation_result, "model_dump"):
            validation_result = to_wire(validation_result)
        msg = to_wire(ValidationResultUpdate.model_validate(
            {"validation_result": validation_result, "connector_id": int(connector_id)}))
        self.bus.publish_var(self.impl_id, "validate_result_update", msg)
        return msg


def _validate_args(args: Any) -> str | None:
    if not isinstance(args, dict) or "provided_token" not in args:
        return "missing argument 'provided_token'"
    try:
        ProvidedIdToken.model_validate(args["provided_token"])
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ())) or "value"
        return f"provided_token.{loc}: {err.get('msg')}"
    return None
