"""The EVerest MQTT bus: topics, envelopes and the BusClient (see docs/bus-api.md)."""

from auth_module.bus.client import BusClient
from auth_module.bus.envelopes import EnvelopeError
from auth_module.bus.errors import (
    BusError,
    CallCancelled,
    CallOutcome,
    CommandError,
    CommandTimeout,
    NotConnected,
)

__all__ = [
    "BusClient",
    "BusError",
    "CallCancelled",
    "CallOutcome",
    "CommandError",
    "CommandTimeout",
    "EnvelopeError",
    "NotConnected",
]
