"""The demo's station console: on loopback, with a viewer key (and an admin key to play).

:func:`prepare` writes ``.state/demo-station.yaml``, the station file the demo's module
runs from: the demo's station plus a ``console:`` section on 127.0.0.1 (port 8443, or a
free one if that is taken), and with ``play`` also the buttons that drive the simulators
and an allow list (``.state/demo-allow-list.yaml``, consulted before the validator) that
cards can be registered into from the page. The console's certificate and key file are
kept beside it in ``.state/``, so a browser told once to accept the certificate keeps
accepting it; the demo's keys are made fresh on each run.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PORT = 8443


@dataclass
class DemoConsole:
    station_path: Path
    url: str
    viewer_key: str
    admin_key: str | None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(station_path: Path, state_dir: Path, play: bool) -> DemoConsole:
    from auth_module.console.keys import KeyError_, create_key, keys_path, revoke_key

    state_dir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = yaml.safe_load(station_path.read_text(encoding="utf-8")) or {}
    base = station_path.resolve().parent
    module_id = data.get("module_id", "auth")
    reservations = data.get("reservations") or {}
    store = reservations.get("store") or f".state/{module_id}-reservations.json"
    if not Path(store).expanduser().is_absolute():
        reservations["store"] = str((Path.cwd() / store) if store.startswith(".state/")
                                    else base / store)
    data["reservations"] = reservations
    for kind in ("token_validator", "token_provider"):
        for entry in (data.get("connections") or {}).get(kind) or []:
            if isinstance(entry, dict) and isinstance(entry.get("file"), str):
                if not Path(entry["file"]).expanduser().is_absolute():
                    entry["file"] = str(base / entry["file"])
    port = DEFAULT_PORT if _port_free(DEFAULT_PORT) else _free_port()
    data["console"] = {"listen": f"127.0.0.1:{port}", "demo_controls": play}
    if play:
        allow_list = state_dir / "demo-allow-list.yaml"
        if not allow_list.exists():
            allow_list.write_text("tokens: []\n", encoding="utf-8")
        validators = data["connections"]["token_validator"]
        if not any(isinstance(v, dict) and v.get("plugin") == "allow_list" for v in validators):
            validators.insert(0, {"plugin": "allow_list", "file": str(allow_list.resolve()),
                                  "reload_interval_s": 2})
    copy = (state_dir / "demo-station.yaml").resolve()
    copy.write_text(f"# made by auth-demo from {station_path}: the demo's station with its "
                    f"console\n" + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    keys = keys_path(copy)
    for name in ("demo-viewer", "demo-admin"):
        try:
            revoke_key(keys, name)
        except KeyError_:
            pass
    viewer, _ = create_key(keys, "demo-viewer", "viewer")
    admin = create_key(keys, "demo-admin", "admin")[0] if play else None
    return DemoConsole(copy, f"https://127.0.0.1:{port}/", viewer, admin)


def lines(console: DemoConsole) -> list[str]:
    """What the demo prints first: where the console is and the key(s) to open it with."""
    out = [f"Console: open {console.url} in a browser on this machine (a self-signed "
           f"certificate: tell the browser to accept it for this address).",
           f"Console: viewer key (watch only): {console.viewer_key}"]
    if console.admin_key:
        out.append(f"Console: admin key (add cards, swipe a card and plug a car in from the "
                   f"page): {console.admin_key}")
    return out
