"""Calls we make to other modules: the pending map, the reaper, and their one cleanup.

Every call is an entry in one map, keyed by call id, completed exactly once by whoever
pops it: the answer (the reading thread), its deadline (the reaper thread), the caller
giving up (timeout or stop signal), or :meth:`OutgoingCalls.fail_all` when the bus stops.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..stopping import StopSignal
from ..text import exception_line
from .envelopes import EnvelopeError, cmd_envelope, cmd_topic, encode, new_call_id, parse_cmd_result
from .errors import BusError, CallCancelled, CallOutcome, CommandError, CommandTimeout, NotConnected

_REAP_SLACK_S = 0.05  # a call times out up to this much after its timeout

Send = Callable[[str, bytes], bool]
"""Publish a request; False only if paho refused to even queue it."""


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


class OutgoingCalls:
    """``call`` / ``call_async`` for one module, and the answers that come back.

    Threads: a reaper thread times out ``call_async`` calls; a small callback pool runs
    their ``on_result`` (unless ``inline``). A blocking ``call`` times itself out.
    """

    def __init__(self, module_id: str, prefix: str, send: Send,
                 reads_here: Callable[[], bool], log: Any) -> None:
        self.module_id = module_id
        self.prefix = prefix
        self.connected = False  # kept current by the client (its link state)
        self._send = send
        self._reads_here = reads_here
        self._log = log
        # One lock (the condition's) guards the map and the deadline heap.
        self._pending: dict[str, _Pending] = {}
        self._pending_lock = threading.Lock()
        self._pending_cond = threading.Condition(self._pending_lock)
        self._deadlines: list[tuple[float, int, str]] = []
        self._reaper_wakes_at = float("inf")  # when the reaper wakes by itself next
        self._seq = itertools.count()
        self._stopped = False
        self._reaper = threading.Thread(target=self._reap_loop, name=f"bus-reaper-{module_id}",
                                        daemon=True)
        self._callbacks = ThreadPoolExecutor(max_workers=4,
                                             thread_name_prefix=f"bus-cb-{module_id}")

    def start(self) -> None:
        self._reaper.start()

    # --- making calls ----------------------------------------------------------------

    def call(
        self,
        module_id: str,
        impl_id: str,
        name: str,
        args: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
        cancel: StopSignal | None = None,
    ) -> Any:
        """Call a command and block for its answer.

        Raises CommandError on an error answer, CommandTimeout after ``timeout`` seconds,
        NotConnected if the broker is down now, CallCancelled as soon as ``cancel`` is set.
        A link that drops while we wait does not end the call early: paho resends the QoS1
        request and the answer may still come.
        """
        if self._reads_here():
            raise RuntimeError("bus.call() on the reading thread would deadlock; use call_async()")
        topic = cmd_topic(self.prefix, module_id, impl_id, name)
        label = f"{module_id}/{impl_id}/{name}"
        if not self.connected:
            raise NotConnected(f"{label}: not connected to the broker")
        call_id = new_call_id()
        body = encode(cmd_envelope(call_id, args, self.module_id))
        pending = _Pending(label, sync=True, on_result=None, timeout=timeout)
        event = pending.event
        assert event is not None
        with self._pending_lock:
            self._pending[call_id] = pending
        if not self._send(topic, body):
            self._take(call_id)
            raise NotConnected(f"{label}: publish refused (too many queued messages)")
        forget = (cancel.on_set(lambda: self._give_up(call_id, label))
                  if cancel is not None else None)
        try:
            if not event.wait(timeout):
                if self._take(call_id) is not None:
                    raise CommandTimeout(f"{label}: no answer within {timeout:g} s")
                event.wait()  # the answer won the race and is being filled in right now
        finally:
            if forget is not None:
                forget()
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
        if not self.connected:
            self._complete(pending, None, NotConnected(f"{label}: not connected to the broker"))
            return call_id
        with self._pending_cond:
            self._pending[call_id] = pending
            deadline = time.monotonic() + timeout
            heapq.heappush(self._deadlines, (deadline, next(self._seq), call_id))
            if deadline < self._reaper_wakes_at:  # wake the reaper only if it must fire sooner
                self._pending_cond.notify()
        if not self._send(topic, body):
            mine = self._take(call_id)
            if mine is not None:
                self._complete(mine, None,
                               NotConnected(f"{label}: publish refused (too many queued messages)"))
        return call_id

    # --- answers ---------------------------------------------------------------------

    def on_response(self, topic: str, payload: bytes) -> None:
        """An answer to one of our calls arrived (the reading thread)."""
        try:
            res = parse_cmd_result(payload)
        except EnvelopeError as exc:
            self._log.warning("malformed command result dropped", topic=topic, reason=str(exc))
            return
        pending = self._take(res.id)
        if pending is None:
            self._log.debug("answer to an unknown or timed-out call dropped", topic=topic,
                            call_id=res.id)
            return
        if res.error is not None:
            self._complete(pending, None, CommandError(*res.error))
        else:
            self._complete(pending, res.retval, None)

    # --- the one cleanup -------------------------------------------------------------

    def fail_all(self) -> None:
        """The bus stopped: every outstanding call ends with NotConnected; threads end."""
        with self._pending_cond:
            self._stopped = True
            pending = list(self._pending.values())
            self._pending.clear()
            self._deadlines.clear()
            self._pending_cond.notify_all()
        for p in pending:
            self._complete(p, None, NotConnected(f"{p.label}: bus stopped"))
        if self._reaper.is_alive() and threading.current_thread() is not self._reaper:
            self._reaper.join(timeout=2.0)
        self._callbacks.shutdown(wait=False)

    # --- internals -------------------------------------------------------------------

    def _give_up(self, call_id: str, label: str) -> None:
        """The caller's stop signal was set: end its call now (may run in a signal handler,
        on a thread that holds no lock of ours)."""
        pending = self._take(call_id)
        if pending is not None:
            self._complete(pending, None,
                           CallCancelled(f"{label}: stopped while waiting for the answer"))

    def _take(self, call_id: str) -> _Pending | None:
        with self._pending_lock:
            return self._pending.pop(call_id, None)

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
                self._log.warning("call failed", call=pending.label, error=exception_line(error))
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
            self._log.error("on_result callback failed", call=pending.label, error=exception_line(exc))

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
                self._complete(p, None,
                               CommandTimeout(f"{p.label}: no answer within {p.timeout:g} s"))
