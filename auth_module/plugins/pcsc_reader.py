"""Token provider ``pcsc``: any PC/SC contactless reader (ACR122U and other CCID readers)
through pcscd, with pyscard (``pip install 'auth-module[pcsc]'``; pcscd must run).

::

    - plugin: pcsc
      reader: ACR122              # optional: the first reader whose name contains this
                                  # (case-insensitive); default: every reader

The provider watches pcscd with ``SCardGetStatusChange``, the readers included (the
``\\\\?PnP?\\Notification`` pseudo-reader, and the list read again every half second), so
readers plugged in and out while the module runs are picked up. When a card comes onto a
reader it connects (shared) and sends the PC/SC GET DATA command ``FF CA 00 00 00``; the
answer's bytes before ``90 00`` are the UID (4, 7 or 10 bytes for ISO 14443A). One card
placed is one reading (the debounce of every provider applies on top); it is read again
once it was taken away.

Health: connected while pcscd answers and at least one reader is chosen. No reader, or
pcscd gone, is logged once; pcscd gone is retried with back-off, and the return is logged.
pyscard is imported only when the plugin is configured.
"""

from __future__ import annotations

from typing import Any

from .base import PluginContext
from .loader import PluginError, one_line, register_options_model
from .providers import ProviderOptions, ReaderProvider

__all__ = ["GET_UID", "PcscError", "PcscOptions", "PcscProvider", "choose_readers", "create",
           "uid_from_answer"]

GET_UID = [0xFF, 0xCA, 0x00, 0x00, 0x00]
PNP = "\\\\?PnP?\\Notification"
_M = 0xFFFFFFFF  # pyscard may hand result codes back as signed numbers


class PcscError(Exception):
    """pcscd is not there or stopped answering; the thread reconnects with back-off."""


@register_options_model
class PcscOptions(ProviderOptions):
    reader: str | None = None


def choose_readers(names: list[str], wanted: str | None) -> list[str]:
    """Every reader, or the first one whose name contains ``wanted`` (case-insensitive)."""
    if not wanted:
        return list(names)
    return [n for n in names if wanted.lower() in n.lower()][:1]


def uid_from_answer(answer: list[int]) -> str | None:
    """The UID in a GET DATA answer (``UID.. 90 00``), or None if the card refused it."""
    if len(answer) < 3 or answer[-2:] != [0x90, 0x00]:
        return None
    return bytes(answer[:-2]).hex().upper()


class PcscProvider(ReaderProvider):
    """Watches pcscd's readers on its own thread (see the module doc)."""

    kind = "pcsc"
    #: longest wait in SCardGetStatusChange (readers are listed again after it)
    wait_ms = 500

    def __init__(self, options: PcscOptions, scard: Any, **kwargs: Any) -> None:
        super().__init__("pcsc" + (f":{options.reader}" if options.reader else ""), options,
                         **kwargs)
        self.options: PcscOptions = options
        self.sc = scard
        self._context: Any = None
        #: readers being watched now
        self.readers: list[str] = []

    def interrupt(self) -> None:
        context = self._context
        if context is not None:
            self.sc.SCardCancel(context)  # ends a waiting SCardGetStatusChange

    def _code(self, hresult: int) -> int:
        return hresult & _M

    def _is(self, hresult: int, name: str) -> bool:
        return self._code(hresult) == getattr(self.sc, name) & _M

    def _message(self, hresult: int) -> str:
        return one_line(self.sc.SCardGetErrorMessage(hresult))

    def _check_service(self, hresult: int, doing: str) -> None:
        if any(self._is(hresult, n) for n in ("SCARD_E_NO_SERVICE", "SCARD_E_SERVICE_STOPPED",
                                               "SCARD_F_COMM_ERROR", "SCARD_E_INVALID_HANDLE")):
            raise PcscError(f"pcscd: {doing}: {self._message(hresult)}")

    def read_loop(self) -> None:
        sc = self.sc
        hresult, context = sc.SCardEstablishContext(sc.SCARD_SCOPE_USER)
        if hresult != sc.SCARD_S_SUCCESS:
            raise PcscError(f"cannot reach pcscd: {self._message(hresult)}")
        self._context = context
        try:
            if not self.stopping.is_set():  # close() may have come before the context
                self._watch(context)
        finally:
            self._context = None
            sc.SCardReleaseContext(context)

    def _list(self, context: Any) -> list[str]:
        hresult, names = self.sc.SCardListReaders(context, [])
        if self._is(hresult, "SCARD_E_NO_READERS_AVAILABLE"):
            return []
        self._check_service(hresult, "listing readers")
        if hresult != self.sc.SCARD_S_SUCCESS:
            raise PcscError(f"pcscd: listing readers: {self._message(hresult)}")
        return list(names or [])

    def _watch(self, context: Any) -> None:
        sc = self.sc
        states: dict[str, int] = {}
        pnp_state = sc.SCARD_STATE_UNAWARE
        first = True
        while not self.stopping.is_set():
            chosen = choose_readers(self._list(context), self.options.reader)
            if chosen != self.readers or first:
                self._readers_changed(chosen, first)
                states = {r: s for r, s in states.items() if r in chosen}
                first = False
            query = [(r, states.get(r, sc.SCARD_STATE_UNAWARE)) for r in chosen]
            query.append((PNP, pnp_state))
            hresult, answer = sc.SCardGetStatusChange(context, self.wait_ms, query)
            if self._is(hresult, "SCARD_E_TIMEOUT") or self._is(hresult, "SCARD_E_CANCELLED"):
                continue
            if self._is(hresult, "SCARD_E_UNKNOWN_READER") or self._is(
                    hresult, "SCARD_E_READER_UNAVAILABLE"):
                continue  # a reader went away while we waited: list them again
            self._check_service(hresult, "waiting for cards")
            if hresult != sc.SCARD_S_SUCCESS:
                raise PcscError(f"pcscd: waiting for cards: {self._message(hresult)}")
            for reader, event, _atr in answer:
                now = event & ~sc.SCARD_STATE_CHANGED
                if reader == PNP:
                    pnp_state = now
                    continue
                before = states.get(reader, sc.SCARD_STATE_UNAWARE)
                states[reader] = now
                came = now & sc.SCARD_STATE_PRESENT and not before & sc.SCARD_STATE_PRESENT
                if came and not now & sc.SCARD_STATE_MUTE:
                    self._read_card(context, reader)

    def _readers_changed(self, chosen: list[str], first: bool) -> None:
        gone = [r for r in self.readers if r not in chosen]
        new = [r for r in chosen if r not in self.readers]
        self.readers = chosen
        for reader in gone:
            self.log.info(f"token provider {self.name}: reader '{reader}' removed")
        if not chosen:
            which = f" whose name contains '{self.options.reader}'" if self.options.reader else ""
            self.lost(f"no PC/SC reader{which} (waiting for one to be plugged in)")
            return
        if not self.connected.is_set():
            self.opened(", ".join(chosen))
        else:
            for reader in new:
                self.log.info(f"token provider {self.name}: reader '{reader}' added")
            self._set_health(True, f"reading {', '.join(chosen)}")

    def _read_card(self, context: Any, reader: str) -> None:
        sc = self.sc
        hresult, card, protocol = sc.SCardConnect(context, reader, sc.SCARD_SHARE_SHARED,
                                                  sc.SCARD_PROTOCOL_T0 | sc.SCARD_PROTOCOL_T1)
        if hresult != sc.SCARD_S_SUCCESS:
            self._check_service(hresult, "connecting to a card")
            self.log.info(f"token provider {self.name}: card on '{reader}' not read: "
                          f"{self._message(hresult)}")
            return
        try:
            hresult, answer = sc.SCardTransmit(card, protocol, GET_UID)
        finally:
            sc.SCardDisconnect(card, sc.SCARD_LEAVE_CARD)
        if hresult != sc.SCARD_S_SUCCESS:
            self._check_service(hresult, "reading a card")
            self.log.info(f"token provider {self.name}: card on '{reader}' not read: "
                          f"{self._message(hresult)}")
            return
        uid = uid_from_answer(list(answer))
        if uid is None:
            status = bytes(answer[-2:]).hex().upper() if len(answer) >= 2 else "nothing"
            self.log.warning(f"token provider {self.name}: card on '{reader}' gave no UID "
                             f"(GET DATA answered {status})")
            return
        self.emit(uid)


def create(options: dict[str, Any], context: PluginContext) -> PcscProvider:
    parsed = PcscOptions.model_validate(options)
    try:
        from smartcard import scard
    except ImportError:
        raise PluginError("the pcsc plugin needs pyscard: pip install 'auth-module[pcsc]' "
                          "(it builds with swig and libpcsclite-dev)") from None
    return PcscProvider(parsed, scard)
