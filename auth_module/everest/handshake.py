"""Ask EVerest's manager for this module's configuration (EVEREST-MANAGER.md §c).

The framework's way, step for step: subscribe ``P modules/MID/response`` first, then
publish ``{"msg_type":"ConfigurationRequest","data":{"origin":MID,"request":{"type":
"Module"},"type":"Get"}}`` on ``P config/request`` (QoS 2, not retained), wait 5 s for the
answer, publish once more, wait 5 s again (module_config.cpp:76-93, types.hpp:164-165).

A short-lived connection of its own: the module's bus client is built from the station
this answer describes, so it cannot exist before it. A broker that is not there yet is
retried with back-off, as in station-file mode; no answer after the retry is returned as
``None`` and the caller stays alive and not ready (the C++ framework would exit here, which
the manager takes for a crash of the whole charger).
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import structlog

from .env import ManagerEnv

__all__ = ["ConfigRequester", "config_request", "request_topic", "response_topic"]

log = structlog.get_logger("everest.handshake")

ANSWER_TIMEOUT_S = 5.0
ATTEMPTS = 2  # the request and one retry
_KEEPALIVE_S = 20  # as the framework's client (mqtt_client.cpp:22)


def request_topic(prefix: str) -> str:
    return f"{prefix}config/request"


def response_topic(prefix: str, module_id: str) -> str:
    return f"{prefix}modules/{module_id}/response"


def config_request(module_id: str) -> dict[str, Any]:
    """The framework's ``Get`` request for a module's own config (mqtt_config_service.cpp:775-820)."""
    return {"msg_type": "ConfigurationRequest",
            "data": {"origin": module_id, "request": {"type": "Module"}, "type": "Get"}}


def _encode(envelope: dict[str, Any]) -> bytes:
    # Compact with sorted keys: byte for byte what nlohmann's dump() gives.
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode()


class ConfigRequester:
    """One configuration request with its retry, over a connection of its own."""

    def __init__(self, env: ManagerEnv, answer_timeout_s: float = ANSWER_TIMEOUT_S,
                 attempts: int = ATTEMPTS) -> None:
        self.env = env
        self.answer_timeout_s = answer_timeout_s
        self.attempts = attempts
        self._answers: queue.Queue[bytes] = queue.Queue()
        self._subscribed = threading.Event()
        self._warned_unreachable = False
        self._topic = response_topic(env.prefix, env.module_id)
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{env.module_id}-config-{uuid.uuid4().hex[:8]}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
            transport="unix" if env.socket_path else "tcp",
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.connect_timeout = 2.0  # a SIGTERM must end us within 5 s even then
        self._client.on_socket_open = self._on_socket_open
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def fetch(self, stop: threading.Event) -> bytes | None:
        """The manager's answer (raw payload), or ``None`` if stopped or never answered."""
        env = self.env
        log.info("asking EVerest's manager for the configuration", module_id=env.module_id,
                 broker=env.broker, prefix=env.prefix)
        if env.socket_path:
            self._client.connect_async(env.socket_path, keepalive=_KEEPALIVE_S)
        else:
            self._client.connect_async(env.host, env.port, keepalive=_KEEPALIVE_S)
        self._client.loop_start()
        try:
            return self._ask(stop)
        finally:
            try:
                self._client.disconnect()
            except Exception:  # noqa: BLE001 - already gone: nothing to tell the broker
                pass
            self._client.loop_stop()

    def _ask(self, stop: threading.Event) -> bytes | None:
        for attempt in range(1, self.attempts + 1):
            while not self._subscribed.wait(0.1):  # connected, and the answer cannot be missed
                if stop.is_set():
                    return None
            self._client.publish(request_topic(self.env.prefix), _encode(config_request(
                self.env.module_id)), qos=2)
            try:
                answer = self._wait_answer(stop)
            except _Stopped:
                return None
            if answer is not None:
                return answer
            if attempt < self.attempts:
                log.warning("no configuration from EVerest's manager yet; asking again",
                            waited_s=self.answer_timeout_s)
        return None

    def _wait_answer(self, stop: threading.Event) -> bytes | None:
        waited = 0.0
        while waited < self.answer_timeout_s:
            if stop.is_set():
                raise _Stopped
            try:
                return self._answers.get(timeout=0.1)
            except queue.Empty:
                waited += 0.1
        return None

    # --- paho callbacks (its network thread) -------------------------------------------

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if not self.env.socket_path:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection; retrying", broker=self.env.broker,
                        reason=str(reason))
            return
        if self._warned_unreachable:
            log.info("broker reachable again", broker=self.env.broker)
            self._warned_unreachable = False
        client.subscribe(self._topic, qos=2)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._warned_unreachable:
            log.warning("broker not reachable; retrying with back-off", broker=self.env.broker)
            self._warned_unreachable = True

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any) -> None:
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._subscribed.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self._topic:
            self._answers.put(bytes(msg.payload))


class _Stopped(Exception):
    """SIGTERM while waiting."""
