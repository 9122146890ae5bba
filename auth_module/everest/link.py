"""``ModuleReady`` to EVerest's manager, then the wait for its ``GlobalReady``.

Under the manager the order is the manager's (EVEREST-MANAGER.md §d): a module says
``{"msg_type":"ModuleReady","data":true}`` on ``P modules/MID/ready`` once it is set up,
and does its real work (here ``get_evse``, tokens) only after the manager's
``{"msg_type":"GlobalReady","data":true}`` on ``P ready``, which comes once every module
of the charger is ready. ``P ready`` is subscribed before ModuleReady is sent, as the
framework does (everest.cpp:203-207), so the answer cannot be missed.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import structlog

__all__ = ["ManagerLink"]

log = structlog.get_logger("everest.link")


class ManagerLink:
    """The module's side of the ready handshake, over the module's own bus client."""

    def __init__(self, prefix: str) -> None:
        self.topic = f"{prefix}ready"
        self._global_ready = threading.Event()
        self._announced = False

    @property
    def global_ready(self) -> bool:
        return self._global_ready.is_set()

    def attach(self, bus: Any) -> None:
        """Subscribe ``P ready``; call before the bus connects."""
        bus.subscribe_raw(self.topic, self._on_global_ready)

    def announce_and_wait(self, bus: Any, stop: threading.Event) -> bool:
        """Say ModuleReady once connected, wait for GlobalReady; False if stopped first."""
        warned = False
        while not bus.wait_connected(0.2):  # connected with every subscription in place
            if stop.is_set():
                return False
            if not warned:
                log.info("waiting for the broker before saying ModuleReady")
                warned = True
        self._announced = True
        bus.publish_ready()
        log.info("ModuleReady sent; waiting for EVerest's global ready")
        while not self._global_ready.wait(0.1):
            if stop.is_set():
                return False
        return True

    def on_connection_change(self, bus: Any, connected: bool) -> None:
        """After a lost link, say ModuleReady again: a broker that restarted may have lost it.

        A repeated ModuleReady only makes the manager repeat GlobalReady, which every
        module ignores once it has seen it (everest.cpp:905-909).
        """
        if connected and self._announced:
            bus.publish_ready()

    def _on_global_ready(self, topic: str, payload: bytes) -> None:
        try:
            envelope = json.loads(payload)
        except ValueError:
            return
        if not isinstance(envelope, dict) or envelope.get("msg_type") != "GlobalReady":
            return
        if envelope.get("data") is not True or self._global_ready.is_set():
            return  # non-true data and repeats are ignored, as the framework does
        log.info("EVerest's global ready received")
        self._global_ready.set()
