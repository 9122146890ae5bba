"""A real PC/SC stack for the tests: Debian's pcscd with the vsmartcard ``vpcd`` driver,
and a virtual contactless card of ours.

vpcd is a reader driver that listens on a TCP port (two readers: ``port`` and ``port+1``)
for a virtual card to connect; a card connecting is a card placed on the reader, a card
disconnecting is a card taken away. Its protocol: every message is a 2-byte big-endian
length and a body. A 1-byte body from the reader is a control: 0 power off, 1 power on,
2 reset, 4 "send your ATR" (answered with the ATR); any longer body is an APDU, answered
with the response APDU. (Debian's ``vicc`` does not run on current Python, so the card is
written here.)

pcscd listens on /run/pcscd/pcscd.comm (the daemon ignores PCSCLITE_CSOCK_NAME; only the
client library reads it), so :class:`Pcscd` gives ours a /run/pcscd of its own (see there).
It has a private reader configuration on free ports, and the tests can stop and start it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

SOCKET = Path("/run/pcscd/pcscd.comm")
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
#: a contactless MIFARE Classic 1K as a PC/SC reader reports it (PC/SC part 3 ATR)
ATR = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")


def why_no_pcscd() -> str | None:
    """Why pcscd with vpcd cannot run here, or None if it can."""
    if shutil.which("pcscd") is None and not Path("/usr/sbin/pcscd").exists():
        return "pcscd is not installed (apt-get install pcscd; scripts/setup.sh does)"
    if not VPCD_DRIVER.exists():
        return "the vpcd driver is not installed (apt-get install vsmartcard-vpcd)"
    try:
        import smartcard  # noqa: F401
    except ImportError:
        return "pyscard is not installed (pip install 'auth-module[pcsc]')"
    if not socket_answers() and os.geteuid() != 0:
        return "no pcscd is running, and starting one needs root (it listens in /run/pcscd)"
    return None


def socket_answers() -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(SOCKET))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """A port p with p and p+1 free on 127.0.0.1 (vpcd's two readers)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65535:
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two free ports in a row")


def list_readers() -> list[str]:
    from smartcard import scard

    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return []
    try:
        hresult, names = scard.SCardListReaders(context, [])
        return list(names) if hresult == scard.SCARD_S_SUCCESS else []
    finally:
        scard.SCardReleaseContext(context)


def wait_reader_empty(reader: str, timeout: float = 10.0) -> None:
    """Until pcscd says no card is on ``reader`` (or it has no such reader)."""
    from smartcard import scard

    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return
    try:
        deadline = time.monotonic() + timeout
        state = scard.SCARD_STATE_UNAWARE
        while time.monotonic() < deadline:
            hresult, answer = scard.SCardGetStatusChange(context, 200, [(reader, state)])
            if hresult == scard.SCARD_S_SUCCESS:
                state = answer[0][1] & ~scard.SCARD_STATE_CHANGED
                if not state & scard.SCARD_STATE_PRESENT:
                    return
            elif (hresult & 0xFFFFFFFF) != (scard.SCARD_E_TIMEOUT & 0xFFFFFFFF):
                return
        raise AssertionError(f"pcscd still sees a card on {reader} after {timeout} s")
    finally:
        scard.SCardReleaseContext(context)


class _LaunchFailed(Exception):
    pass


class PcscdUnusable(Exception):
    """A pcscd runs but the tests cannot use it (a reason to skip, not a failure)."""


class Pcscd:
    """pcscd with vpcd readers: ours (startable, stoppable) or the system's.

    Ours runs, where we may (root and ``unshare``), in a mount namespace of its own with
    a private directory mounted on /run/pcscd: its socket is then ``<workdir>/run/pcscd.comm``
    and the clients (this process, and the module it starts) find it through
    ``PCSCLITE_CSOCK_NAME``. So test sessions running side by side, and a pcscd of the
    machine, do not meet. Where that is not possible, a running pcscd is used as it is, and
    otherwise ours is started on the default socket.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.run_dir = workdir / "run"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.private = os.geteuid() == 0 and shutil.which("unshare") is not None
        self.system = False
        self.port = free_port_pair()
        conf = workdir / "reader.conf.d"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "vpcd").write_text(
            'FRIENDLYNAME "Virtual PCD"\n'
            f"DEVICENAME   /dev/null:0x{self.port:04X}\n"
            f"LIBPATH      {VPCD_DRIVER}\n"
            f"CHANNELID    0x{self.port:04X}\n")
        self.conf = conf
        self._env_before = os.environ.get("PCSCLITE_CSOCK_NAME")

    @staticmethod
    def _system_port() -> int:
        for path in Path("/etc/reader.conf.d").glob("*"):
            found = re.search(r"DEVICENAME\s+/dev/null:0x([0-9A-Fa-f]+)", path.read_text())
            if found:
                return int(found.group(1), 16)
        return 0x8C7B  # vpcd's default, 35963

    def start(self, timeout: float = 15.0) -> None:
        if self.private:
            try:
                self._launch(["unshare", "--mount", "sh", "-c",
                              'mkdir -p /run/pcscd && mount --bind "$1" /run/pcscd '
                              '&& exec pcscd -f -c "$2"', "sh", str(self.run_dir),
                              str(self.conf)], timeout)
                os.environ["PCSCLITE_CSOCK_NAME"] = str(self.run_dir / "pcscd.comm")
                self._wait_readers(timeout)
                return
            except _LaunchFailed:
                self.private = False  # no namespaces here (a container without the right)
        if not self.system and socket_answers():
            self.system, self.port = True, self._system_port()
        if not self.system:
            self._launch(["pcscd", "-f", "-c", str(self.conf)], timeout, socket=SOCKET)
        try:
            self._wait_readers(timeout)
        except RuntimeError:
            if self.system:
                raise PcscdUnusable("the running pcscd shows no vpcd readers (no vpcd in its "
                                    "/etc/reader.conf.d, or it refuses this user)") from None
            raise

    def _launch(self, argv: list[str], timeout: float, socket: Path | None = None) -> None:
        sock = socket or self.run_dir / "pcscd.comm"
        with open(self.workdir / "pcscd.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise _LaunchFailed((self.workdir / "pcscd.log").read_text()[-300:])
            time.sleep(0.05)

    def _wait_readers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"pcscd exited with {self.proc.returncode}: "
                                   + (self.workdir / "pcscd.log").read_text()[-500:])
            if len([r for r in list_readers() if "Virtual PCD" in r]) >= 2:
                return
            time.sleep(0.1)
        raise RuntimeError("pcscd did not show the two vpcd readers in time")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def close(self) -> None:
        """Stop ours and give the environment back."""
        self.stop()
        if self._env_before is None:
            os.environ.pop("PCSCLITE_CSOCK_NAME", None)
        else:
            os.environ["PCSCLITE_CSOCK_NAME"] = self._env_before

    def readers(self) -> list[str]:
        return sorted(r for r in list_readers() if "Virtual PCD" in r)


class VirtualCard:
    """A contactless card on vpcd reader ``slot`` that answers GET DATA with its UID."""

    def __init__(self, port: int, uid: str, slot: int = 0, atr: bytes = ATR) -> None:
        self.address = ("127.0.0.1", port + slot)
        self.slot = slot
        self.uid = bytes.fromhex(uid)
        self.atr = atr
        self.apdus: list[bytes] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def place(self) -> VirtualCard:
        deadline = time.monotonic() + 10
        while True:  # vpcd may be a moment late to listen again
            try:
                self._sock = socket.create_connection(self.address, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._sock.settimeout(None)
        self._thread = threading.Thread(target=self._serve, args=(self._sock,), daemon=True)
        self._thread.start()
        return self

    def take_away(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        # vpcd only notices a card gone when pcscd next polls it; until then a new card on
        # the same reader would be taken for the old one. Wait for pcscd to see it go.
        wait_reader_empty(f"Virtual PCD 00 {self.slot:02d}")

    def __enter__(self) -> VirtualCard:
        return self.place()

    def __exit__(self, *exc: object) -> None:
        self.take_away()

    def answer(self, apdu: bytes) -> bytes:
        self.apdus.append(apdu)
        if apdu[:4] == b"\xff\xca\x00\x00":
            return self.uid + b"\x90\x00"
        return b"\x6d\x00"  # instruction not supported

    def _serve(self, sock: socket.socket) -> None:
        try:
            while True:
                head = _read_exactly(sock, 2)
                body = _read_exactly(sock, struct.unpack(">H", head)[0])
                if len(body) == 1:
                    if body[0] == 4:
                        reply = self.atr
                    else:
                        continue  # power off / on / reset: nothing to answer
                else:
                    reply = self.answer(body)
                sock.sendall(struct.pack(">H", len(reply)) + reply)
        except OSError:
            return


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionResetError("vpcd closed the connection")
        data += chunk
    return data
