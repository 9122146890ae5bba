"""The console's API (CONTRACT.md §9) against the running module, over verified HTTPS.

Every 401 and 403 case of the contract, the allow list changed through the API and then
used on the bus, the bus-command equivalents (withdraw, cancel a reservation), the live
stream, keys made and revoked while the module runs, and the console's station-file checks.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from simulators.broker import Mosquitto

from .console_rig import ConsoleRig, run_keys
from .harness import AUTH_MODULE, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

READS = [("GET", "/api/v1/station"), ("GET", "/api/v1/allow-list"), ("GET", "/api/v1/history"),
         ("GET", "/api/v1/history.csv"), ("GET", "/api/v1/me")]
WRITES = [("PUT", "/api/v1/allow-list/NEW_CARD_9", {"status": "Accepted"}),
          ("DELETE", "/api/v1/allow-list/KNOWN_CARD_1", None),
          ("POST", "/api/v1/evses/1/withdraw", None),
          ("DELETE", "/api/v1/reservations/7", None),
          ("POST", "/api/v1/allow-list/register-next", None),
          ("GET", "/api/v1/keys", None),
          ("POST", "/api/v1/keys", {"name": "x", "role": "admin"}),
          ("DELETE", "/api/v1/keys/ops", None)]
EVERY = [(m, p, None) for m, p in READS] + [("GET", "/api/v1/events", None)] + WRITES


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleRig]:
    with Mosquitto() as broker:
        r = ConsoleRig(broker, tmp_path_factory.mktemp("console"))
        r.write_station()
        r.admin = r.key("ops", "admin")  # type: ignore[attr-defined]
        r.viewer = r.key("watcher", "viewer")  # type: ignore[attr-defined]
        try:
            yield r.start()
        finally:
            r.stop()


def send(client: httpx.Client, method: str, path: str, body: object = None) -> httpx.Response:
    if path == "/api/v1/events":  # a stream: only its status line matters here
        with client.stream(method, path) as res:
            if res.status_code != 200:
                res.read()
            return res
    return client.request(method, path, json=body) if body is not None else \
        client.request(method, path)


@pytest.mark.parametrize("header", [None, "Bearer amk_not-a-key", "Bearer", "Basic b3BzOnB3",
                                    "amk_no-scheme"])
def test_every_path_needs_a_valid_key(rig: ConsoleRig, header: str | None) -> None:
    client = rig.client()
    if header is not None:
        client.headers["Authorization"] = header
    for method, path, body in EVERY:
        res = send(client, method, path, body)
        assert res.status_code == 401, (method, path, res.status_code)
        assert res.headers["www-authenticate"].startswith("Bearer")
        assert "amk_" not in res.text


def test_viewer_reads_but_may_not_change_anything(rig: ConsoleRig) -> None:
    viewer = rig.client(rig.viewer)  # type: ignore[attr-defined]
    for method, path in READS:
        assert viewer.request(method, path).status_code == 200, path
    with viewer.stream("GET", "/api/v1/events") as res:
        assert res.status_code == 200
    for method, path, body in WRITES:
        res = send(viewer, method, path, body)
        assert res.status_code == 403, (method, path, res.status_code)
    # and nothing changed: the card the viewer tried to delete is still there
    tokens = viewer.get("/api/v1/allow-list").json()["tokens"]
    assert [t["id_token"] for t in tokens] == ["KNOWN_CARD_1"]


def test_station_shows_evses_tokens_masked_and_validators(rig: ConsoleRig) -> None:
    rig.swipe("STRANGER_CARD_77")
    client = rig.client(rig.viewer)  # type: ignore[attr-defined]

    def seen() -> dict | None:
        data = client.get("/api/v1/station").json()
        ok = any(t["reason"] == "unknown card" for t in data["recent_tokens"])
        return data if ok else None

    data = wait_until(seen, 15.0, "the unknown card in recent_tokens")
    assert [e["id"] for e in data["evses"]] == [1, 2]
    assert data["evses"][0]["connectors"][0]["type"] == "cCCS2"
    assert data["validators"][0]["kind"] == "allow_list"
    assert "STRANGER_CARD_77" not in json.dumps(data)  # masked as in the logs
    record = next(t for t in data["recent_tokens"] if t["reason"] == "unknown card")
    assert record["statuses"] == ["Processing", "Rejected"] and record["token"] == rig.label("STRANGER_CARD_77")


def test_admin_adds_a_card_and_the_next_swipe_is_accepted(rig: ConsoleRig) -> None:
    admin = rig.client(rig.admin)  # type: ignore[attr-defined]
    rig.swipe("FRESH_CARD_42")
    rig.statuses.wait("FRESH_CARD_42", "Rejected")
    res = admin.put("/api/v1/allow-list/FRESH_CARD_42",
                    json={"status": "Accepted", "nickname": "Bob", "evse_ids": [1]})
    assert res.status_code == 201, res.text
    on_disk = yaml.safe_load(rig.tokens_path.read_text())["tokens"]
    assert {"id_token": "FRESH_CARD_42", "status": "Accepted", "nickname": "Bob",
            "evse_ids": [1]} in on_disk
    rig.swipe("FRESH_CARD_42")  # at once, although the validator rereads only every 60 s
    rig.statuses.wait("FRESH_CARD_42", "Accepted")
    # a bad entry is refused with the reason, and the file is left as it was
    before = rig.tokens_path.read_text()
    res = admin.put("/api/v1/allow-list/FRESH_CARD_42", json={"status": "Maybe"})
    assert res.status_code == 400 and "status" in res.json()["error"]
    res = admin.put("/api/v1/allow-list/FRESH_CARD_42", json={"colour": "red"})
    assert res.status_code == 400 and "colour" in res.json()["error"]
    assert rig.tokens_path.read_text() == before
    assert admin.delete("/api/v1/allow-list/FRESH_CARD_42").status_code == 204
    assert admin.delete("/api/v1/allow-list/FRESH_CARD_42").status_code == 404


def test_withdraw_and_cancel_reservation_act_as_the_bus_commands(rig: ConsoleRig) -> None:
    admin = rig.client(rig.admin)  # type: ignore[attr-defined]
    for evse in (1, 2):
        admin.post(f"/api/v1/evses/{evse}/withdraw")
    rig.swipe("KNOWN_CARD_1")  # accepted, waits for a car
    rig.statuses.wait("KNOWN_CARD_1", "Accepted")
    res = admin.post("/api/v1/evses/1/withdraw")
    assert res.status_code == 200 and res.json() == {"result": "Accepted"}
    rig.statuses.wait("KNOWN_CARD_1", "Withdrawn")
    assert admin.post("/api/v1/evses/9/withdraw").status_code == 404

    expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert rig.call("reservation", "reserve_now", {"request": {
        "reservation_id": 77, "id_token": "KNOWN_CARD_1", "expiry_time": expiry,
        "evse_id": 2}}) == "Accepted"
    reserved = wait_until(lambda: admin.get("/api/v1/station").json()["reservations"],
                          message="the reservation on the page")
    assert reserved[0]["reservation_id"] == 77 and reserved[0]["evse_id"] == 2
    res = admin.delete("/api/v1/reservations/77")
    assert res.status_code == 200 and res.json() == {"cancelled": True}
    assert admin.delete("/api/v1/reservations/77").status_code == 404
    assert rig.call("reservation", "exists_reservation", {"request": {
        "id_token": "KNOWN_CARD_1", "evse_id": 2}}) == "NotReserved"


def test_keys_made_and_revoked_while_running_count_at_once(rig: ConsoleRig) -> None:
    key = rig.key("temp", "viewer")
    client = rig.client(key)
    assert client.get("/api/v1/me").json() == {"name": "temp", "role": "viewer"}
    with client.stream("GET", "/api/v1/events") as events:
        lines = events.iter_lines()
        assert next(ln for ln in lines if ln.startswith("event:")) == "event: station"
        out = run_keys(rig.station_path, "revoke", "temp")
        assert out.returncode == 0, out.stderr
        assert client.get("/api/v1/me").status_code == 401
        # the open stream says so (after any state already on its way) and ends
        assert "event: logout" in [ln for ln in lines if ln.startswith("event:")]


def test_an_expired_key_is_refused(rig: ConsoleRig) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat().replace("+00:00", "Z")
    key = rig.key("short", "admin", "--expires", soon)
    client = rig.client(key)
    assert client.get("/api/v1/me").status_code == 200
    wait_until(lambda: client.get("/api/v1/me").status_code == 401, 10.0,
               "the key to expire")
    assert client.put("/api/v1/allow-list/X1", json={}).status_code == 401


def test_admin_manages_keys_through_the_api(rig: ConsoleRig) -> None:
    admin = rig.client(rig.admin)  # type: ignore[attr-defined]
    res = admin.post("/api/v1/keys", json={"name": "phone", "role": "viewer"})
    assert res.status_code == 201
    key = res.json()["key"]
    assert rig.client(key).get("/api/v1/me").json()["role"] == "viewer"
    listed = admin.get("/api/v1/keys").json()["keys"]
    assert {"ops", "watcher", "phone"} <= {k["name"] for k in listed}
    assert "amk_" not in json.dumps(listed) and "hash" not in json.dumps(listed)
    assert admin.post("/api/v1/keys", json={"name": "phone", "role": "viewer"}).status_code == 400
    assert admin.delete("/api/v1/keys/phone").status_code == 204
    assert rig.client(key).get("/api/v1/me").status_code == 401


def test_the_live_stream_shows_a_swipe(rig: ConsoleRig) -> None:
    client = rig.client(rig.viewer)  # type: ignore[attr-defined]
    with client.stream("GET", "/api/v1/events") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        lines = events.iter_lines()
        next(ln for ln in lines if ln.startswith("data:"))  # the state on connecting
        rig.swipe("LIVE_CARD_5150")
        label = rig.label("LIVE_CARD_5150")
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            line = next(lines)
            if line.startswith("data:") and any(
                    t["token"] == label for t in json.loads(line[5:])["recent_tokens"]):
                break
        else:
            raise AssertionError("the swipe did not reach the stream")


def test_key_and_certificate_files_are_private_and_keys_never_listed(rig: ConsoleRig) -> None:
    keys_file = rig.station_path.with_name("station.console-keys.json")
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(rig.tmp_path.joinpath("station.console.key").stat().st_mode) == 0o600
    assert rig.admin not in keys_file.read_text()  # type: ignore[attr-defined]
    out = run_keys(rig.station_path, "list")
    assert out.returncode == 0 and "ops" in out.stdout and "admin" in out.stdout
    assert "amk_" not in out.stdout
    # the page's files carry a strict content security policy
    res = rig.client().get("/")
    assert res.status_code == 200 and "script-src 'self'" in res.headers["content-security-policy"]


def test_keys_command_errors_are_one_line(rig: ConsoleRig, tmp_path: Path) -> None:
    for args in (("create", "--name", "ops", "--role", "admin"),
                 ("create", "--name", "y", "--role", "admin", "--expires", "tomorrow"),
                 ("revoke", "nobody")):
        out = run_keys(rig.station_path, *args)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    out = subprocess.run([AUTH_MODULE, "keys", "list", "--config", str(tmp_path / "none.yaml")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "file not found" in out.stderr


def test_no_allow_list_validator_is_409(broker: Mosquitto, tmp_path: Path) -> None:
    r = ConsoleRig(broker, tmp_path, allow_list=False, console={"allow_http": True})
    r.write_station()
    admin_key = r.key("ops", "admin")
    viewer_key = r.key("v", "viewer")
    try:
        r.start()
        admin = r.client(admin_key)
        assert r.url.startswith("http://")
        assert admin.get("/api/v1/allow-list").status_code == 409
        assert admin.put("/api/v1/allow-list/A1", json={}).status_code == 409
        assert admin.delete("/api/v1/allow-list/A1").status_code == 409
        assert r.client(viewer_key).put("/api/v1/allow-list/A1", json={}).status_code == 403
        assert r.client().get("/api/v1/allow-list").status_code == 401
    finally:
        r.stop()


def test_bad_console_sections_exit_2_with_one_line(tmp_path: Path) -> None:
    base = {"connections": {"token_provider": [{"module_id": "r", "implementation_id": "main"}],
                            "token_validator": [{"module_id": "v", "implementation_id": "main"}],
                            "evse_manager": [{"module_id": "e", "implementation_id": "evse"}]}}
    for console, needle in (({"listen": "nowhere"}, "console.listen"),
                            ({"listen": "127.0.0.1:99999"}, "console.listen"),
                            ({"colour": 1}, "console"),
                            ({"allow_http": True, "tls": {"cert_file": "a", "key_file": "b"}},
                             "allow_http")):
        path = tmp_path / "station.yaml"
        path.write_text(yaml.safe_dump({**base, "console": console}))
        out = subprocess.run([AUTH_MODULE, "--config", str(path)], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 2 and needle in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


def test_a_station_without_console_imports_no_web_stack() -> None:
    code = ("import sys, auth_module.cli, auth_module.module, auth_module.station; "
            "bad = [m for m in ('starlette', 'uvicorn', 'cryptography', 'auth_module.console.feed',"
            " 'auth_module.console.server') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ})
    assert out.returncode == 0, out.stdout + out.stderr
