"""NetworkLoop: one paho connection served by a small crew of threads (leader/followers).

Why not paho's ``loop_start()``: there, one thread does all socket I/O, and work that must
not run on it (a token, which may wait seconds for its validators) is handed to a worker.
Each such hand-off is a thread wake-up on the token's critical path, and in that mode
every publish from the worker is one more (paho's thread must wake to write it). On a
small charge controller those wake-ups cost more than everything else the module does
for a token.

Here, in the *leader/followers* pattern (Schmidt et al., POSA vol. 2):

- one crew thread at a time, the **leader**, waits on the socket, reads, and runs the
  quick handlers (session events, answers to our calls) in arrival order;
- a handler that finds *token work* (a new token, a token's last validator answer) calls
  :meth:`NetworkLoop.defer`. After the read the leader steps down and does the work
  itself, at once, with no hand-off: the thread that received a token becomes that
  token's thread. An idle crew thread is woken to lead in its place: for ``quick`` work
  (token work, which waits for nothing) once the work's first packet is written, for
  other work at once;
- work deferred from elsewhere (a timer, an in-process token reader) waits in a bounded
  backlog for the next free crew thread;
- any thread writes its own packets (``flush``), so a publish leaves at once.

The crew is bounded (``max_threads``), and so is the backlog: :meth:`defer` says no when
both are full, and the caller then ends the token with a final status itself. When every
other crew thread is busy, the leader keeps leading and queues the work: the socket is
always read by someone.

paho supports this "external loop" mode through its public ``loop_read`` / ``loop_write``
/ ``loop_misc`` / ``reconnect`` calls. The rules kept here:

- only the leader reads (``loop_read``, ``loop_misc``), connects and reconnects;
- every write (``loop_write``, and ``reconnect``, which resets the outgoing queue) holds
  ``_write_lock``, so packets leave whole and in the order they were queued;
- a writer holds the lock for one ``send()``, so a thread that finds it taken waits; if
  it is held longer (a reconnect), the waiter raises ``_flush_wanted`` and leaves, and the
  holder writes once more before it lets go (raised after the packet was queued, lowered
  before each write, so no packet is left behind);
- ``on_socket_register_write`` is set, which tells paho never to write by itself from
  ``publish()``; what the kernel does not take at once (a full socket buffer) is written
  by the leader when ``select`` says the socket is writable.
"""

from __future__ import annotations

import random
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog

Work = Callable[[], object]

_SELECT_TIMEOUT_S = 1.0  # keepalive checks (loop_misc) need no finer grain
_WRITE_WAIT_S = 0.05  # how long a writer waits for another one before handing over

log = structlog.get_logger("bus")


class NetworkLoop:
    """Serves ``client``'s connection with a crew of daemon threads; see the module doc."""

    def __init__(
        self,
        client: mqtt.Client,
        name: str,
        min_delay_s: float,
        max_delay_s: float,
        on_unreachable: Callable[[BaseException], None],
        max_threads: int = 9,
        backlog: int = 64,
        refused_max_delay_s: float | None = None,
        jitter: float = 0.0,
    ) -> None:
        if max_threads < 2:
            raise ValueError("the crew needs a leader and at least one worker")
        self._client = client
        self._name = name
        self._min_delay, self._max_delay = min_delay_s, max_delay_s
        self._delay = min_delay_s
        # After a refusal (credentials, certificate) the waits grow to this longer cap; a
        # broker that is merely away is retried at the short one. See bus/connection.py.
        self._refused_max = max(max_delay_s, refused_max_delay_s or max_delay_s)
        self._cap = max_delay_s
        self._jitter = min(max(jitter, 0.0), 0.9)
        self._on_unreachable = on_unreachable
        self._linked = False  # a socket is open (the leader's view; only leaders touch it)

        self._write_lock = threading.Lock()
        self._flush_wanted = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        client.on_socket_register_write = _no_op  # paho: "an external loop writes"

        # The crew. _crew_lock guards everything below; the leader's own batch is touched
        # by the leader only.
        self._crew_lock = threading.Lock()
        self._max_threads = max_threads
        # Work accepted and not finished yet: running on every crew thread but the reader,
        # plus ``backlog`` waiting.
        self._slots = max_threads - 1 + backlog
        self._in_flight = 0
        self._threads: list[threading.Thread] = []
        # Parked threads, each blocked on its own held lock until another releases it (a
        # plain lock is the cheapest wake-up Python has); LIFO: the warmest thread first.
        self._idle: list[threading.Lock] = []
        self._backlog: deque[Work] = deque()
        self._leader_id: int | None = None  # the reading thread's ident, None while nobody reads
        # A former leader running work it read (its ident); it wakes the next leader once
        # its first packet is written (flush), see _lead().
        self._handover: int | None = None
        self._batch: list[tuple[Work, bool]] = []  # (work, quick) found by this read
        self._started = False
        self._stopping = False
        self._stopped = threading.Event()

    # --- what other code calls ------------------------------------------------------------

    def start(self) -> None:
        with self._crew_lock:
            if self._started:
                return
            self._started = True
            self._spawn_locked()

    def reads_here(self) -> bool:
        """Whether the calling thread is the one reading: a blocking call made on it would
        never be answered."""
        return threading.get_ident() == self._leader_id

    def connected(self) -> None:
        """The broker accepted us: the next lost connection retries from the shortest delay."""
        self._delay = self._min_delay
        self._cap = self._max_delay

    def refused(self) -> None:
        """The broker answered but refused us: wait longer between the next attempts, up to
        the refused cap, until an attempt succeeds."""
        self._cap = self._refused_max

    def away(self) -> None:
        """The broker did not answer at all: back to the short cap, so that we are back
        soon after it is."""
        self._cap = self._max_delay
        self._delay = min(self._delay, self._cap)

    def defer(self, work: Work, quick: bool = False) -> bool:
        """Run ``work`` on a crew thread of its own. False, and nothing run, when the crew
        and its backlog are full.

        Called by the leader (from a handler), the leader itself runs it right after this
        read, and another crew thread takes over the reading: at once, or, for ``quick``
        work, as soon as the work has written its first packet (see :meth:`_lead`). Quick
        work must not wait for anything before that first publish. From any other thread,
        the work waits in the backlog for the next free crew thread.
        """
        with self._crew_lock:
            if self._stopping or self._in_flight >= self._slots:
                return False
            self._in_flight += 1
            if self.reads_here():
                self._batch.append((work, quick))
                return True
            self._backlog.append(work)
            self._rouse_locked(1)
        return True

    def flush(self) -> None:
        """Write everything paho has queued, from the calling thread; never blocks on I/O."""
        self._flush_wanted = True
        while self._flush_wanted:
            # Writers hold the lock for a send() each, so waiting is short and beats leaving
            # our packet to a holder that may be waiting for the GIL we hold. Only a
            # reconnect holds it long: then the flag hands our packet to it.
            if not self._write_lock.acquire(timeout=_WRITE_WAIT_S):
                return  # the holder sees the flag and writes our packet before it lets go
            try:
                self._flush_wanted = False
                self._client.loop_write()
                left_over = self._client.want_write()
            finally:
                self._write_lock.release()
            if left_over and not self.reads_here():
                self._wake_leader()
        if self._handover == threading.get_ident():
            self._hand_over()

    def _hand_over(self) -> None:
        """Our work's first packet is out: now another thread takes over the reading."""
        with self._crew_lock:
            if self._handover != threading.get_ident():
                return
            self._handover = None
            if self._leader_id is None:
                self._rouse_locked(1)

    def stop(self, timeout: float) -> None:
        """End the crew (after ``client.disconnect()``) and wait for its threads, at most
        ``timeout`` seconds in all: a thread still running work is a daemon and is left."""
        with self._crew_lock:
            self._stopping = True
            threads = list(self._threads)
            for parked in self._idle:
                parked.release()
            self._idle.clear()
            self._backlog.clear()
        self._stopped.set()
        self._wake_leader()
        me = threading.current_thread()
        deadline = time.monotonic() + timeout
        for t in threads:
            if t is not me and t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))
        for s in (self._wake_r, self._wake_w):
            s.close()

    # --- the crew --------------------------------------------------------------------------

    def _spawn_locked(self) -> bool:
        if len(self._threads) >= self._max_threads or self._stopping:
            return False
        t = threading.Thread(target=self._member, name=f"{self._name}-{len(self._threads)}",
                             daemon=True)
        self._threads.append(t)
        t.start()
        return True

    def _rouse_locked(self, count: int) -> int:
        """Wake (or start) up to ``count`` crew threads; how many will come."""
        roused = 0
        while roused < count:
            if self._idle:
                self._idle.pop().release()
            elif not self._spawn_locked():
                break
            roused += 1
        return roused

    def _member(self) -> None:
        parked = threading.Lock()
        parked.acquire()  # held while running; acquiring it again parks this thread
        while True:
            work: Work | None = None
            with self._crew_lock:
                if self._stopping:
                    return
                if self._leader_id is None:
                    self._leader_id = threading.get_ident()
                    self._handover = None
                elif self._backlog:
                    work = self._backlog.popleft()
                else:
                    self._idle.append(parked)
            if work is not None:
                self._run(work)
            elif self.reads_here():
                mine = self._lead()
                if mine is not None:
                    self._run(mine)
            else:
                parked.acquire()  # until _rouse_locked() or stop() releases it

    def _lead(self) -> Work | None:
        """Lead until a read finds work; step down and return that work (None: stopping).

        For ``quick`` work the next leader is woken only once the work has written its
        first packet (:meth:`flush`): a token's critical message (its ``validate_token``
        request, its ``authorize_response``) then leaves before a second thread wakes up
        and competes with it for the GIL and the CPU, which on a two-core controller
        costs more than the rest of the token's handling. Until then nobody reads, for the
        tens of microseconds the work needs to get there. Quick work that publishes
        nothing gives the reading back when it ends (:meth:`_member`).
        """
        while True:
            if self._stopped.is_set():
                with self._crew_lock:
                    self._leader_id = None
                    self._batch.clear()
                return None
            try:
                served = self._serve_once()
            except Exception as exc:  # a bug must not leave the bus without a reader
                log.error("network loop failed; reconnecting",
                          error=f"{type(exc).__name__}: {exc}")
                served = self._lost()
            if not served or not self._batch:
                continue
            with self._crew_lock:
                batch, self._batch = self._batch, []
                if not self._idle and len(self._threads) >= self._max_threads:
                    # Nobody could take over: keep reading; the work waits for a free thread.
                    self._backlog.extend(w for w, _ in batch)
                    continue
                (first, quick), rest = batch[0], [w for w, _ in batch[1:]]
                self._leader_id = None
                self._backlog.extend(rest)
                if quick:
                    self._handover = threading.get_ident()
                    self._rouse_locked(len(rest))
                else:
                    self._rouse_locked(len(rest) + 1)
            return first

    def _run(self, work: Work) -> None:
        try:
            work()
        except Exception as exc:  # the work logs its own failures; this is a last guard
            log.error("deferred work failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            with self._crew_lock:
                self._in_flight -= 1

    # --- the connection (leader only) ---------------------------------------------------------

    def _serve_once(self) -> bool:
        """One step of the connection: (re)connect, or wait for the socket and read.

        False when the step ended without a live connection (it then waited the back-off).
        """
        client = self._client
        if not self._linked:
            if self._stopped.is_set():
                return False
            try:
                with self._write_lock:  # reconnect() empties paho's outgoing queue
                    client.reconnect()
            except Exception as exc:  # OSError, socket.timeout, ValueError: retry later
                self._on_unreachable(exc)
                self._back_off()
                return False
            self._linked = True
            self.flush()  # CONNECT
        sock = client.socket()
        if sock is None:
            return self._lost()
        wlist = [sock] if client.want_write() else []
        try:
            readable, _, _ = select.select([sock, self._wake_r], wlist, [], _SELECT_TIMEOUT_S)
        except (OSError, ValueError, TypeError):  # the socket was closed under us
            return self._lost()
        if self._wake_r in readable:
            try:
                self._wake_r.recv(4096)
            except OSError:
                pass
        if sock in readable and client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
            return self._lost()
        if self._batch:
            return True  # hand over at once; the next writer sends the acknowledgements
        self.flush()  # acknowledgements, and anything a handler published
        if client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
            return self._lost()
        self.flush()  # a keepalive ping
        return client.socket() is sock or self._lost()

    def _lost(self) -> bool:
        """The connection ended (paho has called on_disconnect): wait, then reconnect."""
        self._linked = False
        self._back_off()
        return False

    def _back_off(self) -> None:
        delay = self._delay
        if self._jitter:
            delay *= 1.0 - self._jitter * random.random()  # noqa: S311 - spreading, not secrecy
        if not self._stopped.wait(delay):
            self._delay = min(self._delay * 2, self._cap)

    def _wake_leader(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # already woken (buffer full) or closed by stop()




def _no_op(client: Any, userdata: Any, sock: Any) -> None:
    """paho calls this when it has queued a packet; the queuing thread flushes it."""
