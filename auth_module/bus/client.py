"""BusClient: the EVerest MQTT wire protocol on top of paho-mqtt 2.x; the connection's owner.

One client per module. It owns one paho connection and keeps it alive on its own
(the module must never exit because the broker is down), renews every subscription on
each (re)connect and routes what comes in. See ``docs/bus-api.md`` for the contract other
code relies on. Its jobs are in three rooms:

- here: lifecycle, subscriptions, the paho callbacks, publishing;
- :mod:`.outgoing`: calls we make (pending map, reaper, ``call`` / ``call_async``);
- :mod:`.incoming`: commands we answer (worker pool, ``provide_command``);
- :mod:`.errors`: the exceptions a call ends with.

Threads:
- a crew (:class:`~auth_module.bus.netloop.NetworkLoop`): one thread at a time reads and
  runs ``on_message``, so var/error/raw handlers run there, in order, and must be quick;
  work they hand on (:meth:`BusClient.run_soon`, the core's ``Runner`` port) runs on the
  thread that read it while another reads on. Command calls are handed to a bounded worker
  pool, so a handler may itself call other modules. A thread that publishes writes its
  packet itself.
- a small callback pool runs ``call_async`` ``on_result`` callbacks.
- a reaper thread times out ``call_async`` calls that got no answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
import structlog

from ..broker_access import BrokerAccess
from ..stopping import StopSignal
from ..text import exception_line
from .envelopes import (
    clear_error_envelope,
    cmd_response_wildcard,
    cmd_topic,
    encode,
    error_topic,
    raise_error_envelope,
    ready_envelope,
    ready_topic,
    var_envelope,
    var_topic,
)
from .errors import BusError, CallOutcome, CommandError, CommandTimeout, NotConnected
from .connection import back_off_for, log_fields, new_paho_client, target
from .incoming import CommandHandler, IncomingCommands, Validator
from .link import LinkWatch
from .netloop import NetworkLoop
from .outgoing import OutgoingCalls
from .subscriptions import ErrorHandler, RawHandler, VarHandler, error_dispatch, var_dispatch

__all__ = [
    "BusClient",
    "BusError",
    "CallOutcome",
    "CommandError",
    "CommandTimeout",
    "NotConnected",
]


_KEEPALIVE_S = 30
_MAX_INFLIGHT = 100
_MAX_QUEUED = 10_000  # bounds memory while the broker is away; paho resends these on reconnect
# What we subscribe with (QoS 1 with a persistent session: the broker then queues for us
# what arrives while we are away). A clean session makes QoS 1 towards us add nothing:
# a message the broker holds for us dies with the connection either way. It would only add
# a PUBACK per message, written before anything the message's handler publishes: a token
# or a validator's answer would then wait for its acknowledgement to leave first. (What we
# publish stays at ``qos``: paho keeps it until acknowledged and resends it after a
# reconnect, so a final status is never lost to a broker restart.)
SUBSCRIBE_QOS = 0


class BusClient:
    """A module's connection to the EVerest MQTT bus (see docs/bus-api.md)."""

    def __init__(
        self,
        module_id: str,
        host: str = "127.0.0.1",
        port: int = 1883,
        prefix: str = "everest/",
        qos: int = 1,
        command_workers: int = 16,
        logger: Any = None,
        work_threads: int = 8,
        work_backlog: int = 64,
        access: BrokerAccess | None = None,
    ) -> None:
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
        if command_workers < 1:
            raise ValueError(f"command_workers must be >= 1, got {command_workers!r}")
        self.module_id = module_id
        # How to reach the broker (socket, TLS, credentials, session; bus/connection.py);
        # host and port alone when not given, as the simulators and tools use it.
        self.access = access if access is not None else BrokerAccess(host=host, port=int(port))
        self.host, self.port = self.access.host, self.access.port
        self._sub_qos = 1 if self.access.persistent_session else SUBSCRIBE_QOS
        self.prefix = prefix
        self.qos = qos
        self.on_connection_change: Callable[[bool], None] | None = None
        self._log = logger if logger is not None else structlog.get_logger("bus")
        self._log = self._log.bind(module_id=module_id)
        self._link = LinkWatch(self._log, self.access)

        # State shared with the reading thread. _lock guards subscriptions and lifecycle flags.
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._connected = False
        self._connected_event = threading.Event()
        self._connect_sub_mid: int | None = None
        self._unacked_subs: set[int] = set()
        self._subs_done = threading.Condition(self._lock)

        # Dispatch tables are replaced, never mutated, so the reading thread reads them lock-free.
        self._filters: tuple[str, ...] = ()
        self._exact: dict[str, tuple[Callable[[str, bytes], None], ...]] = {}
        self._raw: tuple[tuple[str, RawHandler], ...] = ()

        self._mqtt = new_paho_client(module_id, self.access, _MAX_INFLIGHT, _MAX_QUEUED)
        self._mqtt.on_socket_open = self._on_socket_open
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_disconnect = self._on_disconnect
        self._mqtt.on_subscribe = self._on_subscribe
        self._mqtt.on_message = self._on_message
        # The reader plus up to work_threads threads running handed-on work (run_soon()).
        back_off = back_off_for(self.access)
        self._loop = NetworkLoop(self._mqtt, f"bus-{module_id}", back_off.first, back_off.cap,
                                 self._link.unreachable, max_threads=work_threads + 1,
                                 backlog=work_backlog, refused_max_delay_s=back_off.refused_cap,
                                 jitter=back_off.jitter)
        self._link.bind(self._loop)
        self._calls = OutgoingCalls(module_id, prefix, self._publish_call,
                                    self._loop.reads_here, self._log)
        self._commands = IncomingCommands(module_id, prefix, self._publish, command_workers,
                                          self._log)

        self._response_filter = cmd_response_wildcard(prefix, module_id)
        self._response_suffix = f"/response/{module_id}"
        self._add_filter(self._response_filter)

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background and return at once; retries with back-off."""
        with self._lock:
            if self._started or self._stopped:
                return
            self._started = True
        self._calls.start()
        self._log.info("bus starting", prefix=self.prefix, **log_fields(self.access))
        self._mqtt.connect_async(*target(self.access), keepalive=_KEEPALIVE_S)
        self._loop.start()

    def wait_connected(self, timeout: float = 5.0) -> bool:
        """True once connected with every subscription acknowledged, False after ``timeout``."""
        return self._connected_event.wait(timeout)

    def wait_subscribed(self, timeout: float = 5.0) -> bool:
        """True once the broker acknowledged every subscription sent so far.

        ``subscribe_*`` after the bus is up returns before the broker has the subscription;
        tests and tools that must not miss the next message wait here.
        """
        deadline = time.monotonic() + timeout
        with self._subs_done:
            while self._unacked_subs or not self._connected:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._subs_done.wait(remaining)
            return True

    @property
    def connected(self) -> bool:
        """Whether the broker link is up (and subscriptions renewed) right now."""
        return self._connected

    def stop(self) -> None:
        """Disconnect, fail outstanding calls with NotConnected, stop threads. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            started = self._started
        if started:
            try:
                self._mqtt.disconnect()
                self._loop.flush()
            except Exception as exc:  # already gone: nothing to tell the broker
                self._log.debug("disconnect failed", error=exception_line(exc))
            self._loop.stop(timeout=2.0)
        self._set_connected(False, notify=False)
        self._calls.fail_all()
        self._commands.stop()
        self._log.info("bus stopped")

    def __enter__(self) -> BusClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- being called ----------------------------------------------------------------

    def provide_command(
        self,
        impl_id: str,
        name: str,
        handler: CommandHandler,
        validate: Validator | None = None,
    ) -> None:
        """Answer calls to ``P modules/<own id>/impl/IID/cmd/NAME`` with ``handler(args)``."""
        topic = cmd_topic(self.prefix, self.module_id, impl_id, name)
        with self._lock:
            self._commands.add(topic, impl_id, name, handler, validate)
        self._add_dispatch(topic, self._commands.dispatch)

    def publish_var(self, impl_id: str, name: str, value: Any) -> None:
        """Publish a variable of one of our implementations."""
        self._publish(var_topic(self.prefix, self.module_id, impl_id, name), encode(var_envelope(value)))

    def raise_error(self, impl_id: str, error_type: str, message: str = "") -> None:
        """Raise error TYPE on one of our implementations (RaiseError envelope)."""
        env = raise_error_envelope(self.module_id, impl_id, error_type, message)
        self._publish(error_topic(self.prefix, self.module_id, impl_id, error_type), encode(env))

    def clear_error(self, impl_id: str, error_type: str, message: str = "") -> None:
        """Clear error TYPE on one of our implementations (ClearError envelope)."""
        env = clear_error_envelope(self.module_id, impl_id, error_type, message)
        self._publish(error_topic(self.prefix, self.module_id, impl_id, error_type), encode(env))

    def defer(self, work: Callable[[], object], quick: bool = False) -> bool:
        """Run ``work`` on a crew thread of its own, not the one reading the bus; False
        (nothing run) when the bounded crew and its backlog are full.

        From a handler this costs no thread hand-off: the thread that read the message
        runs the work, and another takes over the reading; for ``quick`` work (which
        waits for nothing before its first publish) only after that publish. See
        :mod:`.netloop`. Code outside ``bus/`` uses :meth:`run_soon`.
        """
        return self._loop.defer(work, quick=quick)

    def run_soon(self, work: Callable[[], object]) -> bool:
        """The core's ``Runner`` port (:class:`auth_module.core.ports.Runner`): token work,
        which waits for nothing before its first publish, on a crew thread of its own."""
        return self._loop.defer(work, quick=True)

    def publish_ready(self) -> None:
        """Announce ``P modules/<own id>/ready``."""
        self._publish(ready_topic(self.prefix, self.module_id), encode(ready_envelope()))

    # --- calling others (see .outgoing) ----------------------------------------------

    def call(
        self,
        module_id: str,
        impl_id: str,
        name: str,
        args: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
        cancel: StopSignal | None = None,
    ) -> Any:
        """Call a command and block for its answer (:meth:`.outgoing.OutgoingCalls.call`)."""
        return self._calls.call(module_id, impl_id, name, args, timeout, cancel)

    def call_async(
        self,
        module_id: str,
        impl_id: str,
        name: str,
        args: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
        on_result: Callable[[CallOutcome], None] | None = None,
        inline: bool = False,
    ) -> str:
        """Publish a call now and return its id (:meth:`.outgoing.OutgoingCalls.call_async`)."""
        return self._calls.call_async(module_id, impl_id, name, args, timeout, on_result, inline)

    # --- listening -------------------------------------------------------------------

    def subscribe_var(self, module_id: str, impl_id: str, name: str, handler: VarHandler) -> None:
        """``handler(value)`` for each ``Var`` on that topic; runs on the reading thread, in arrival order."""
        topic = var_topic(self.prefix, module_id, impl_id, name)
        self._add_dispatch(topic, var_dispatch(handler, self._log))

    def subscribe_error(
        self,
        module_id: str,
        impl_id: str,
        error_type: str,
        on_raised: ErrorHandler | None = None,
        on_cleared: ErrorHandler | None = None,
    ) -> None:
        """``on_raised(data)`` / ``on_cleared(data)`` for that error; runs on the reading thread."""
        topic = error_topic(self.prefix, module_id, impl_id, error_type)
        self._add_dispatch(topic, error_dispatch(on_raised, on_cleared, self._log))

    def subscribe_raw(self, topic_filter: str, handler: RawHandler) -> None:
        """``handler(topic, payload_bytes)`` for any filter (wildcards allowed); reading thread."""
        if not topic_filter:
            raise ValueError("topic_filter must be non-empty")
        with self._lock:
            self._raw = (*self._raw, (topic_filter, handler))
        self._add_filter(topic_filter)

    # --- internals: subscriptions ----------------------------------------------------

    def _add_dispatch(self, topic: str, fn: Callable[[str, bytes], None]) -> None:
        with self._lock:
            self._exact = {**self._exact, topic: (*self._exact.get(topic, ()), fn)}
        self._add_filter(topic)

    def _add_filter(self, topic_filter: str) -> None:
        """Remember the filter for every future connect, and subscribe now if connected.

        on_connect snapshots the filters and sends its SUBSCRIBE under the same lock, so a
        filter added concurrently is either in that batch or sees ``_connect_sub_mid`` set
        and subscribes itself (a double subscribe is harmless).
        """
        with self._lock:
            if topic_filter in self._filters:
                return
            self._filters = (*self._filters, topic_filter)
            if self._connect_sub_mid is not None:
                self._send_subscribe([topic_filter])

    def _send_subscribe(self, filters: list[str]) -> int | None:
        """Send one SUBSCRIBE; caller holds ``_lock`` so the SUBACK cannot beat the mid."""
        rc, mid = self._mqtt.subscribe([(f, self._sub_qos) for f in filters])
        self._loop.flush()
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            # Not connected any more: the next on_connect subscribes everything again.
            self._log.debug("subscribe deferred to next connect", rc=int(rc))
            return None
        self._unacked_subs.add(mid)
        return mid

    # --- internals: paho callbacks (the reading thread) ----------------------------------

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._link.opened(sock)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        try:
            if not self._link.answered(reason):
                return
            self._loop.connected()
            with self._lock:
                self._unacked_subs.clear()
                self._connect_sub_mid = self._send_subscribe(list(self._filters))
            if self.access.persistent_session and getattr(flags, "session_present", False):
                # The broker kept our session, subscriptions included, and is about to hand
                # over what it queued for us: we are connected now, not at the SUBACK of
                # the renewal, so that a token it delivers can already call its validators.
                self._set_connected(True, notify=True)
        except Exception as exc:
            self._log.error("on_connect failed", error=exception_line(exc))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        try:
            failed = [str(rc) for rc in reason_codes if getattr(rc, "is_failure", False)]
            if failed:
                self._log.warning("broker refused some subscriptions", reasons=failed)
            with self._lock:
                self._unacked_subs.discard(mid)
                initial = mid == self._connect_sub_mid
                self._subs_done.notify_all()
            if initial:
                self._set_connected(True, notify=True)
        except Exception as exc:
            self._log.error("on_subscribe failed", error=exception_line(exc))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        try:
            with self._lock:
                stopping = self._stopped
                self._connect_sub_mid = None
                self._unacked_subs.clear()
            was_connected = self._connected
            self._set_connected(False, notify=was_connected and not stopping)
            if not stopping:
                self._link.closed(reason)
        except Exception as exc:
            self._log.error("on_disconnect failed", error=exception_line(exc))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """Route one message; nothing raised here may reach paho (it would kill the loop)."""
        try:
            topic = msg.topic
            payload = msg.payload
            if not isinstance(payload, bytes):  # paho types it bytes | bytearray
                payload = bytes(payload)
            if self._is_response(topic):
                self._calls.on_response(topic, payload)
            for fn in self._exact.get(topic, ()):
                try:
                    fn(topic, payload)
                except Exception as exc:
                    self._log.error("dispatch failed", topic=topic, error=exception_line(exc))
            for topic_filter, handler in self._raw:
                if mqtt.topic_matches_sub(topic_filter, topic):
                    try:
                        handler(topic, payload)
                    except Exception as exc:
                        self._log.error("raw handler failed", topic=topic, error=exception_line(exc))
        except Exception as exc:
            self._log.error("message handling failed", error=exception_line(exc))

    def _is_response(self, topic: str) -> bool:
        """``topic_matches_sub(self._response_filter, topic)``, at a tenth of its cost: this
        runs for every incoming message."""
        if not topic.endswith(self._response_suffix) or not topic.startswith(self.prefix):
            return False
        parts = topic[len(self.prefix):].split("/")
        return (len(parts) == 8 and parts[0] == "modules" and parts[2] == "impl"
                and parts[4] == "cmd" and parts[6] == "response")

    def _set_connected(self, up: bool, notify: bool) -> None:
        with self._lock:
            changed = self._connected != up
            self._connected = self._calls.connected = up
            self._subs_done.notify_all()
        if up:
            self._connected_event.set()
            if changed:
                self._link.state("connected", "connected", broker=self.access.address)
        else:
            self._connected_event.clear()
        if changed and notify and self.on_connection_change is not None:
            try:
                self.on_connection_change(up)
            except Exception as exc:
                self._log.error("on_connection_change failed", error=exception_line(exc))

    # --- internals: publishing -------------------------------------------------------

    def _publish_call(self, topic: str, body: bytes) -> bool:
        """Publish a request; False only if paho refused to even queue it."""
        info = self._mqtt.publish(topic, body, qos=self.qos)
        self._loop.flush()
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN) and self.qos > 0:
            return True  # NO_CONN with QoS>0: queued by paho, resent after reconnect
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _publish(self, topic: str, body: bytes) -> None:
        """Publish from any thread, which writes it at once (QoS>0 survives a reconnect)."""
        info = self._mqtt.publish(topic, body, qos=self.qos)
        self._loop.flush()
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            return
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            if self.qos > 0:
                self._log.debug("not connected: message queued until reconnect", topic=topic)
            else:
                self._log.warning("not connected: message dropped", topic=topic)
            return
        self._log.warning("publish failed", topic=topic, rc=mqtt.error_string(info.rc))
