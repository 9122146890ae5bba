"""What the page shows, built from the feed's events and the core's snapshot.

Runs on the console's thread only (no locks). Token values are personal data: they are kept
in memory only (never written anywhere), and leave this module masked as in the logs,
except through :meth:`StationView.token_value`, which the API offers to admins only.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..logs import mask
from ..types import AuthorizationStatus, SessionEvent, SessionEventEnum, TokenValidationStatus
from .feed import Event
from .snapshot import EvseSnap, Snapshot

FINAL = {"UsedToStart", "UsedToStop", "UsedToReauthorize", "Rejected", "TimedOut", "Withdrawn"}

# The validators' verdicts in words a driver understands.
VERDICT = {
    AuthorizationStatus.Unknown: "unknown card",
    AuthorizationStatus.Invalid: "card not valid",
    AuthorizationStatus.Blocked: "card blocked",
    AuthorizationStatus.Expired: "card expired",
    AuthorizationStatus.NoCredit: "no credit left on this card",
    AuthorizationStatus.NotAllowedTypeEVSE: "card not allowed at this kind of charger",
    AuthorizationStatus.NotAtThisLocation: "card not allowed at this station",
    AuthorizationStatus.NotAtThisTime: "card not allowed at this time",
    AuthorizationStatus.ConcurrentTx: "card already charging elsewhere",
    AuthorizationStatus.PinRequired: "PIN required",
    AuthorizationStatus.Timeout: "the card check took too long",
}

STATE_TEXT = {"free": "Free", "car_plugged": "Car plugged in", "authorized": "Authorized",
              "charging": "Charging", "paused": "Charging paused", "faulted": "Faulted",
              "disabled": "Disabled", "reserved": "Reserved"}
_PAUSED = {SessionEventEnum.ChargingPausedEV, SessionEventEnum.ChargingPausedEVSE}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class TokenRecord:
    ref: str
    time: float
    value: str
    kind: str
    statuses: list[str] = field(default_factory=list)
    evse: int | None = None
    verdicts: list[AuthorizationStatus] | None = None
    reason: str | None = None


@dataclass
class Session:
    evse: int
    value: str
    start: float
    start_wh: float | None
    end: float | None = None
    energy_wh: float | None = None


def _energy(meter: Any) -> float | None:
    try:
        return float(meter["energy_Wh_import"]["total"])
    except (KeyError, TypeError, ValueError):
        return None


class StationView:
    def __init__(self, show_tokens: bool, nickname: Callable[[str], str | None],
                 known: Callable[[str], bool] = lambda _v: False,
                 recent: int = 50, history: int = 1000) -> None:
        self.show_tokens = show_tokens
        self._nickname = nickname
        self._known = known
        self.recent: deque[TokenRecord] = deque(maxlen=recent)
        self._by_ref: OrderedDict[str, str] = OrderedDict()  # ref -> value, bounded
        self._open: dict[str, TokenRecord] = {}  # casefolded value -> record not yet final
        self._early: OrderedDict[str, list[AuthorizationStatus]] = OrderedDict()
        self.sessions: deque[Session] = deque(maxlen=history)
        self._running: dict[int, Session] = {}  # evse -> session with a transaction
        self._last_event: dict[int, SessionEventEnum] = {}
        self._since: dict[int, tuple[str, float]] = {}
        self.snapshot = Snapshot()
        self.token_listeners: list[Callable[[str], None]] = []
        self.started = datetime.now(UTC).timestamp()

    # --- events -------------------------------------------------------------------------

    def apply(self, events: list[Event]) -> None:
        for kind, ts, a, b in events:
            if kind == "status":
                self._status(ts, a, b)
            elif kind == "results":
                key = a.id_token.value.casefold()
                verdicts = [r.authorization_status for r in b]
                record = self._open.get(key)
                if record is not None:
                    record.verdicts = verdicts
                else:  # the answers overtook the token's Processing (another thread)
                    self._early[key] = verdicts
                    while len(self._early) > 256:
                        self._early.popitem(last=False)
            elif kind == "session":
                self._session(ts, a, b)

    def _status(self, ts: float, token: Any, status: TokenValidationStatus) -> None:
        value = token.id_token.value
        key = value.casefold()
        record = self._open.get(key)
        if record is None or status == TokenValidationStatus.Processing:
            if record is None and status != TokenValidationStatus.Processing:
                record = next((r for r in reversed(self.recent) if r.value.casefold() == key),
                              None)  # e.g. TimedOut long after UsedToStart
            if record is None or status == TokenValidationStatus.Processing:
                record = TokenRecord(secrets.token_hex(8), ts, value,
                                     token.authorization_type.value,
                                     verdicts=self._early.pop(key, None))
                self.recent.append(record)
                self._by_ref[record.ref] = value
                while len(self._by_ref) > 4 * (self.recent.maxlen or 50):
                    self._by_ref.popitem(last=False)
                if status == TokenValidationStatus.Processing:
                    for listener in list(self.token_listeners):
                        listener(value)
            self._open[key] = record
        record.statuses.append(status.value)
        if token.connectors and len(token.connectors) == 1:
            record.evse = token.connectors[0]
        if status.value in FINAL:
            self._open.pop(key, None)
            record.reason = self._reason(record, status)

    def _reason(self, record: TokenRecord, status: TokenValidationStatus) -> str | None:
        if status == TokenValidationStatus.TimedOut:
            return f"no car plugged in within {self.snapshot.connection_timeout} s"
        if status == TokenValidationStatus.Withdrawn:
            return "authorization withdrawn"
        if status == TokenValidationStatus.UsedToStop:
            return "stopped the charge"
        if status == TokenValidationStatus.UsedToReauthorize:
            return "presented again: the charge goes on"
        if status != TokenValidationStatus.Rejected:
            return None
        if "Processing" not in record.statuses:
            return "station busy, try again"
        verdicts = record.verdicts or []
        if verdicts and AuthorizationStatus.Accepted not in verdicts:
            return VERDICT.get(verdicts[0], "card not accepted")
        if self.snapshot.reservations:
            return "EVSE reserved for another card"
        return "no free EVSE for this card"

    def _session(self, ts: float, evse_id: int, event: SessionEvent) -> None:
        self._last_event[evse_id] = event.event
        if event.event == SessionEventEnum.TransactionStarted and event.transaction_started:
            started = event.transaction_started
            self._running[evse_id] = session = Session(
                evse_id, started.id_tag.id_token.value, ts, _energy(started.meter_value))
            self.sessions.append(session)
        elif event.event == SessionEventEnum.TransactionFinished:
            ended = self._running.pop(evse_id, None)
            if ended is not None:
                session = ended
                session.end = ts
                end_wh = _energy(event.transaction_finished.meter_value
                                 if event.transaction_finished else None)
                if end_wh is not None and session.start_wh is not None:
                    session.energy_wh = max(0.0, end_wh - session.start_wh)

    # --- reading --------------------------------------------------------------------------

    def token_value(self, ref: str) -> str | None:
        return self._by_ref.get(ref)

    def masked(self, value: str) -> str:
        return value if self.show_tokens else mask(value)

    def _token(self, value: str | None) -> dict[str, Any] | None:
        if value is None:
            return None
        return {"masked": self.masked(value), "nickname": self._nickname(value)}

    def evse_state(self, evse: EvseSnap) -> str:
        states = [c[2] for c in evse.connectors]
        if states and all(s.startswith("UNAVAILABLE") for s in states):
            return "disabled"
        if any("FAULTED" in s for s in states):
            return "faulted"
        if evse.transaction_active:
            return "paused" if self._last_event.get(evse.id) in _PAUSED else "charging"
        if evse.token is not None:
            return "authorized"
        if evse.plugged_in:
            return "car_plugged"
        if any(r.evse_id == evse.id for r in self.snapshot.reservations):
            return "reserved"
        return "free"

    def station(self, now: float) -> dict[str, Any]:
        snap = self.snapshot
        evses = []
        for evse in snap.evses:
            state = self.evse_state(evse)
            since = self._since.get(evse.id)
            if since is None or since[0] != state:
                since = (state, self.started if since is None else now)
                self._since[evse.id] = since
            pending = None
            if evse.token is not None and evse.token_due is not None and not evse.transaction_active:
                pending = {"token": self._token(evse.token),
                           "remaining_s": round(max(0.0, evse.token_due - snap.monotonic), 1),
                           "waiting_for": "a car" if not evse.plugged_in else "charging to start"}
            for value, pool, due in snap.waiting:
                if evse.id in pool and pending is None:
                    pending = {"token": self._token(value), "waiting_for": "a car",
                               "remaining_s": (round(max(0.0, due - snap.monotonic), 1)
                                               if due is not None else None)}
            reservation = next((r.reservation_id for r in snap.reservations
                                if r.evse_id == evse.id), None)
            evses.append({
                "id": evse.id, "state": state, "state_text": STATE_TEXT[state],
                "since": iso(since[1]), "seconds_in_state": int(now - since[1]),
                "connectors": [{"id": c, "type": t, "state": s} for c, t, s in evse.connectors],
                "token": self._token(evse.token), "pending": pending,
                "reservation_id": reservation, "replug_required": evse.plug_in_timed_out,
            })
        return {
            "evses": evses,
            "reservations": [{"reservation_id": r.reservation_id, "evse_id": r.evse_id,
                              "token": self._token(r.id_token), "expiry_time": r.expiry_time,
                              "parent_token": self._token(r.parent_id_token)}
                             for r in snap.reservations],
            "recent_tokens": [self._record(r) for r in reversed(self.recent)],
            "connection_timeout": snap.connection_timeout,
        }

    def _record(self, r: TokenRecord) -> dict[str, Any]:
        final = next((s for s in reversed(r.statuses) if s in FINAL), None)
        return {"ref": r.ref, "time": iso(r.time), "token": self.masked(r.value),
                "nickname": self._nickname(r.value), "type": r.kind,
                "statuses": list(r.statuses), "status": final or r.statuses[-1],
                "evse": r.evse, "reason": r.reason,
                "unknown": (AuthorizationStatus.Unknown in (r.verdicts or [])
                            and not self._known(r.value))}

    def history(self) -> list[dict[str, Any]]:
        """Per card (newest first): its sessions with start, end and energy."""
        cards: OrderedDict[str, dict[str, Any]] = OrderedDict()
        for s in reversed(self.sessions):
            card = cards.setdefault(s.value.casefold(), {
                "token": self.masked(s.value), "nickname": self._nickname(s.value),
                "sessions": [], "energy_wh": 0.0})
            card["sessions"].append({"evse": s.evse, "start": iso(s.start), "end": iso(s.end),
                                     "energy_wh": s.energy_wh})
            card["energy_wh"] += s.energy_wh or 0.0
        return list(cards.values())

    def history_rows(self, full_tokens: bool) -> list[list[str]]:
        rows = [["card", "nickname", "evse", "start", "end", "energy_kWh"]]
        for s in self.sessions:
            rows.append([s.value if full_tokens else self.masked(s.value),
                         self._nickname(s.value) or "", str(s.evse), iso(s.start) or "",
                         iso(s.end) or "",
                         "" if s.energy_wh is None else f"{s.energy_wh / 1000:.3f}"])
        return rows
