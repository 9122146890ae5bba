"""Finding in-process plugins named in the station file (entry points; issue 4 adds them)."""

from __future__ import annotations

from ..station import Station
from .base import TokenProvider, TokenValidator


def load_validators(station: Station, validators: list[TokenValidator]) -> list[TokenValidator]:
    """Bus validators are built by the module; this keeps station-file order for plugins."""
    return validators


def load_providers(station: Station) -> list[TokenProvider]:
    return []
