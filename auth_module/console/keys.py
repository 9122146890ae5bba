"""Access keys for the console, after KOSTAL's model: a name, a role, an optional expiry.

A key is ``amk_`` + 43 url-safe characters (256 random bits), shown once when made. Only its
SHA-256 is kept, with the metadata, in one JSON file beside the station file (mode 0600):
with that much entropy a plain hash is as good as a slow one, and it is cheap enough to
check on every request. The file is the single source of truth: the ``keys`` commands change
it, and a running console reloads it when its modification time changes, so a key made,
revoked or expired counts at once, without a restart.

Writers (the commands, and the console noting "last used") take an advisory lock on a
sibling ``.lock`` file and replace the file atomically (temporary file + rename).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

Role = Literal["admin", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "viewer")
PREFIX = "amk_"
LAST_USED_EVERY_S = 60.0  # how often "last used" is written back (not on every request)


class KeyError_(ValueError):
    """A key command that cannot be done (one line for the user)."""


def keys_path(station_path: str | os.PathLike[str]) -> Path:
    """Where a station's keys live: beside its station file, named after it."""
    p = Path(station_path).expanduser().resolve()
    return p.with_name(f"{p.stem}.console-keys.json")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def rfc3339(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z") if when else None


def parse_time(text: str) -> datetime:
    """An RFC 3339 time (``Z`` or an offset; a date alone means its midnight UTC)."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise KeyError_(f"--expires: not an RFC 3339 time: {text!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


@dataclass(frozen=True)
class KeyInfo:
    name: str
    role: Role
    created: str
    expires: str | None
    last_used: str | None
    hash: str

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= parse_time(self.expires)

    def public(self) -> dict[str, Any]:
        """What may be shown: everything but the hash."""
        return {"name": self.name, "role": self.role, "created": self.created,
                "expires": self.expires, "last_used": self.last_used}


def _read(path: Path) -> list[KeyInfo]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise KeyError_(f"{path}: cannot read the key file: {exc}") from None
    out = []
    for item in data.get("keys", []) if isinstance(data, dict) else []:
        try:
            role: Role = "admin" if item["role"] == "admin" else "viewer"
            out.append(KeyInfo(str(item["name"]), role, str(item["created"]),
                               item.get("expires"), item.get("last_used"), str(item["hash"])))
        except (KeyError, TypeError):
            continue  # a damaged entry grants nothing
    return out


def _write(path: Path, keys: list[KeyInfo]) -> None:
    body = json.dumps({"version": 1, "keys": [
        {**k.public(), "hash": k.hash} for k in keys]}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def create_key(path: Path, name: str, role: str, expires: str | None = None) -> tuple[str, KeyInfo]:
    """Make a key; returns (the key itself, to show once, and its record)."""
    name = name.strip()
    if not name or len(name) > 64 or any(c.isspace() and c != " " for c in name):
        raise KeyError_(f"--name: must be 1 to 64 characters (got {name!r})")
    if role not in ROLES:
        raise KeyError_(f"--role: must be admin or viewer (got {role!r})")
    expiry = parse_time(expires) if expires else None
    if expiry is not None and expiry <= now_utc():
        raise KeyError_(f"--expires: {expires} is already past")
    key = PREFIX + secrets.token_urlsafe(32)
    info = KeyInfo(name, "admin" if role == "admin" else "viewer", rfc3339(now_utc()) or "",
                   rfc3339(expiry), None, digest(key))
    with _locked(path):
        keys = _read(path)
        if any(k.name == name for k in keys):
            raise KeyError_(f"a key named {name!r} exists already (revoke it first)")
        _write(path, [*keys, info])
    return key, info


def revoke_key(path: Path, name: str) -> None:
    with _locked(path):
        keys = _read(path)
        if not any(k.name == name for k in keys):
            raise KeyError_(f"no key named {name!r}")
        _write(path, [k for k in keys if k.name != name])


def list_keys(path: Path) -> list[KeyInfo]:
    return _read(path)


class KeyStore:
    """The running console's view of the key file, checked on every request.

    :meth:`check` stats the file (a few µs) and reloads it when it changed; the expiry is
    compared with the time of the request. "Last used" is noted in memory and written
    back at most every ``LAST_USED_EVERY_S`` by :meth:`flush_last_used`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._keys: list[KeyInfo] = []
        self._signature: tuple[int, int, int] | None = None
        self._used: dict[str, str] = {}  # hash -> when

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
            signature: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            signature = None
        if signature != self._signature:
            try:
                self._keys = _read(self.path) if signature is not None else []
            except KeyError_:
                self._keys = []  # unreadable: grant nothing until it is fixed
            self._signature = signature

    def check(self, key: str | None) -> KeyInfo | None:
        """The key's record if ``key`` is a current key, else None (unknown, revoked, expired)."""
        if not key or not key.startswith(PREFIX) or len(key) > 100:
            return None
        wanted = digest(key)
        with self._lock:
            self._refresh()
            found = None
            for info in self._keys:  # every entry compared, in constant time
                if hmac.compare_digest(info.hash, wanted):
                    found = info
            if found is None or found.expired(now_utc()):
                return None
            self._used[found.hash] = rfc3339(now_utc()) or ""
            return found

    def keys(self) -> list[KeyInfo]:
        with self._lock:
            self._refresh()
            return [k if k.hash not in self._used
                    else KeyInfo(k.name, k.role, k.created, k.expires, self._used[k.hash], k.hash)
                    for k in self._keys]

    def flush_last_used(self) -> None:
        with self._lock:
            used, self._used = self._used, {}
        if not used:
            return
        try:
            with _locked(self.path):
                keys = _read(self.path)
                _write(self.path, [
                    KeyInfo(k.name, k.role, k.created, k.expires, used.get(k.hash, k.last_used),
                            k.hash) for k in keys])
        except (OSError, KeyError_):
            pass  # only bookkeeping; the next flush tries again with newer times
