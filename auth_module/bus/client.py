"""BusClient: the EVerest MQTT wire protocol on top of paho-mqtt 2.x.

One client per module. It owns one paho connection and keeps it alive on its own
(the module must never exit because the broker is down), renews every subscription on
each (re)connect, answers every incoming command exactly once, and matches replies to our
own calls by call id. See ``docs/bus-api.md`` for the contract other code relies on.

Threads:
- a crew (:class:`~auth_module.bus.netloop.NetworkLoop`): one thread at a time reads and
  runs ``on_message``, so var/error/raw handlers run there, in order, and must be quick;
  work they ``defer`` runs on the thread that read it while another reads on. Command
  calls are handed to a bounded worker pool, so a handler may itself call other modules.
  A thread that publishes writes its packet itself.
- a small callback pool runs ``call_async`` ``on_result`` callbacks.
- a reaper thread times out ``call_async`` calls that got no answer.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import structlog

from auth_module.bus.netloop import NetworkLoop
from auth_module.bus.envelopes import (
    EnvelopeError,
    clear_error_envelope,
    cmd_envelope,
    cmd_error_envelope,
    cmd_response_topic,
    cmd_response_wildcard,
    cmd_result_envelope,
    cmd_topic,
    encode,
    error_topic,
    new_call_id,
    parse_cmd,
    parse_cmd_result,
    parse_error,
    parse_var,
    raise_error_envelope,
    ready_envelope,
    ready_topic,
    salvage_cmd_id_origin,
    var_envelope,
    var_topic,
)

__all__ = [
    "BusClient",
    "BusError",
    "CallOutcome",
    "CommandError",
    "CommandTimeout",
    "NotConnected",
]

CommandHandler = Callable[[dict[str, Any]], Any]
Validator = Callable[[dict[str, Any]], str | None]
VarHandler = Callable[[Any], None]
ErrorHandler = Callable[[dict[str, Any]], None]
RawHandler = Callable[[str, bytes], None]

_RECONNECT_MIN_S = 0.1
_RECONNECT_MAX_S = 5.0
_KEEPALIVE_S = 30
_MAX_INFLIGHT = 100
_MAX_QUEUED = 10_000  # bounds memory while the broker is away; paho resends these on reconnect
_REAP_SLACK_S = 0.05  # a call times out up to this much after its timeout
# What we subscribe with. Our session is clean, so QoS 1 towards us would add nothing:
# a message the broker holds for us dies with the connection either way. It would only add
# a PUBACK per message, written before anything the message's handler publishes: a token
# or a validator's answer would then wait for its acknowledgement to leave first. (What we
# publish stays at ``qos``: paho keeps it until acknowledged and resends it after a
# reconnect, so a final status is never lost to a broker restart.)
SUBSCRIBE_QOS = 0


_HANDLER_EVENTS = frozenset({"HandlerException", "NotReady", "CmdTimeout", "Shutdown"})


class BusError(Exception):
    """Base of the errors a call can end with."""


class CommandError(BusError):
    """The callee answered with an error envelope (``event``: its ``__everest__error_type``,
    CONTRACT.md §3)."""

    def __init__(self, event: str, msg: str = "") -> None:
        super().__init__(f"{event}: {msg}" if msg else event)
        self.event = event
        self.msg = msg


class CommandTimeout(BusError, TimeoutError):
    """No answer arrived within the call's timeout."""


class NotConnected(BusError, ConnectionError):
    """The broker was not reachable when the call was made (or the bus was stopped)."""


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What ``call_async`` hands to ``on_result``: a ``retval`` or an ``error``."""

    retval: Any = None
    error: BusError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _Pending:
    """One outstanding call; completed exactly once by whoever pops it from the map."""

    __slots__ = ("error", "event", "inline", "label", "on_result", "retval", "sync", "timeout")

    def __init__(
        self, label: str, sync: bool, on_result: Callable[[CallOutcome], None] | None, timeout: float
    ) -> None:
        self.label = label
        self.timeout = timeout
        self.sync = sync
        self.on_result = on_result
        self.inline = False
        self.event = threading.Event() if sync else None  # only a blocking caller waits
        self.retval: Any = None
        self.error: BusError | None = None


@dataclass(frozen=True, slots=True)
class _Command:
    impl_id: str
    name: str
    handler: CommandHandler
    validate: Validator | None


def _one_line(exc: BaseException) -> str:
    """``Type: text`` on one line, for logs that must never carry a traceback."""
    text = str(exc).replace("\n", " ").strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
    ) -> None:
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
        if command_workers < 1:
            raise ValueError(f"command_workers must be >= 1, got {command_workers!r}")
        self.module_id = module_id
        self.host = host
        self.port = int(port)
        self.prefix = prefix
        self.qos = qos
        self.on_connection_change: Callable[[bool], None] | None = None
        self._log = logger if logger is not None else structlog.get_logger("bus")
        self._log = self._log.bind(module_id=module_id)

        # State shared with the reading thread. _lock guards subscriptions and lifecycle flags.
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._connected = False
        self._connected_event = threading.Event()
        self._link_state: str | None = None  # last state we logged, so we log changes only
        self._connect_sub_mid: int | None = None
        self._unacked_subs: set[int] = set()
        self._subs_done = threading.Condition(self._lock)

        # Dispatch tables are replaced, never mutated, so the reading thread reads them lock-free.
        self._filters: tuple[str, ...] = ()
        self._exact: dict[str, tuple[Callable[[str, bytes], None], ...]] = {}
        self._raw: tuple[tuple[str, RawHandler], ...] = ()
        self._commands: dict[str, _Command] = {}

        # Calls we made. One lock (the condition's) guards the map and the deadline heap.
        self._pending: dict[str, _Pending] = {}
        self._pending_lock = threading.Lock()
        self._pending_cond = threading.Condition(self._pending_lock)
        self._deadlines: list[tuple[float, int, str]] = []
        self._reaper_wakes_at = float("inf")  # when the reaper wakes by itself next
        self._seq = itertools.count()
        self._reaper = threading.Thread(target=self._reap_loop, name=f"bus-reaper-{module_id}", daemon=True)


        self._workers = ThreadPoolExecutor(max_workers=command_workers, thread_name_prefix=f"bus-cmd-{module_id}")
        self._callbacks = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"bus-cb-{module_id}")

        self._response_filter = cmd_response_wildcard(prefix, module_id)
        self._response_suffix = f"/response/{module_id}"
        self._add_filter(self._response_filter)

        client_id = f"{module_id}-{uuid.uuid4().hex[:12]}"  # unique: two processes must not kick each other
        self._mqtt = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        self._mqtt.max_inflight_messages_set(_MAX_INFLIGHT)
        self._mqtt.max_queued_messages_set(_MAX_QUEUED)
        self._mqtt.on_socket_open = self._on_socket_open
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_disconnect = self._on_disconnect
        self._mqtt.on_subscribe = self._on_subscribe
        self._mqtt.on_message = self._on_message
        # The reader plus up to work_threads threads running deferred work (defer()).
        self._loop = NetworkLoop(self._mqtt, f"bus-{module_id}", _RECONNECT_MIN_S,
                                 _RECONNECT_MAX_S, self._on_unreachable,
                                 max_threads=work_threads + 1, backlog=work_backlog)

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background and return at once; retries with back-off."""
        with self._lock:
            if self._started or self._stopped:
                return
            self._started = True
        self._reaper.start()
        self._log.info("bus starting", host=self.host, port=self.port, prefix=self.prefix)
        self._mqtt.connect_async(self.host, self.port, keepalive=_KEEPALIVE_S)
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
                self._log.debug("disconnect failed", error=_one_line(exc))
            self._loop.stop(timeout=2.0)
        self._set_connected(False, notify=False)
        with self._pending_cond:
            pending = list(self._pending.values())
            self._pending.clear()
            self._deadlines.clear()
            self._pending_cond.notify_all()
        for p in pending:
            self._complete(p, None, NotConnected(f"{p.label}: bus stopped"))
        if self._reaper.is_alive() and threading.current_thread() is not self._reaper:
            self._reaper.join(timeout=2.0)
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._callbacks.shutdown(wait=False)
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
            if topic in self._commands:
                raise ValueError(f"command {impl_id}/{name} is already provided")
            self._commands = {**self._commands, topic: _Command(impl_id, name, handler, validate)}
        self._add_dispatch(topic, self._dispatch_command)

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
        """Run ``work`` on a thread of its own, not the one reading the bus; False (nothing
        run) when the bounded crew and its backlog are full.

        From a handler this costs no thread hand-off: the thread that read the message
        runs the work, and another takes over the reading; for ``quick`` work (which
        waits for nothing before its first publish) only after that publish. See
        :mod:`.netloop`.
        """
        return self._loop.defer(work, quick)

    def publish_ready(self) -> None:
        """Announce ``P modules/<own id>/ready``."""
        self._publish(ready_topic(self.prefix, self.module_id), encode(ready_envelope()))

    # --- calling others --------------------------------------------------------------

    def call(
        self,
        module_id: str,
        impl_id: str,
        name: str,
        args: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
    ) -> Any:
        """Call a command and block for its answer.

        Raises CommandError on an error answer, CommandTimeout after ``timeout`` seconds,
        NotConnected if the broker is down now. A link that drops while we wait does not end
        the call early: paho resends the QoS1 request and the answer may still come.
        """
        if self._loop.reads_here():
            raise RuntimeError("bus.call() on the reading thread would deadlock; use call_async()")
        topic = cmd_topic(self.prefix, module_id, impl_id, name)
        label = f"{module_id}/{impl_id}/{name}"
        if not self._connected:
            raise NotConnected(f"{label}: not connected to the broker")
        call_id = new_call_id()
        body = encode(cmd_envelope(call_id, args, self.module_id))
        pending = _Pending(label, sync=True, on_result=None, timeout=timeout)
        with self._pending_lock:
            self._pending[call_id] = pending
        if not self._publish_call(topic, body):
            with self._pending_lock:
                self._pending.pop(call_id, None)
            raise NotConnected(f"{label}: publish refused (too many queued messages)")
        event = pending.event
        assert event is not None
        if not event.wait(timeout):
            with self._pending_lock:
                mine = self._pending.pop(call_id, None)
            if mine is not None:
                raise CommandTimeout(f"{label}: no answer within {timeout:g} s")
            event.wait()  # the answer won the race and is being filled in right now
        if pending.error is not None:
            raise pending.error
        return pending.retval

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
        """Publish a call now (so calls keep their order on the wire) and return its id.

        ``on_result(CallOutcome)`` runs later on a worker thread; without it, failures are
        logged in one line. ``inline=True`` runs it on the thread that completes the call
        instead (the reading thread for an answer): no thread hand-off, for a quick,
        non-blocking ``on_result`` on a latency-critical path.
        """
        topic = cmd_topic(self.prefix, module_id, impl_id, name)
        label = f"{module_id}/{impl_id}/{name}"
        call_id = new_call_id()
        body = encode(cmd_envelope(call_id, args, self.module_id))
        pending = _Pending(label, sync=False, on_result=on_result, timeout=timeout)
        pending.inline = inline
        if not self._connected:
            self._complete(pending, None, NotConnected(f"{label}: not connected to the broker"))
            return call_id
        with self._pending_cond:
            self._pending[call_id] = pending
            deadline = time.monotonic() + timeout
            heapq.heappush(self._deadlines, (deadline, next(self._seq), call_id))
            if deadline < self._reaper_wakes_at:  # wake the reaper only if it must fire sooner
                self._pending_cond.notify()
        if not self._publish_call(topic, body):
            with self._pending_lock:
                mine = self._pending.pop(call_id, None)
            if mine is not None:
                self._complete(mine, None, NotConnected(f"{label}: publish refused (too many queued messages)"))
        return call_id

    # --- listening -------------------------------------------------------------------

    def subscribe_var(self, module_id: str, impl_id: str, name: str, handler: VarHandler) -> None:
        """``handler(value)`` for each ``Var`` on that topic; runs on the reading thread, in arrival order."""
        topic = var_topic(self.prefix, module_id, impl_id, name)

        def dispatch(topic: str, payload: bytes) -> None:
            try:
                value = parse_var(payload)
            except EnvelopeError as exc:
                self._log.warning("malformed var dropped", topic=topic, reason=str(exc))
                return
            try:
                handler(value)
            except Exception as exc:
                self._log.error("var handler failed", topic=topic, error=_one_line(exc))

        self._add_dispatch(topic, dispatch)

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

        def dispatch(topic: str, payload: bytes) -> None:
            try:
                msg = parse_error(payload)
            except EnvelopeError as exc:
                self._log.warning("malformed error envelope dropped", topic=topic, reason=str(exc))
                return
            fn = on_raised if msg.raised else on_cleared
            if fn is None:
                return
            try:
                fn(msg.data)
            except Exception as exc:
                self._log.error("error handler failed", topic=topic, error=_one_line(exc))

        self._add_dispatch(topic, dispatch)

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
        rc, mid = self._mqtt.subscribe([(f, SUBSCRIBE_QOS) for f in filters])
        self._loop.flush()
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            # Not connected any more: the next on_connect subscribes everything again.
            self._log.debug("subscribe deferred to next connect", rc=int(rc))
            return None
        self._unacked_subs.add(mid)
        return mid

    # --- internals: paho callbacks (the reading thread) ----------------------------------

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        """TCP_NODELAY, or QoS1 request/reply stalls ~40 ms on delayed ACKs."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError) as exc:
            self._log.debug("TCP_NODELAY not set", error=_one_line(exc))

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        try:
            if reason.is_failure:
                self._set_link_state("refused", "broker refused connection, retrying", reason=str(reason))
                return
            self._loop.connected()
            with self._lock:
                self._unacked_subs.clear()
                self._connect_sub_mid = self._send_subscribe(list(self._filters))
        except Exception as exc:
            self._log.error("on_connect failed", error=_one_line(exc))

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
            self._log.error("on_subscribe failed", error=_one_line(exc))

    def _on_unreachable(self, exc: BaseException) -> None:
        self._set_link_state("unreachable", "broker unreachable, retrying", host=self.host,
                             port=self.port, reason=_one_line(exc))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        try:
            with self._lock:
                stopping = self._stopped
                self._connect_sub_mid = None
                self._unacked_subs.clear()
            was_connected = self._connected
            self._set_connected(False, notify=was_connected and not stopping)
            if not stopping:
                self._set_link_state("lost", "connection lost", reason=str(reason))
        except Exception as exc:
            self._log.error("on_disconnect failed", error=_one_line(exc))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """Route one message; nothing raised here may reach paho (it would kill the loop)."""
        try:
            topic = msg.topic
            payload = msg.payload
            if not isinstance(payload, bytes):  # paho types it bytes | bytearray
                payload = bytes(payload)
            if self._is_response(topic):
                self._on_response(topic, payload)
            for fn in self._exact.get(topic, ()):
                try:
                    fn(topic, payload)
                except Exception as exc:
                    self._log.error("dispatch failed", topic=topic, error=_one_line(exc))
            for topic_filter, handler in self._raw:
                if mqtt.topic_matches_sub(topic_filter, topic):
                    try:
                        handler(topic, payload)
                    except Exception as exc:
                        self._log.error("raw handler failed", topic=topic, error=_one_line(exc))
        except Exception as exc:
            self._log.error("message handling failed", error=_one_line(exc))

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
            self._connected = up
            self._subs_done.notify_all()
        if up:
            self._connected_event.set()
            if changed:
                self._set_link_state("connected", "connected", host=self.host, port=self.port)
        else:
            self._connected_event.clear()
        if changed and notify and self.on_connection_change is not None:
            try:
                self.on_connection_change(up)
            except Exception as exc:
                self._log.error("on_connection_change failed", error=_one_line(exc))

    def _set_link_state(self, state: str, text: str, **kw: Any) -> None:
        """Log a link state once per change: retries every 0.1-5 s must not flood the log."""
        with self._lock:
            if self._link_state == state:
                return
            self._link_state = state
        if state == "connected":
            self._log.info(text, **kw)
        else:
            self._log.warning(text, **kw)

    # --- internals: calls ------------------------------------------------------------

    def _on_response(self, topic: str, payload: bytes) -> None:
        try:
            res = parse_cmd_result(payload)
        except EnvelopeError as exc:
            self._log.warning("malformed command result dropped", topic=topic, reason=str(exc))
            return
        with self._pending_lock:
            pending = self._pending.pop(res.id, None)
        if pending is None:
            self._log.debug("answer to an unknown or timed-out call dropped", topic=topic, call_id=res.id)
            return
        if res.error is not None:
            self._complete(pending, None, CommandError(*res.error))
        else:
            self._complete(pending, res.retval, None)

    def _complete(self, pending: _Pending, retval: Any, error: BusError | None) -> None:
        """Finish a call that the caller has already removed from the map (exactly once)."""
        pending.retval = retval
        pending.error = error
        if pending.sync:
            assert pending.event is not None
            pending.event.set()
            return
        if pending.on_result is None:
            if error is not None:
                self._log.warning("call failed", call=pending.label, error=_one_line(error))
            return
        outcome = CallOutcome(retval=retval, error=error)
        if pending.inline:
            self._run_on_result(pending, outcome)
            return
        try:
            self._callbacks.submit(self._run_on_result, pending, outcome)
        except RuntimeError:  # pool shut down by stop(): run it here rather than lose it
            self._run_on_result(pending, outcome)

    def _run_on_result(self, pending: _Pending, outcome: CallOutcome) -> None:
        try:
            assert pending.on_result is not None
            pending.on_result(outcome)
        except Exception as exc:
            self._log.error("on_result callback failed", call=pending.label, error=_one_line(exc))

    def _reap_loop(self) -> None:
        """Time out call_async calls; sync calls time themselves out in call()."""
        while True:
            expired: list[_Pending] = []
            with self._pending_cond:
                if self._stopped:
                    return
                now = time.monotonic()
                while self._deadlines and (self._deadlines[0][0] <= now
                                           or self._deadlines[0][2] not in self._pending):
                    _, _, call_id = heapq.heappop(self._deadlines)  # expired, or answered
                    p = self._pending.pop(call_id, None)
                    if p is not None:
                        expired.append(p)
                if not expired:
                    # Answered calls leave their deadline behind; waking a little late lets
                    # one wake-up sweep many of them (a busy station answers hundreds a
                    # second) instead of one wake-up each, on the token path's CPU.
                    if self._deadlines:
                        self._reaper_wakes_at = self._deadlines[0][0] + _REAP_SLACK_S
                        self._pending_cond.wait(self._reaper_wakes_at - now)
                    else:
                        self._reaper_wakes_at = float("inf")
                        self._pending_cond.wait()
                    self._reaper_wakes_at = float("-inf")  # awake: sees every new call
            for p in expired:
                self._complete(p, None, CommandTimeout(f"{p.label}: no answer within {p.timeout:g} s"))

    def _publish_call(self, topic: str, body: bytes) -> bool:
        """Publish a request; False only if paho refused to even queue it."""
        info = self._mqtt.publish(topic, body, qos=self.qos)
        self._loop.flush()
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN) and self.qos > 0:
            return True  # NO_CONN with QoS>0: queued by paho, resent after reconnect
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    # --- internals: commands (worker pool) -------------------------------------------

    def _dispatch_command(self, topic: str, payload: bytes) -> None:
        entry = self._commands.get(topic)
        if entry is None:
            return
        try:
            self._workers.submit(self._run_command, entry, payload)
        except RuntimeError:
            self._log.warning("command dropped: bus is stopping", topic=topic)

    def _run_command(self, entry: _Command, payload: bytes) -> None:
        label = f"{entry.impl_id}/{entry.name}"
        try:
            try:
                cmd = parse_cmd(payload)
            except EnvelopeError as exc:
                salvaged = salvage_cmd_id_origin(payload)
                if salvaged is None:
                    self._log.warning("malformed command dropped: no id/origin to answer", cmd=label, reason=str(exc))
                    return
                self._log.warning("malformed command answered", cmd=label, reason=str(exc))
                self._answer_error(entry, salvaged[0], salvaged[1], "MessageParsingError", str(exc))
                return
            if entry.validate is not None:
                try:
                    problem = entry.validate(cmd.args)
                except Exception as exc:
                    problem = _one_line(exc)
                if problem:
                    self._log.info("command refused by validation", cmd=label, origin=cmd.origin)
                    self._answer_error(entry, cmd.id, cmd.origin, "SchemaValidationError", str(problem))
                    return
            try:
                retval = entry.handler(cmd.args)
            except Exception as exc:
                # A handler may name the error event itself (e.g. NotReady) with an ``event``
                # attribute on its exception; anything else is a HandlerException.
                event = getattr(exc, "event", None)
                if event not in _HANDLER_EVENTS:
                    event = "HandlerException"
                    self._log.error("command handler failed", cmd=label, origin=cmd.origin, error=_one_line(exc))
                self._answer_error(entry, cmd.id, cmd.origin, event, str(exc) or type(exc).__name__)
                return
            try:
                body = encode(cmd_result_envelope(cmd.id, retval, self.module_id))
            except (TypeError, ValueError) as exc:
                self._log.error("command result is not JSON", cmd=label, error=_one_line(exc))
                self._answer_error(entry, cmd.id, cmd.origin, "HandlerException", f"result is not JSON: {exc}")
                return
            topic = cmd_response_topic(self.prefix, self.module_id, entry.impl_id, entry.name, cmd.origin)
            self._publish(topic, body)
        except Exception as exc:  # last resort: a worker must never die silently
            self._log.error("command processing failed", cmd=label, error=_one_line(exc))

    def _answer_error(self, entry: _Command, call_id: str, origin: str, event: str, msg: str) -> None:
        topic = cmd_response_topic(self.prefix, self.module_id, entry.impl_id, entry.name, origin)
        self._publish(topic, encode(cmd_error_envelope(call_id, event, msg, self.module_id)))

    # --- internals: publishing -------------------------------------------------------

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
