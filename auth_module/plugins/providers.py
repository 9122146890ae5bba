"""What every in-process token provider shares: options, UID normalisation, a debounce, a
line splitter, and a reader thread that reopens its device and closes cleanly.

Every provider accepts these options (beside its own):

``token_type``          the ``id_token.type`` of the tokens it provides (IdTokenType, default ISO14443)
``authorization_type``  their ``authorization_type`` (AuthorizationType, default RFID)
``debounce_s``          the same UID again within this many seconds of its last reading
                        is the same swipe (a card held on the reader); default 2.0, 0 = off

A UID is normalised before it is provided: surrounding white space dropped, and if what
remains is hexadecimal once the separators ``: - . space`` are removed, it is that
hexadecimal in upper case (``04:a2:2b:1c`` -> ``04A22B1C``). Anything else (a bench token
typed on stdin such as ``valid_rfid_1``) is only upper-cased; values are compared
case-insensitively anyway.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
import structlog
from pydantic import BaseModel, ConfigDict, Field

from ..types import AuthorizationType, IdToken, IdTokenType, ProvidedIdToken
from .base import ReaderHealth

__all__ = [
    "Debouncer",
    "LineDecoder",
    "ProviderOptions",
    "ReaderProvider",
    "UID_MAX_LENGTH",
    "normalise_uid",
]

log = structlog.get_logger("plugins")

UID_MAX_LENGTH = 36  # IdToken.value
_SEPARATORS = re.compile(r"[:\-.\s]")
_HEX = re.compile(r"[0-9A-Fa-f]+")

Clock = Callable[[], float]


class ProviderOptions(BaseModel):
    """The options of every provider; a provider's own model extends this one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_type: IdTokenType = IdTokenType.ISO14443
    authorization_type: AuthorizationType = AuthorizationType.RFID
    debounce_s: float = Field(default=2.0, ge=0)


def normalise_uid(raw: str) -> str | None:
    """The UID as it is provided, or None if nothing is left of it (see the module doc)."""
    text = raw.strip()
    if not text:
        return None
    compact = _SEPARATORS.sub("", text)
    if compact and _HEX.fullmatch(compact):
        return compact.upper()
    return text.upper()


class Debouncer:
    """Says whether a UID read now is a new swipe.

    A UID is a new swipe unless the same UID was read less than ``window_s`` ago; every
    reading renews the window, so a card held on a reader that repeats its UID is one
    swipe however long it stays there. ``clock`` is a monotonic clock (injectable).
    """

    def __init__(self, window_s: float, clock: Clock = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def accept(self, uid: str) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(uid)
            self._last[uid] = now
            if len(self._last) > 64:  # forget old readings
                self._last = {u: t for u, t in self._last.items() if now - t < self.window_s}
                self._last[uid] = now
            return last is None or now - last >= self.window_s


class LineDecoder:
    """Splits a byte stream into text lines (``\\n``, ``\\r`` or both end a line).

    Empty lines are skipped; a line longer than ``max_length`` bytes is dropped whole (its
    count is in :attr:`dropped`), as are lines that are not ASCII text.
    """

    def __init__(self, max_length: int = 256) -> None:
        self.max_length = max_length
        self._buf = bytearray()
        self._overflow = False
        self.dropped = 0

    def feed(self, data: bytes) -> list[str]:
        lines: list[str] = []
        for byte in data:
            if byte in (0x0A, 0x0D):
                if self._overflow:
                    self.dropped += 1
                elif self._buf:
                    try:
                        text = self._buf.decode("ascii")
                    except UnicodeDecodeError:
                        self.dropped += 1
                    else:
                        if text.isprintable() and text.strip():
                            lines.append(text.strip())
                        elif text.strip():
                            self.dropped += 1
                self._buf.clear()
                self._overflow = False
            elif not self._overflow:
                self._buf.append(byte)
                if len(self._buf) > self.max_length:
                    self._buf.clear()
                    self._overflow = True
        return lines


class ReaderProvider:
    """Base class of a provider that reads a device on its own thread.

    Subclasses implement :meth:`read_loop`, which opens the device, reads it until
    :attr:`stopping` is set (polling it at least every few tenths of a second), closes it
    and returns; it hands each UID it reads to :meth:`emit`. If ``read_loop`` raises (the
    device is missing, unplugged, or the plugin has a bug) the reason is logged in one line
    and the loop is run again after ``retry_s``, then after twice as long each time up to
    ``retry_max_s`` (back-off); the same reason is not logged again until a read succeeded
    in between. :meth:`close` stops the thread and waits for it. :meth:`health` says
    whether the device is open (see :class:`~auth_module.plugins.base.ReaderHealth`).
    """

    #: seconds before the first new attempt to (re)open the device
    retry_s = 2.0
    #: the longest wait between two attempts (the back-off doubles up to it)
    retry_max_s = 30.0
    #: the reader's kind in :meth:`health` (``serial``, ``pn532``, ``pcsc``...)
    kind = "reader"

    def __init__(self, name: str, options: ProviderOptions, clock: Clock = time.monotonic) -> None:
        self.name = name
        self.options = options
        self.debouncer = Debouncer(options.debounce_s, clock)
        self.stopping = threading.Event()
        #: set while the device is open (tests wait on it)
        self.connected = threading.Event()
        self._on_token: Callable[[ProvidedIdToken], None] | None = None
        self._thread: threading.Thread | None = None
        self._last_problem: str | None = None
        self._retry_now = self.retry_s
        self._health = ReaderHealth(name=name, kind=self.kind, connected=False,
                                    detail="starting", since=time.time())
        self.log = log.bind(provider=name)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, on_token: Callable[[ProvidedIdToken], None]) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        self._on_token = on_token
        self._thread = threading.Thread(target=self._run, name=f"provider-{self.name}",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stopping.set()
        self.interrupt()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
            if thread.is_alive():
                self.log.warning(f"token provider {self.name}: reader thread did not stop")

    def interrupt(self) -> None:
        """Called by :meth:`close` to wake a read that might block; by default nothing."""

    # --- the thread -------------------------------------------------------------------------

    def read_loop(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        self._retry_now = self.retry_s
        while not self.stopping.is_set():
            try:
                self.read_loop()
            except Exception as exc:
                if not self.stopping.is_set():
                    self.problem(_reason(exc))
            finally:
                self.connected.clear()
            if not self.stopping.is_set():
                self.stopping.wait(self._retry_now)
                self._retry_now = min(max(self._retry_now, 0.001) * 2, self.retry_max_s)

    def problem(self, reason: str) -> None:
        """Log ``reason`` in one line unless it is the same as the last one (the device is
        then reopened with back-off by the thread)."""
        self._set_health(False, reason)
        if reason != self._last_problem:
            self._last_problem = reason
            self.log.warning(f"token provider {self.name}: {reason}; retrying every "
                             f"{self.retry_s:g} s, backing off to {self.retry_max_s:g} s")

    def lost(self, reason: str) -> None:
        """Like :meth:`problem`, for a subclass that recovers by itself (no retry said)."""
        self.connected.clear()
        self._set_health(False, reason)
        if reason != self._last_problem:
            self._last_problem = reason
            self.log.warning(f"token provider {self.name}: {reason}")

    def opened(self, what: str) -> None:
        """Subclasses call this once the device is open."""
        self.connected.set()
        self._retry_now = self.retry_s
        self._set_health(True, f"reading {what}")
        if self._last_problem is not None:
            self.log.info(f"token provider {self.name}: {what} is back")
        else:
            self.log.info(f"token provider {self.name}: reading {what}")
        self._last_problem = None

    # --- health -----------------------------------------------------------------------------

    def health(self) -> ReaderHealth:
        """How the reader is now (read-only, from any thread; see :class:`ReaderHealth`)."""
        return self._health

    def _set_health(self, connected: bool, detail: str) -> None:
        old = self._health
        since = old.since if old.connected == connected else time.time()
        self._health = ReaderHealth(name=self.name, kind=self.kind, connected=connected,
                                    detail=detail, since=since)

    # --- tokens -------------------------------------------------------------------------------

    def make_token(self, uid: str) -> ProvidedIdToken:
        return ProvidedIdToken(
            id_token=IdToken(value=uid, type=self.options.token_type),
            authorization_type=self.options.authorization_type,
        )

    def emit(self, raw: str) -> ProvidedIdToken | None:
        """Normalise, debounce and provide one UID read; returns the token if provided."""
        uid = normalise_uid(raw)
        if uid is None:
            return None
        if len(uid) > UID_MAX_LENGTH:
            self.log.warning(f"token provider {self.name}: UID of {len(uid)} characters "
                             f"dropped (at most {UID_MAX_LENGTH})")
            return None
        if not self.debouncer.accept(uid):
            self.log.debug("same card again within the debounce window", token=uid)
            return None
        token = self.make_token(uid)
        self.log.info("card read", token=uid)
        callback = self._on_token
        if callback is not None:
            try:
                callback(token)
            except Exception as exc:
                self.log.error(f"token provider {self.name}: handing on a token failed: "
                               f"{_reason(exc)}")
        return token


def _reason(exc: BaseException) -> str:
    text = re.sub(r"\s+", " ", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
