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
from pathlib import Path
from typing import Any

import structlog

# The allow-list format is the allow_list plugin's; the simulator reads it the same way.
from auth_module.plugins.allow_list import (
    TokenEntry,
    TokensFile,
    TokensFileError,
    _parse_expiry,
    load_tokens,
    parse_tokens,
)
from auth_module.types import (
    AuthorizationStatus,
    ProvidedIdToken,
    ValidationResultUpdate,
    to_wire,
)
from auth_module.schema import InterfaceSchemas
from auth_module.logs import mask
from simulators.evse_manager import resolve_bus

__all__ = ["ValidatorSim", "TokenEntry", "load_tokens", "parse_tokens", "TokensFileError"]


class ValidatorSim:
    """A token validator answering ``validate_token`` from an allow list.

    ``bus`` is a ``BusClient`` with module id ``module_id`` or a factory
    ``f(module_id) -> BusClient`` (then owned: started by ``start()``, stopped by ``stop()``).
    ``tokens_file`` is a path to the §7 YAML, or the allow_list plugin's CSV (re-read when it
    changes; a broken edit keeps the last good list) and/or ``tokens`` the same content as
    Python data (``{"tokens": [...]}`` or a list of entries).
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
        self._file: TokensFile | None = None
        if self.tokens_file is not None:
            self._file = TokensFile(
                self.tokens_file, interval_s=0.0,
                on_problem=lambda problem: self.log.warning(
                    f"validator {self.module_id}: {problem}"))
            self._file.load()  # TokensFileError if unusable
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def start(self, wait_connected: float | None = 5.0) -> ValidatorSim:
        with self._lock:
            if self._started:
                return self
            self._started = True
        self.bus.provide_command(self.impl_id, "validate_token", self._h_validate,
                                 validate=InterfaceSchemas.load().args_checker(
                                     "auth_token_validator", "validate_token"))
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

    def tokens(self) -> dict[str, TokenEntry]:
        file_tokens = self._file.tokens() if self._file is not None else {}
        with self._lock:
            return {**file_tokens, **self._inline}

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
            self.log.info(f"validator {self.module_id}: {mask(value)} -> (silent)")
            # Hold the answer back until we are stopped (or a generous cap): the caller
            # sees a timeout. The reply that may follow at stop is for a call long gone.
            self._stopping.wait(self.silent_max_s)
            raise RuntimeError("simulated validator never answered")
        if self.delay_s > 0:
            self._stopping.wait(self.delay_s)
        if self.fail:
            self.log.info(f"validator {self.module_id}: {mask(value)} -> (failure)")
            raise RuntimeError("simulated validator failure")
        result = self.validate(value)
        self.log.info(f"validator {self.module_id}: {mask(value)} -> "
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
