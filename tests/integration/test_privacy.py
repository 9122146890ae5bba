"""Token values are personal data (CONTRACT §2.1): no log line and no file the module writes
holds a token value or any part of one, unless ``logging.show_tokens: true``; stored
reservations still match their tokens after a restart; an old store with raw values is
rewritten on the first start.
"""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from simulators.broker import Mosquitto
from tests.integration.harness import Rig, ValidatorSpec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

# Letters outside hex, so that no window of them can occur in a hash by chance.
HOLDER = "QzxJ-WvkP-7781"
STRANGER = "Vqzt-Kjwx-Hmyr"
PARENT = "Gxqv-Pzrk-Wylm"
WINDOW = 5  # "any part of one": no 5 characters of a token in a row


def expiry(hours: int = 1) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def windows(token: str) -> set[str]:
    low = token.lower()
    return {low[i:i + WINDOW] for i in range(len(low) - WINDOW + 1)}


def leaks(text: str, *tokens: str) -> list[str]:
    low = text.lower()
    return [w for t in tokens for w in windows(t) if w in low]


def written_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def make_rig(broker: Mosquitto, tmp_path: Path, level: str = "debug",
             show_tokens: bool = False) -> Rig:
    return Rig(broker, tmp_path, scripted=True, evses=[[(1, "cType2")], [(1, "cType2")], [(1, "cType2")]],
               validators=[ValidatorSpec("validator", tokens=[
                   {"id_token": HOLDER, "parent_id_token": PARENT}])],
               config={"selection_algorithm": "FindFirst", "connection_timeout": 30},
               extra={"logging": {"level": level, "format": "json", "show_tokens": show_tokens},
                      "reservations": {"store": str(tmp_path / "state" / "reservations.json")}})


def exists(rig: Rig, token: str, evse_id: int = 1) -> Any:
    return rig.call("reservation", "exists_reservation",
                    {"request": {"id_token": token, "evse_id": evse_id}})


def test_no_token_value_in_the_log_or_any_file_written(broker: Mosquitto, tmp_path: Path) -> None:
    rig = make_rig(broker, tmp_path)
    try:
        rig.start()
        assert rig.call("reservation", "reserve_now", {"request": {
            "reservation_id": 7, "id_token": HOLDER, "parent_id_token": PARENT,
            "expiry_time": expiry(), "evse_id": 1}}) == "Accepted"
        assert exists(rig, HOLDER.upper()) == "ReservedForToken"
        rig.swipe(STRANGER, connectors=[2])
        rig.statuses.wait(STRANGER, "Rejected")
        rig.swipe(HOLDER.lower(), connectors=[1])
        rig.statuses.wait(HOLDER.lower(), "Accepted")
        assert rig.call("main", "withdraw_authorization",
                        {"request": {"id_token": {"value": STRANGER, "type": "ISO14443"}}}) \
            == "AuthorizationNotFound"
        assert rig.call("reservation", "reserve_now", {"request": {
            "reservation_id": 8, "id_token": STRANGER, "expiry_time": expiry(),
            "evse_id": 2}}) == "Accepted"
        assert rig.call("reservation", "reserve_now", {"request": {
            "reservation_id": 10, "id_token": HOLDER, "parent_id_token": PARENT,
            "expiry_time": expiry(), "evse_id": 3}}) == "Accepted"
        assert rig.stop_module() == 0

        log = rig.module_log()
        assert log.count("tok:") >= 3
        assert leaks(log, HOLDER, STRANGER, PARENT) == [], "token characters in the log"
        state = tmp_path / "state"
        files = written_files(state)
        assert {p.name for p in files} == {"reservations.json", "auth-privacy.key"}
        for path in files:
            assert leaks(path.read_text(errors="replace"), HOLDER, STRANGER, PARENT) == [], path
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} readable by others"
        stored = json.loads((state / "reservations.json").read_text())["reservations"]
        assert {r["reservation"]["id_token"][:12] for r in stored} == {"hmac-sha256:"}

        # After a restart the stored hashes still match their tokens, in any case.
        rig.start_module()
        assert exists(rig, HOLDER.lower(), 3) == "ReservedForToken"
        assert exists(rig, STRANGER.upper(), 2) == "ReservedForToken"
        assert exists(rig, STRANGER, 3) == "ReservedForOtherTokenAndHasParentToken"
        assert rig.call("reservation", "exists_reservation", {"request": {
            "id_token": "Zwqx-Other", "evse_id": 3, "group_id_token": PARENT.upper()}}) \
            == "ReservedForToken"
        assert rig.stop_module() == 0
        assert leaks(rig.module_log(), HOLDER, STRANGER, PARENT) == []
    finally:
        rig.stop()


def test_an_old_store_with_raw_values_is_rewritten_on_first_start(broker: Mosquitto,
                                                                   tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "reservations.json").write_text(json.dumps({"version": 1, "reservations": [
        {"evse_id": 1, "reservation": {"reservation_id": 3, "id_token": HOLDER,
                                       "parent_id_token": PARENT, "expiry_time": expiry(),
                                       "evse_id": 1}}]}))
    rig = make_rig(broker, tmp_path)
    try:
        rig.start()
        assert leaks((state / "reservations.json").read_text(), HOLDER, PARENT) == []
        assert exists(rig, HOLDER.upper(), 1) == "ReservedForToken"
        assert exists(rig, STRANGER, 1) != "ReservedForToken"
        assert rig.stop_module() == 0
        assert leaks(rig.module_log(), HOLDER, PARENT) == []
    finally:
        rig.stop()


def test_show_tokens_shows_values_in_the_log_but_not_in_the_store(broker: Mosquitto,
                                                                    tmp_path: Path) -> None:
    rig = make_rig(broker, tmp_path, show_tokens=True)
    try:
        rig.start()
        rig.swipe(STRANGER, connectors=[1])
        rig.statuses.wait(STRANGER, "Rejected")
        assert rig.call("reservation", "reserve_now", {"request": {
            "reservation_id": 9, "id_token": HOLDER, "expiry_time": expiry(),
            "evse_id": 1}}) == "Accepted"
        assert rig.stop_module() == 0
        assert STRANGER in rig.module_log()
        assert leaks((tmp_path / "state" / "reservations.json").read_text(), HOLDER) == []
    finally:
        rig.stop()
