"""Test helpers for secured brokers: a CA and certificates made on the spot, password and ACL
files, a mosquitto with TLS / password / client-certificate / unix-socket listeners, and a
TCP relay that can cut a client's connection while the broker stays up.

Nothing here is a mock: the module talks to a real mosquitto through real TLS.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import select
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from simulators.broker import Mosquitto, free_port


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass
class Pki:
    """A CA in ``folder`` that issues server and client certificates (PEM files)."""

    folder: Path
    name: str = "Test CA"

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._ca_key = _key()
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        self._ca_name = subject
        self._ca_cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self._ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca_file = _write_cert(self._ca_cert, self.folder / f"{self._slug}-ca.pem")

    @property
    def _slug(self) -> str:
        return self.name.lower().replace(" ", "-")

    def issue(self, name: str, hosts: list[str] | None = None, client: bool = False) -> tuple[Path, Path]:
        """(cert_file, key_file) for ``name``: a server certificate for ``hosts``, or a client one."""
        key = _key()
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False)
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for h in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    names.append(x509.DNSName(h))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        return (_write_cert(cert, self.folder / f"{name}.pem"),
                _write_key(key, self.folder / f"{name}.key"))


def write_password_file(path: Path, users: dict[str, str]) -> Path:
    """A mosquitto password file (hashed by ``mosquitto_passwd``; the password is on its argv,
    which is fine for a throw-away test broker and never done by the module)."""
    path.write_text("")
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path.chmod(0o600)
    return path


def write_secret(path: Path, text: str) -> Path:
    """A file whose first line is ``text``, mode 0600 (as a station's password file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


@dataclass
class SecureBroker:
    """One mosquitto with a plain anonymous listener (``broker.port``, for simulators) and:

    - ``tls_port``: TLS with a server certificate for 127.0.0.1/localhost, password required;
    - ``wrong_host_port``: TLS with a certificate for ``broker.example.com`` only;
    - ``mtls_port``: TLS that requires a client certificate from ``pki``;
    - ``pw_port``: plain TCP, password required (``allow_anonymous false``);
    - ``socket_path``: a unix socket (anonymous, as EVerest's broker);
    - every authenticated listener uses ``acl_file`` when given.
    """

    broker: Mosquitto
    pki: Pki
    tls_port: int
    wrong_host_port: int
    mtls_port: int
    pw_port: int
    socket_path: Path

    @property
    def ca_file(self) -> Path:
        return self.pki.ca_file


def secure_broker(folder: Path, users: dict[str, str], acl: str | None = None) -> SecureBroker:
    """Build (not start) a :class:`SecureBroker` whose files live in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(folder / "pki")
    server_cert, server_key = pki.issue("broker", hosts=["127.0.0.1", "localhost"])
    other_cert, other_key = pki.issue("other-host", hosts=["broker.example.com"])
    passwords = write_password_file(folder / "mosquitto.passwd", users)
    acl_lines: list[str] = []
    if acl is not None:
        acl_path = folder / "mosquitto.acl"
        acl_path.write_text(acl)
        acl_lines = [f"acl_file {acl_path}"]
    tls_port, wrong_port, mtls_port, pw_port = (free_port() for _ in range(4))
    sock = Path(folder) / "mqtt.sock"
    auth = ["allow_anonymous false", f"password_file {passwords}", *acl_lines]

    def tls(port: int, cert: Path, key: Path) -> list[str]:
        return [f"listener {port} 127.0.0.1", f"cafile {pki.ca_file}", f"certfile {cert}",
                f"keyfile {key}", "tls_version tlsv1.2"]

    extra = [
        *tls(tls_port, server_cert, server_key), *auth,
        *tls(wrong_port, other_cert, other_key), *auth,
        *tls(mtls_port, server_cert, server_key), "require_certificate true",
        "use_identity_as_username true", "allow_anonymous false", *acl_lines,
        f"listener {pw_port} 127.0.0.1", *auth,
        f"listener 0 {sock}", "allow_anonymous true",
    ]
    broker = Mosquitto(extra_conf=extra)
    return SecureBroker(broker, pki, tls_port, wrong_port, mtls_port, pw_port, sock)


class TcpRelay:
    """``127.0.0.1:port`` forwarded to ``target``; :meth:`cut` drops every relayed
    connection and refuses new ones until :meth:`resume`, while the target stays up."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self.port = int(self._server.getsockname()[1])
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._open = True
        self._closed = False
        self.connections = 0
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                if not self._open:
                    client.close()  # cut: the module sees a refused/closed connection
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=2.0)
                except OSError:
                    client.close()
                    continue
                for s in (client, upstream):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._pairs.append((client, upstream))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 0.5)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    peers[s].sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones (the broker stays up)."""
        with self._lock:
            self._open = False
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def resume(self) -> None:
        with self._lock:
            self._open = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._server.close()
