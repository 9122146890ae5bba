"""The console's snapshot, taken through the facade from a real core (FakeClock, recording
ports): what the page shows of EVSEs, parked tokens and reservations comes out right."""

from __future__ import annotations

from auth_module.console.snapshot import take
from auth_module.console.view import StationView
from auth_module.core.clock import FakeClock
from auth_module.core.handler import AuthHandler
from auth_module.types import StartSessionReason

from .conftest import (
    CONNECTION_TIMEOUT,
    RecordingPorts,
    accepted,
    make_token,
    reservation,
    session_started,
)


def test_snapshot_of_a_parked_token_an_authorized_evse_and_a_reservation(
        auth: AuthHandler, clock: FakeClock, ports: RecordingPorts) -> None:
    ports.validate_fn = lambda _token: [accepted()]
    auth.on_token(make_token("PARKED_CARD_1"))  # PlugEvents: waits for a car
    snap = take(auth)
    assert [e.id for e in snap.evses] == [1, 2]
    assert snap.waiting[0][0] == "PARKED_CARD_1" and snap.waiting[0][1] == [1, 2]
    assert snap.waiting[0][2] == snap.monotonic + CONNECTION_TIMEOUT
    assert snap.connection_timeout == CONNECTION_TIMEOUT
    auth.on_session_event(1, session_started(StartSessionReason.EVConnected))
    assert auth.reserve_now(reservation(clock, 7, "RESERVED_CARD", evse_id=2)).value == "Accepted"
    clock.advance(0.25)
    snap = take(auth)
    assert snap.waiting == []
    evse1 = snap.evses[0]
    assert evse1.token == "PARKED_CARD_1" and evse1.plugged_in
    assert evse1.token_due is not None and evse1.token_due - snap.monotonic == CONNECTION_TIMEOUT - 0.25
    assert [(r.reservation_id, r.evse_id, r.id_token) for r in snap.reservations] == [
        (7, 2, "RESERVED_CARD")]
    view = StationView(False, lambda _v: None)
    view.snapshot = snap
    states = [e["state"] for e in view.station(0.0)["evses"]]
    assert states == ["authorized", "reserved"]
