"""The EVerest MQTT bus: topics, envelopes and the BusClient (see docs/bus-api.md)."""

from auth_module.bus.client import (
    BusClient,
    BusError,
    CallOutcome,
    CommandError,
    CommandTimeout,
    NotConnected,
)
from auth_module.bus.envelopes import EnvelopeError

__all__ = [
    "BusClient",
    "BusError",
    "CallOutcome",
    "CommandError",
    "CommandTimeout",
    "EnvelopeError",
    "NotConnected",
]
