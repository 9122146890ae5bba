"""The console's parts without a server: keys, the feed, the view's words, the allow-list
editor and the ``console:`` section. No network, no sleep."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from auth_module.console.allowlist import AllowListEditor, EntryError
from auth_module.console.feed import ConsoleFeed, ObservedPorts
from auth_module.console.keys import (
    KeyError_,
    KeyStore,
    create_key,
    digest,
    keys_path,
    list_keys,
    revoke_key,
)
from auth_module.console.settings import ConsoleSettings, split_listen
from auth_module.console.snapshot import EvseSnap, ReservationSnap, Snapshot
from auth_module.console.view import StationView
from auth_module.logs import mask
from auth_module.plugins.allow_list import AllowListValidator, TokensFile
from auth_module.types import (
    AuthorizationStatus,
    ProvidedIdToken,
    SessionEvent,
    TokenValidationStatus,
    ValidationResult,
)

# --- keys ------------------------------------------------------------------------------------


def test_keys_are_shown_once_kept_as_hashes_in_a_private_file(tmp_path: Path) -> None:
    path = keys_path(tmp_path / "station.yaml")
    assert path == tmp_path / "station.console-keys.json"
    key, info = create_key(path, "ops", "admin")
    assert key.startswith("amk_") and len(key) > 40
    text = path.read_text()
    assert key not in text and digest(key) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [k.name for k in list_keys(path)] == ["ops"]
    with pytest.raises(KeyError_, match="exists already"):
        create_key(path, "ops", "viewer")
    with pytest.raises(KeyError_, match="admin or viewer"):
        create_key(path, "x", "root")
    with pytest.raises(KeyError_, match="already past"):
        create_key(path, "x", "viewer", "2001-01-01T00:00:00Z")


def test_the_store_sees_made_revoked_and_expired_keys_at_once(tmp_path: Path) -> None:
    path = keys_path(tmp_path / "station.yaml")
    store = KeyStore(path)
    assert store.check("amk_nothing") is None  # no file yet: nothing is granted
    key, _ = create_key(path, "ops", "admin")
    viewer, _ = create_key(path, "watch", "viewer")
    assert store.check(key).role == "admin"  # type: ignore[union-attr]
    assert store.check(viewer).role == "viewer"  # type: ignore[union-attr]
    assert store.check(key + "x") is None and store.check("") is None
    assert store.check(None) is None
    revoke_key(path, "ops")
    assert store.check(key) is None
    assert store.check(viewer) is not None
    # an expiry that has passed (written as the file would hold it)
    data = json.loads(path.read_text())
    data["keys"][0]["expires"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    path.write_text(json.dumps(data))
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    assert store.check(viewer) is None
    with pytest.raises(KeyError_, match="no key named"):
        revoke_key(path, "ops")


def test_last_used_is_written_back_without_the_key(tmp_path: Path) -> None:
    path = keys_path(tmp_path / "station.yaml")
    key, _ = create_key(path, "ops", "admin")
    store = KeyStore(path)
    store.check(key)
    assert store.keys()[0].last_used is not None
    store.flush_last_used()
    assert list_keys(path)[0].last_used is not None
    assert key not in path.read_text()


def test_a_damaged_key_file_grants_nothing(tmp_path: Path) -> None:
    path = keys_path(tmp_path / "station.yaml")
    key, _ = create_key(path, "ops", "admin")
    path.write_text("{not json")
    assert KeyStore(path).check(key) is None


# --- the feed --------------------------------------------------------------------------------


def test_the_feed_drops_the_oldest_and_says_when_events_wait() -> None:
    feed = ConsoleFeed(size=3)
    assert not feed
    for n in range(5):
        feed.put("changed", n)
    assert feed
    assert [a for _, _, a, _ in feed.drain()] == [2, 3, 4]
    assert not feed and feed.drain() == []
    feed.put("changed", 9)
    assert [a for _, _, a, _ in feed.drain()] == [9]


class _Ports:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def validate(self, token: Any, on_results: Any) -> None:
        self.calls.append("validate")
        on_results([ValidationResult(authorization_status=AuthorizationStatus.Unknown)])

    def publish_token_validation_status(self, token: Any, status: Any, messages: Any) -> None:
        self.calls.append(status.value)

    def close(self) -> None:
        self.calls.append("close")


def test_observed_ports_forward_first_then_feed() -> None:
    feed, inner = ConsoleFeed(), _Ports()
    ports = ObservedPorts(inner, feed)
    token = ProvidedIdToken.model_validate({"id_token": {"value": "CARD_1", "type": "ISO14443"},
                                            "authorization_type": "RFID"})
    got: list[Any] = []
    ports.validate(token, got.append)
    ports.publish_token_validation_status(token, TokenValidationStatus.Processing, [])
    ports.close()
    assert inner.calls == ["validate", "Processing", "close"] and len(got) == 1
    assert [kind for kind, *_ in feed.drain()] == ["results", "status"]


# --- the view: what a driver reads -------------------------------------------------------------


def _token(value: str, connectors: list[int] | None = None) -> ProvidedIdToken:
    return ProvidedIdToken.model_validate({"id_token": {"value": value, "type": "ISO14443"},
                                           "authorization_type": "RFID",
                                           "connectors": connectors})


def _statuses(view: StationView, value: str, *statuses: str, results: Any = None,
              connectors: list[int] | None = None) -> dict[str, Any]:
    events: list[Any] = []
    for n, status in enumerate(statuses):
        events.append(("status", 1000.0 + n, _token(value, connectors),
                       TokenValidationStatus(status)))
        if n == 0 and results is not None:
            events.append(("results", 1000.0, _token(value), [
                ValidationResult(authorization_status=AuthorizationStatus(r)) for r in results]))
    view.apply(events)
    return view.station(1010.0)["recent_tokens"][0]


def _view(**snap: Any) -> StationView:
    view = StationView(False, lambda v: "Anna" if v == "ANNA_CARD_1" else None)
    view.snapshot = Snapshot(**snap)
    return view


def test_reasons_are_in_words_a_driver_understands() -> None:
    view = _view(connection_timeout=30)
    r = _statuses(view, "STRANGER_01", "Processing", "Rejected", results=["Unknown", "Unknown"])
    assert r["reason"] == "unknown card" and r["token"] == mask("STRANGER_01") and r["unknown"]
    r = _statuses(view, "BLOCKED_01", "Processing", "Rejected", results=["Blocked"])
    assert r["reason"] == "card blocked"
    r = _statuses(view, "ANNA_CARD_1", "Processing", "Accepted", "TimedOut", results=["Accepted"])
    assert r["reason"] == "no car plugged in within 30 s" and r["nickname"] == "Anna"
    assert r["statuses"] == ["Processing", "Accepted", "TimedOut"]
    r = _statuses(view, "BUSY_CARD_1", "Rejected")
    assert r["reason"] == "station busy, try again"
    r = _statuses(view, "STOPPER_01", "Processing", "UsedToStop", connectors=[2])
    assert r["evse"] == 2 and r["reason"] == "stopped the charge"


def test_answers_that_overtake_the_processing_status_still_give_the_reason() -> None:
    view = _view()
    token = _token("EARLY_CARD_1")
    view.apply([("results", 1.0, token, [ValidationResult(
                    authorization_status=AuthorizationStatus.Unknown)]),
                ("status", 1.0, token, TokenValidationStatus.Processing),
                ("status", 1.0, token, TokenValidationStatus.Rejected)])
    assert view.station(2.0)["recent_tokens"][0]["reason"] == "unknown card"


def test_a_card_refused_for_a_reservation_says_so() -> None:
    view = _view(reservations=[ReservationSnap(5, 1, "OTHER_CARD", None, "2030-01-01T00:00:00Z")])
    r = _statuses(view, "LATE_CARD_1", "Processing", "Rejected")
    assert r["reason"] == "EVSE reserved for another card"


def test_evse_states_and_pending_authorization() -> None:
    evses = [
        EvseSnap(1, [(1, "cCCS2", "AVAILABLE")], False, False, False, None, None),
        EvseSnap(2, [(1, "cCCS2", "AVAILABLE")], True, False, False, "ANNA_CARD_1", 125.0),
        EvseSnap(3, [(1, "cCCS2", "OCCUPIED")], True, True, False, "ANNA_CARD_1", None),
        EvseSnap(4, [(1, "cCCS2", "FAULTED")], False, False, False, None, None),
        EvseSnap(5, [(1, "cCCS2", "UNAVAILABLE")], False, False, False, None, None),
        EvseSnap(6, [(1, "cCCS2", "AVAILABLE")], True, False, False, None, None),
        EvseSnap(7, [(1, "cCCS2", "AVAILABLE")], False, False, False, None, None),
    ]
    view = _view(evses=evses, monotonic=100.0, waiting=[("WAITING_CARD", [1], 110.0)],
                 reservations=[ReservationSnap(9, 7, "R_CARD_01", None, "2030-01-01T00:00:00Z")])
    got = view.station(2000.0)["evses"]
    assert [e["state"] for e in got] == ["free", "authorized", "charging", "faulted", "disabled",
                                         "car_plugged", "reserved"]
    assert got[1]["token"] == {"masked": mask("ANNA_CARD_1"), "nickname": "Anna"}
    assert got[1]["pending"]["remaining_s"] == 25.0
    assert got[0]["pending"]["remaining_s"] == 10.0 and got[0]["pending"]["waiting_for"] == "a car"
    assert got[6]["reservation_id"] == 9


def test_history_per_card_with_energy_from_the_transaction_events() -> None:
    view = _view()
    started = SessionEvent.model_validate({"event": "TransactionStarted", "transaction_started": {
        "id_tag": {"id_token": {"value": "ANNA_CARD_1", "type": "ISO14443"},
                   "authorization_type": "RFID"},
        "meter_value": {"energy_Wh_import": {"total": 1000}}}})
    finished = SessionEvent.model_validate({"event": "TransactionFinished", "transaction_finished": {
        "meter_value": {"energy_Wh_import": {"total": 8500}}}})
    view.apply([("session", 100.0, 2, started), ("session", 200.0, 2, finished)])
    cards = view.history()
    assert cards[0]["nickname"] == "Anna" and cards[0]["energy_wh"] == 7500.0
    assert cards[0]["sessions"][0]["evse"] == 2 and cards[0]["sessions"][0]["end"]
    rows = view.history_rows(full_tokens=False)
    assert rows[1][0] == mask("ANNA_CARD_1") and rows[1][-1] == "7.500"
    assert view.history_rows(full_tokens=True)[1][0] == "ANNA_CARD_1"


# --- the allow-list editor ---------------------------------------------------------------------


def _editor(path: Path) -> AllowListEditor:
    tokens_file = TokensFile(path, interval_s=3600)
    tokens_file.load()
    return AllowListEditor(AllowListValidator(tokens_file))


def test_editing_the_yaml_allow_list_is_atomic_and_counts_at_once(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  - id_token: OLD_CARD\n    expiry: 2030-01-01T00:00:00Z\n")
    path.chmod(0o640)
    editor = _editor(path)
    created, entry = editor.put("NEW_CARD", {"status": "Blocked", "nickname": "Ben",
                                             "evse_ids": [2]})
    assert created and entry["nickname"] == "Ben"
    assert editor.validator.file.tokens()["new_card"].status == AuthorizationStatus.Blocked
    assert editor.nickname("new_card") == "Ben" and editor.known("NEW_CARD")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    data = yaml.safe_load(path.read_text())["tokens"]
    assert data[0] == {"id_token": "OLD_CARD", "expiry": "2030-01-01T00:00:00Z"}
    created, _ = editor.put("new_card", {"status": "Accepted"})  # same card, other case
    assert not created and len(editor.entries()) == 2
    before = path.read_text()
    for bad in ({"status": "Perhaps"}, {"evse_ids": [0]}, {"expiry": "soon"}, {"x": 1}, []):
        with pytest.raises(EntryError):
            editor.put("NEW_CARD", bad)
    assert path.read_text() == before
    assert editor.delete("NEW_CARD") and not editor.delete("NEW_CARD")
    assert [e["id_token"] for e in editor.entries()] == ["OLD_CARD"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tokens")]


def test_editing_a_csv_allow_list_keeps_it_csv(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text("id_token,status\nCSV_CARD,Accepted\n")
    editor = _editor(path)
    editor.put("CSV_NEW", {"nickname": "Cleo", "evse_ids": [1, 2]})
    assert path.read_text().splitlines()[0].startswith("id_token,status,expiry")
    assert editor.validator.file.tokens()["csv_new"].evse_ids == [1, 2]
    assert editor.nickname("CSV_NEW") == "Cleo"


# --- the console: section ------------------------------------------------------------------------


def test_listen_addresses() -> None:
    assert split_listen("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert split_listen("[::1]:9000") == ("::1", 9000)
    assert ConsoleSettings(listen="0.0.0.0:443").port == 443
    for bad in ("8443", "host:", ":80", "a b:80", "1.2.3.4:0", "[nope]:80", "::1:80"):
        with pytest.raises(ValueError):
            split_listen(bad)
    assert ConsoleSettings().listen == "127.0.0.1:8443" and not ConsoleSettings().allow_http


def test_reader_and_validator_health_as_the_page_shows_it() -> None:
    from auth_module.console.server import health
    from auth_module.plugins.base import ReaderHealth

    class Reader:
        name = "pn532:/dev/serial0"

        def health(self) -> ReaderHealth:
            return ReaderHealth("pn532:/dev/serial0", "pn532", False, "cannot open", 0.0)

    class Ocpp:
        name = "ocpp16:CP1"
        connected = True
        cache = [1, 2, 3]

    class Wrapped:  # as the plugin loader hands plugins to the module
        def __init__(self, plugin: Any) -> None:
            self.plugin, self.name = plugin, plugin.name

    got = health(Wrapped(Reader()))
    assert got["health"] == "disconnected" and got["kind"] == "pn532"
    assert got["detail"] == "cannot open"
    got = health(Wrapped(Ocpp()))
    assert got["health"] == "online" and got["cache_size"] == 3
