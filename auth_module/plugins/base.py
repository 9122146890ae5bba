"""What an in-process validator or token provider is, for plugin authors.

A third-party package adds one by declaring an entry point in the group
``auth_module.validators`` or ``auth_module.token_providers`` that names a factory:
``factory(options: dict, context: PluginContext) -> TokenValidator | TokenProvider``.
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


class TokenProvider(Protocol):
    name: str

    def start(self, on_token: Callable[[ProvidedIdToken], None]) -> None:
        """Begin reading; call ``on_token`` for each token presented, from any thread."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class PluginContext:
    base_dir: Path  # relative paths in plugin options are relative to the station file
