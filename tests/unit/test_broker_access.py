"""CONTRACT §2.1 at start-up: every key of a secured broker connection, and each mistake as
one line naming the file, the key and the problem (exit 2 is tested in integration)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from auth_module.broker_access import is_loopback, make_tls_context
from auth_module.station import StationError, load_station
from tests.integration.secure_broker import Pki, write_secret

pytestmark = pytest.mark.timeout(20)

CONNECTIONS = """\
connections:
  token_provider: [{module_id: reader, implementation_id: main}]
  token_validator: [{module_id: validator, implementation_id: main}]
  evse_manager: [{module_id: evse_manager_1, implementation_id: evse}]
"""

# CONTRACT.md §2.1, exactly as written there (paths made to exist below).
CONTRACT_21 = """\
mqtt:
  socket_path: /run/mosquitto/mqtt.sock   # a unix socket instead of host/port (EVerest's usual broker)
  username: station-17
  password_file: /etc/auth-module/mqtt.pass   # its first line is the password; never the password itself here
  tls:                                    # TLS to the broker; the broker's certificate chain and host name are always verified
    ca_file: /etc/auth-module/ca.pem      # default: the system's trusted CAs
    cert_file: /etc/auth-module/station.pem   # client certificate and key, for brokers that require one
    key_file: /etc/auth-module/station.key
  allow_insecure: false                   # true allows credentials over plain TCP to a host that is not loopback
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def station(tmp_path: Path, mqtt: str) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(f"mqtt:\n{mqtt}{CONNECTIONS}")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(StationError) as info:
        load_station(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{path}: ")
    return text


def test_contract_example_is_accepted_keys_as_written(tmp_path: Path, pki: Pki) -> None:
    cert, key = pki.issue("station-17", client=True)
    secret = write_secret(tmp_path / "mqtt.pass", "s3cret-pw")
    text = (CONTRACT_21.replace("/etc/auth-module/mqtt.pass", str(secret))
            .replace("/etc/auth-module/ca.pem", str(pki.ca_file))
            .replace("/etc/auth-module/station.pem", str(cert))
            .replace("/etc/auth-module/station.key", str(key))
            .replace("  socket_path: /run/mosquitto/mqtt.sock", "  host: localhost  "))
    path = tmp_path / "station.yaml"
    path.write_text(text + CONNECTIONS)
    access = load_station(path).broker
    assert access.tls and access.username == "station-17" and access.password == "s3cret-pw"
    assert (access.ca_file, access.cert_file, access.key_file) == (pki.ca_file, cert, key)
    assert "s3cret-pw" not in repr(access)
    # The example as written, with its socket_path together with tls, is refused (§2.1).
    path.write_text(CONTRACT_21.replace("/etc/auth-module/mqtt.pass", str(secret)) + CONNECTIONS)
    assert "mqtt.tls: cannot be used with mqtt.socket_path" in error_of(path)


def test_no_keys_connects_as_today(tmp_path: Path) -> None:
    access = load_station(station(tmp_path, "  host: 127.0.0.1\n")).broker
    assert not access.tls and access.username is None and access.socket_path is None
    assert access.local and access.address == "mqtt://127.0.0.1:1883"


def test_relative_paths_are_relative_to_the_station_file(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "secrets").mkdir()
    write_secret(tmp_path / "secrets" / "pw", "pw-1\nsecond line ignored")
    (tmp_path / "ca.pem").write_bytes(pki.ca_file.read_bytes())
    path = station(tmp_path, "  host: broker.example.com\n  port: 8883\n  username: st\n"
                             "  password_file: secrets/pw\n  tls:\n    ca_file: ca.pem\n"
                             "  socket_path: null\n")
    access = load_station(path).broker
    assert access.password == "pw-1" and access.ca_file == tmp_path / "ca.pem"
    assert not access.local and access.address == "mqtts://broker.example.com:8883"
    path = station(tmp_path, "  socket_path: run/mqtt.sock\n")
    assert load_station(path).broker.socket_path == tmp_path / "run" / "mqtt.sock"


def test_empty_tls_section_means_tls_with_system_cas(tmp_path: Path) -> None:
    access = load_station(station(tmp_path, "  host: broker.example.com\n  tls:\n")).broker
    assert access.tls and access.ca_file is None


@pytest.mark.parametrize("key", ["password_file", "tls.ca_file", "tls.cert_file", "tls.key_file"])
def test_missing_file_names_the_key(tmp_path: Path, pki: Pki, key: str) -> None:
    cert, keyf = pki.issue("c1", client=True)
    files = {"password_file": str(write_secret(tmp_path / "pw", "x")), "tls.ca_file": str(pki.ca_file),
             "tls.cert_file": str(cert), "tls.key_file": str(keyf)}
    files[key] = str(tmp_path / "nowhere" / "file")
    text = (f"  username: u\n  password_file: {files['password_file']}\n  tls:\n"
            f"    ca_file: {files['tls.ca_file']}\n    cert_file: {files['tls.cert_file']}\n"
            f"    key_file: {files['tls.key_file']}\n")
    assert f": mqtt.{key}: file not found: " in error_of(station(tmp_path, text))


def test_unreadable_password_file(tmp_path: Path) -> None:
    secret = write_secret(tmp_path / "pw", "x")
    secret.chmod(0)
    try:
        if secret.open("rb"):  # root reads anything: nothing to test then
            pytest.skip("running as root")
    except PermissionError:
        pass
    message = error_of(station(tmp_path, f"  username: u\n  password_file: {secret}\n"))
    assert "mqtt.password_file: cannot read (permission denied)" in message


def test_empty_password_file(tmp_path: Path) -> None:
    secret = write_secret(tmp_path / "pw", "")
    message = error_of(station(tmp_path, f"  username: u\n  password_file: {secret}\n"))
    assert "mqtt.password_file: the first line (the password) is empty" in message


def test_key_without_certificate_and_the_reverse(tmp_path: Path, pki: Pki) -> None:
    cert, key = pki.issue("c2", client=True)
    assert "mqtt.tls.key_file: given without mqtt.tls.cert_file" in error_of(
        station(tmp_path, f"  tls:\n    key_file: {key}\n"))
    assert "mqtt.tls.cert_file: given without mqtt.tls.key_file" in error_of(
        station(tmp_path, f"  tls:\n    cert_file: {cert}\n"))


def test_key_of_another_certificate(tmp_path: Path, pki: Pki) -> None:
    cert, _ = pki.issue("c3", client=True)
    _, other_key = pki.issue("c4", client=True)
    message = error_of(station(tmp_path, f"  tls:\n    cert_file: {cert}\n    key_file: {other_key}\n"))
    assert "mqtt.tls.key_file: certificate and key cannot be used together" in message


def test_ca_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    assert "mqtt.tls.ca_file: not a usable CA certificate" in error_of(
        station(tmp_path, f"  tls:\n    ca_file: {junk}\n"))


def test_socket_path_with_tls(tmp_path: Path) -> None:
    assert "mqtt.tls: cannot be used with mqtt.socket_path" in error_of(
        station(tmp_path, "  socket_path: /run/mqtt.sock\n  tls: {}\n"))


@pytest.mark.parametrize("host", ["broker.example.com", "10.0.0.5", "::2"])
def test_credentials_in_clear_to_a_remote_host_need_allow_insecure(tmp_path: Path, host: str) -> None:
    secret = write_secret(tmp_path / "pw", "secret-value")
    text = f"  host: '{host}'\n  username: st\n  password_file: {secret}\n"
    message = error_of(station(tmp_path, text))
    assert f"mqtt.password_file: credentials would go in clear text to {host}" in message
    assert "secret-value" not in message
    assert "mqtt.username: credentials" in error_of(station(tmp_path, f"  host: '{host}'\n  username: st\n"))
    assert load_station(station(tmp_path, text + "  allow_insecure: true\n")).broker.password == "secret-value"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.3.2.1", "::1"])
def test_credentials_in_clear_to_loopback_are_fine(tmp_path: Path, host: str) -> None:
    secret = write_secret(tmp_path / "pw", "pw")
    access = load_station(station(tmp_path, f"  host: '{host}'\n  username: st\n  password_file: {secret}\n")).broker
    assert access.username == "st" and access.local


def test_credentials_over_a_unix_socket_are_fine(tmp_path: Path) -> None:
    secret = write_secret(tmp_path / "pw", "pw")
    path = station(tmp_path, f"  socket_path: /run/x.sock\n  username: st\n  password_file: {secret}\n")
    assert load_station(path).broker.local


def test_password_file_without_username(tmp_path: Path) -> None:
    secret = write_secret(tmp_path / "pw", "pw")
    assert "mqtt.password_file: needs mqtt.username" in error_of(
        station(tmp_path, f"  password_file: {secret}\n"))


def test_password_file_open_to_others_is_a_warning(tmp_path: Path) -> None:
    secret = write_secret(tmp_path / "pw", "pw")
    secret.chmod(0o644)
    access = load_station(station(tmp_path, f"  username: st\n  password_file: {secret}\n")).broker
    assert any("can be read by group or others" in w for w in access.warnings)


@pytest.mark.parametrize("text, key", [
    ("  allow_insecure: 'yes'\n", "mqtt.allow_insecure"),
    ("  username: ''\n", "mqtt.username"),
    ("  tls: true\n", "mqtt.tls"),
    ("  tls:\n    verify: false\n", "mqtt.tls"),
    ("  password: hunter2\n", "mqtt"),
])
def test_wrong_types_and_unknown_keys(tmp_path: Path, text: str, key: str) -> None:
    message = error_of(station(tmp_path, text))
    assert f": {key}: " in message
    assert "hunter2" not in message


def test_persistent_session_client_id(tmp_path: Path) -> None:
    access = load_station(station(tmp_path, "  prefix: site/st-17/\n  persistent_session: true\n")).broker
    assert access.persistent_session and access.client_id == "auth-site-st-17-auth"
    access = load_station(station(tmp_path, "  persistent_session: true\n  client_id: cp-17\n")).broker
    assert access.client_id == "cp-17"
    assert "mqtt.client_id: only used with mqtt.persistent_session" in error_of(
        station(tmp_path, "  client_id: cp-17\n"))


def test_tls_context_always_verifies(pki: Pki) -> None:
    context = make_tls_context(pki.ca_file, None, None)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_is_loopback() -> None:
    assert is_loopback("localhost") and is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("10.0.0.1") and not is_loopback("localhost.example.com")


def test_config_files_for_secured_broker_and_everest_socket_load(tmp_path: Path, pki: Pki) -> None:
    root = Path(__file__).resolve().parents[2] / "config"
    secret = write_secret(tmp_path / "mqtt.pass", "pw")
    text = (root / "secured-broker.yaml").read_text().replace(
        "/run/credentials/auth-module.service/mqtt.pass", str(secret))
    (tmp_path / "site-ca.pem").write_bytes(pki.ca_file.read_bytes())
    (tmp_path / "secured-broker.yaml").write_text(text)
    access = load_station(tmp_path / "secured-broker.yaml").broker
    assert access.tls and access.username == "station-17" and not access.local
    access = load_station(root / "everest-socket.yaml").broker
    assert access.socket_path is not None and access.local and not access.tls


def test_back_off_is_bounded_and_longer_after_a_refusal() -> None:
    """The waits between attempts, without waiting: NetworkLoop's stop event records them."""
    import paho.mqtt.client as mqtt

    from auth_module.broker_access import BrokerAccess
    from auth_module.bus.connection import REFUSED_CAP_S, back_off_for
    from auth_module.bus.netloop import NetworkLoop

    class Recorder:
        def __init__(self) -> None:
            self.waits: list[float] = []

        def wait(self, seconds: float) -> bool:
            self.waits.append(seconds)
            return False

        def is_set(self) -> bool:
            return False

    for access, cap in ((BrokerAccess(host="127.0.0.1"), 0.25),
                        (BrokerAccess(host="broker.example.com"), 0.4),
                        (BrokerAccess(host="broker.example.com", reconnect_max_s=3.0), 3.0)):
        policy = back_off_for(access)
        loop = NetworkLoop(mqtt.Client(mqtt.CallbackAPIVersion.VERSION2), "t", policy.first,
                           policy.cap, lambda exc: None, refused_max_delay_s=policy.refused_cap,
                           jitter=policy.jitter)
        rec = Recorder()
        loop._stopped = rec  # type: ignore[assignment]
        for _ in range(12):
            loop._back_off()
        assert max(rec.waits) <= cap and rec.waits[-1] >= cap * (1 - policy.jitter) - 1e-9
        assert rec.waits[0] <= 0.05
        rec.waits.clear()
        loop.refused()
        for _ in range(12):
            loop._back_off()
        assert cap < max(rec.waits) <= REFUSED_CAP_S
        loop.away()
        rec.waits.clear()
        loop._back_off()
        assert rec.waits[0] <= cap
