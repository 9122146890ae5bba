"""The console's certificate: the station's own (``console.tls``), or a self-signed one made
on first start with ``cryptography`` and kept beside the station file (key mode 0600), so
that browsers that were told to trust it once keep trusting it across restarts."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path


def default_paths(station_path: Path) -> tuple[Path, Path]:
    return (station_path.with_name(f"{station_path.stem}.console.pem"),
            station_path.with_name(f"{station_path.stem}.console.key"))


def ensure_self_signed(cert_path: Path, key_path: Path, host: str) -> bool:
    """Make the pair unless both files exist; True if made now.

    Made in a child process: ``cryptography`` costs the module ~8 MB of memory for as long
    as it runs once imported, and it is needed only this once."""
    if cert_path.exists() and key_path.exists():
        return False
    done = subprocess.run([sys.executable, "-m", __name__, str(cert_path), str(key_path), host],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        lines = (done.stderr or "").strip().splitlines()
        raise OSError(f"cannot make a self-signed certificate: "
                      f"{lines[-1] if lines else 'exit ' + str(done.returncode)}")
    return True


def make_self_signed(cert_path: Path, key_path: Path, host: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auth-module console"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, socket.gethostname()[:64])])
    alt: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                   x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                   x509.IPAddress(ipaddress.ip_address("::1"))]
    hostname = socket.gethostname()
    if hostname and hostname != "localhost":
        alt.append(x509.DNSName(hostname))
    try:
        ip = ipaddress.ip_address(host)
        if not ip.is_unspecified and not ip.is_loopback:
            alt.append(x509.IPAddress(ip))
    except ValueError:
        if host not in ("localhost", hostname):
            alt.append(x509.DNSName(host))
    now = datetime.now(UTC)
    public = key.public_key()
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=5 * 365))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_bytes = key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


if __name__ == "__main__":  # the child process of ensure_self_signed
    make_self_signed(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
