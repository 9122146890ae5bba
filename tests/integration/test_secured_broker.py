"""CONTRACT §2.1 against a real mosquitto: TLS (chain and host name verified), passwords,
client certificates, a unix socket, per-station ACLs, and each failure as one log line per
attempt while the module keeps retrying.

The module runs as its own process (``auth-module --config``) on the secured listener; the
simulators of its station use the broker's plain loopback listener.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.integration.harness import AUTH_MODULE, Rig, ValidatorSpec, wait_until
from tests.integration.secure_broker import Pki, SecureBroker, secure_broker, write_secret

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

PASSWORD = "pw-Station-A-7c1e"
TOKEN = "04A1B2C3"
ACL = (Path(__file__).with_name("station-acl.conf")).read_text()


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[SecureBroker]:
    made = secure_broker(tmp_path / "broker", {"station-a": PASSWORD, "station-b": "pw-b"})
    made.broker.start()
    try:
        yield made
    finally:
        made.broker.close()


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.stop()


def secret(tmp_path: Path, text: str = PASSWORD) -> str:
    return str(write_secret(tmp_path / "mqtt.pass", text))


def run_rig(rigs: list[Rig], sb: SecureBroker, tmp_path: Path, mqtt_keys: dict[str, Any],
            wait_ready: bool = True, **kw: Any) -> Rig:
    rig = Rig(sb.broker, tmp_path, scripted=True, evses=[[(1, "cType2")]],
              validators=[ValidatorSpec("validator", tokens=[{"id_token": TOKEN}])],
              mqtt=mqtt_keys, **kw)
    rigs.append(rig)
    rig.write_station()
    rig.start_simulators()
    rig.start_module(wait_ready=wait_ready)
    return rig


def serves_a_token(rig: Rig) -> None:
    rig.swipe(TOKEN, connectors=[1])
    rig.statuses.wait(TOKEN, "Accepted", timeout=10.0)


def assert_clean_log(rig: Rig, *secrets: str) -> None:
    text = rig.module_log()
    assert "Traceback" not in text, text[-3000:]
    for s in secrets:
        assert s not in text


def cmdline(rig: Rig) -> str:
    assert rig.proc is not None
    return Path(f"/proc/{rig.proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def warnings_with(rig: Rig, text: str) -> list[dict[str, Any]]:
    return [r for r in rig.log_records()
            if r.get("level") == "warning" and text in str(r.get("event", ""))]


# --- it works, each way --------------------------------------------------------------------


def test_tls_with_password(sb: SecureBroker, tmp_path: Path, rigs: list[Rig]) -> None:
    rig = run_rig(rigs, sb, tmp_path, {"port": sb.tls_port, "username": "station-a",
                                       "password_file": secret(tmp_path),
                                       "tls": {"ca_file": str(sb.ca_file)}})
    serves_a_token(rig)
    assert PASSWORD not in cmdline(rig)
    assert_clean_log(rig, PASSWORD)
    connected = [r for r in rig.log_records() if r.get("event") == "connected"]
    assert connected and connected[0]["broker"] == f"mqtts://127.0.0.1:{sb.tls_port}"


def test_password_over_plain_loopback(sb: SecureBroker, tmp_path: Path, rigs: list[Rig]) -> None:
    rig = run_rig(rigs, sb, tmp_path, {"port": sb.pw_port, "username": "station-a",
                                       "password_file": secret(tmp_path)})
    serves_a_token(rig)
    assert_clean_log(rig, PASSWORD)


def test_client_certificate(sb: SecureBroker, tmp_path: Path, rigs: list[Rig]) -> None:
    cert, key = sb.pki.issue("station-a", client=True)
    rig = run_rig(rigs, sb, tmp_path, {"port": sb.mtls_port, "tls": {
        "ca_file": str(sb.ca_file), "cert_file": str(cert), "key_file": str(key)}})
    serves_a_token(rig)


def test_unix_socket(sb: SecureBroker, tmp_path: Path, rigs: list[Rig]) -> None:
    rig = run_rig(rigs, sb, tmp_path, {"socket_path": str(sb.socket_path)})
    serves_a_token(rig)
    assert any(r.get("broker") == f"unix:{sb.socket_path}" for r in rig.log_records())


# --- each failure: one line per attempt, no traceback, still retrying -----------------------


def assert_reported_and_retrying(rig: Rig, text: str, attempts: int = 2) -> None:
    wait_until(lambda: len(warnings_with(rig, text)) >= attempts, 15.0,
               f"{attempts} log lines saying {text!r}")
    assert rig.proc is not None and rig.proc.poll() is None, rig.module_log()[-2000:]
    assert rig.ready_count == 0


def test_refused_password(sb: SecureBroker, tmp_path: Path, rigs: list[Rig]) -> None:
    wrong = "Wrong-Password-991"
    rig = run_rig(rigs, sb, tmp_path, {"port": sb.tls_port, "username": "station-a",
                                       "password_file": secret(tmp_path, wrong),
                                       "tls": {"ca_file": str(sb.ca_file)}}, wait_ready=False)
    assert_reported_and_retrying(rig, "broker refused the credentials")
    line = warnings_with(rig, "broker refused the credentials")[0]
    assert line["user"] == "station-a" and "authori" in line["reason"].lower()
    assert not warnings_with(rig, "connection lost")  # one line per attempt, not two
    assert_clean_log(rig, wrong, PASSWORD)


def test_certificate_for_another_host(sb: SecureBroker, tmp_path: Path, rigs: list[Rig]) -> None:
    rig = run_rig(rigs, sb, tmp_path, {"port": sb.wrong_host_port, "username": "station-a",
                                       "password_file": secret(tmp_path),
                                       "tls": {"ca_file": str(sb.ca_file)}}, wait_ready=False)
    assert_reported_and_retrying(rig, "broker certificate failed verification")
    assert "mismatch" in warnings_with(rig, "failed verification")[0]["event"]
    assert_clean_log(rig, PASSWORD)


def test_unknown_ca(sb: SecureBroker, tmp_path: Path, rigs: list[Rig]) -> None:
    other = Pki(tmp_path / "other-pki", name="Other CA")
    rig = run_rig(rigs, sb, tmp_path, {"port": sb.tls_port, "username": "station-a",
                                       "password_file": secret(tmp_path),
                                       "tls": {"ca_file": str(other.ca_file)}}, wait_ready=False)
    assert_reported_and_retrying(rig, "broker certificate failed verification")
    event = warnings_with(rig, "failed verification")[0]["event"]
    assert "self-signed certificate in certificate chain" in event or "issuer" in event
    assert_clean_log(rig, PASSWORD)


def test_system_cas_do_not_trust_a_private_ca(sb: SecureBroker, tmp_path: Path,
                                              rigs: list[Rig]) -> None:
    rig = run_rig(rigs, sb, tmp_path, {"port": sb.tls_port, "tls": {}}, wait_ready=False)
    assert_reported_and_retrying(rig, "broker certificate failed verification", attempts=1)


def test_missing_client_certificate(sb: SecureBroker, tmp_path: Path, rigs: list[Rig]) -> None:
    rig = run_rig(rigs, sb, tmp_path, {"port": sb.mtls_port, "tls": {"ca_file": str(sb.ca_file)}},
                  wait_ready=False)
    wait_until(lambda: len(warnings_with(rig, "TLS handshake failed")
                           + warnings_with(rig, "a client certificate may be required")) >= 2,
               15.0, "two lines saying the broker wants a client certificate")
    assert rig.proc is not None and rig.proc.poll() is None
    assert_clean_log(rig)


def test_refused_then_fixed_needs_no_restart_of_the_broker(sb: SecureBroker, tmp_path: Path,
                                                          rigs: list[Rig]) -> None:
    """A broker whose password file is fixed while the module retries: it gets in."""
    rig = run_rig(rigs, sb, tmp_path, {"port": sb.pw_port, "username": "station-c",
                                       "password_file": secret(tmp_path)}, wait_ready=False)
    assert_reported_and_retrying(rig, "broker refused the credentials", attempts=1)
    subprocess.run(["mosquitto_passwd", "-b", str(tmp_path / "broker" / "mosquitto.passwd"),
                    "station-c", PASSWORD], check=True)
    sb.broker.stop()
    sb.broker.start()
    wait_until(lambda: rig.ready_count > 0, 30.0, "ready after the password was accepted")
    serves_a_token(rig)


# --- start-up errors: exit 2, one line -------------------------------------------------------


@pytest.mark.parametrize("mqtt_text, expected", [
    ("  username: u\n  password_file: missing.pass\n", "mqtt.password_file: file not found"),
    ("  tls:\n    key_file: k.pem\n", "mqtt.tls.key_file: given without mqtt.tls.cert_file"),
    ("  socket_path: /run/x.sock\n  tls: {}\n", "mqtt.tls: cannot be used with mqtt.socket_path"),
    ("  host: broker.example.com\n  username: u\n", "mqtt.username: credentials would go in clear"),
])
def test_station_file_mistakes_exit_2_with_one_line(tmp_path: Path, mqtt_text: str,
                                                     expected: str) -> None:
    path = tmp_path / "station.yaml"
    path.write_text("mqtt:\n" + mqtt_text + "connections:\n"
                    "  token_provider: [{module_id: r, implementation_id: main}]\n"
                    "  token_validator: [{module_id: v, implementation_id: main}]\n"
                    "  evse_manager: [{module_id: e, implementation_id: evse}]\n")
    done = subprocess.run([AUTH_MODULE, "--config", str(path)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and expected in lines[0], done.stderr


# --- two stations on one broker ---------------------------------------------------------------


def _client(sb: SecureBroker, user: str, password: str) -> mqtt.Client:
    import ssl

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"intruder-{user}")
    context = ssl.create_default_context(cafile=str(sb.ca_file))
    c.tls_set_context(context)
    c.username_pw_set(user, password)
    return c


def test_two_stations_on_one_broker_cannot_reach_each_other(tmp_path: Path, rigs: list[Rig]) -> None:
    """The ACL of docs/security.md: each module works with exactly its rights, and one
    station's account can neither inject into nor read the other's prefix."""
    sb = secure_broker(tmp_path / "broker", {"station-a": PASSWORD, "station-b": "pw-b"}, acl=ACL)
    sb.broker.start()
    try:
        stations = {}
        for name, pw in (("station-a", PASSWORD), ("station-b", "pw-b")):
            folder = tmp_path / name
            folder.mkdir()
            stations[name] = run_rig(rigs, sb, folder, {
                "port": sb.tls_port, "username": name, "password_file": secret(folder, pw),
                "tls": {"ca_file": str(sb.ca_file)}}, prefix=f"site/{name}/")
        a, b = stations["station-a"], stations["station-b"]

        seen_by_b: list[str] = []
        spy = _client(sb, "station-b", "pw-b")
        spy.on_message = lambda _c, _u, msg: seen_by_b.append(msg.topic)
        spy.connect("127.0.0.1", sb.tls_port)
        spy.subscribe([("site/station-a/#", 1), ("site/#", 1)])
        spy.loop_start()
        try:
            time.sleep(0.5)
            # B's account writes a token into A's prefix: the broker drops it.
            intruder = ("site/station-a/modules/rfid_reader/impl/main/var/provided_token")
            payload = ('{"msg_type": "Var", "data": {"data": {"id_token": {"value": "INTRUDER1",'
                       ' "type": "ISO14443"}, "authorization_type": "RFID"}}}')
            spy.publish(intruder, payload, qos=1).wait_for_publish(5.0)
            # A's own reader works, and B's spy hears nothing of it.
            serves_a_token(a)
            serves_a_token(b)  # B works too, under its own prefix
            time.sleep(1.0)
            assert a.statuses.of("INTRUDER1") == []
            assert [t for t in seen_by_b if t.startswith("site/station-a/")] == []
        finally:
            spy.loop_stop()
            spy.disconnect()
        assert a.ready_count >= 1 and b.ready_count >= 1
    finally:
        for rig in rigs:
            rig.stop()
        sb.broker.close()
