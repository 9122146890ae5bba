"""What an in-process validator or token provider is, for plugin authors.

A third-party package adds one by declaring an entry point in the group
``auth_module.validators`` or ``auth_module.token_providers`` that names a factory:
``factory(options: dict, context: PluginContext) -> TokenValidator | TokenProvider``.

A card reader may also offer ``health() -> ReaderHealth`` (optional, read-only, cheap, safe
from any thread): the station console asks every provider for it with ``getattr`` and
shows the readers that answer. The built-in readers get it from
:class:`~auth_module.plugins.providers.ReaderProvider`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..types import ProvidedIdToken, ValidationResult


class TokenValidator(Protocol):
    name: str

    def validate(self, token: ProvidedIdToken) -> ValidationResult:
        """Answer for one token. May block (the module bounds the wait) and may raise
        (the module then counts it as ``Unknown``)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class ReaderHealth:
    """A card reader's state, as ``health()`` reports it.

    ``name``       the provider's name (``pn532:/dev/serial0``, ``pcsc``...)
    ``kind``       its plugin kind (``serial``, ``hid``, ``pn532``, ``pcsc``, ``stdin``)
    ``connected``  the device is open and answering
    ``detail``     one line, no token values: ``reading /dev/serial0 (PN532 v1.6)`` or why
                   it is not connected (``cannot open /dev/serial0: No such file...``)
    ``since``      when ``connected`` last changed (UNIX time, seconds)
    """

    name: str
    kind: str
    connected: bool
    detail: str
    since: float


class TokenProvider(Protocol):
    name: str

    def start(self, on_token: Callable[[ProvidedIdToken], None]) -> None:
        """Begin reading; call ``on_token`` for each token presented, from any thread."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class PluginContext:
    base_dir: Path  # relative paths in plugin options are relative to the station file
