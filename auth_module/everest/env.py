"""The environment EVerest's manager gives a Python module (EVEREST-MANAGER.md §a).

The manager runs ``python3 module.py`` with no arguments: the module id, the MQTT prefix
and the broker come only from ``EV_*`` variables (manager.cpp:105-122). Reading them is the
first thing ``--everest`` does, so a missing one is the one error that ends the process:
without ``EV_MODULE`` we are not under a manager and have nobody to be ready for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["EnvError", "ManagerEnv"]

DEFAULT_PREFIX = "everest/"
DEFAULT_HOST = "localhost"  # the manager's default too (runtime.cpp:338-368)
DEFAULT_PORT = 1883


class EnvError(Exception):
    """The environment is not one EVerest's manager makes; ``str()`` is one line."""


@dataclass(frozen=True)
class ManagerEnv:
    """Where the manager's bus is and who we are on it."""

    module_id: str
    prefix: str
    socket_path: str | None
    host: str
    port: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ManagerEnv:
        module_id = environ.get("EV_MODULE", "").strip()
        if not module_id:
            raise EnvError("EV_MODULE is not set: --everest is for EVerest's manager, which sets "
                           "it (to debug, start the manager with --standalone ID and export "
                           "EV_MODULE=ID yourself)")
        if any(c in module_id for c in "/+#"):
            raise EnvError(f"EV_MODULE={module_id!r} cannot be a module id (no '/', '+', '#')")
        # The manager always passes the prefix with its trailing '/' (runtime.cpp:370-379);
        # used as given, as EVerest's own modules do.
        prefix = environ.get("EV_MQTT_EVEREST_PREFIX", DEFAULT_PREFIX)
        if any(c in prefix for c in "+#"):
            raise EnvError(f"EV_MQTT_EVEREST_PREFIX={prefix!r} cannot be a topic prefix")
        socket_path = environ.get("EV_MQTT_BROKER_SOCKET_PATH") or None
        host = environ.get("EV_MQTT_BROKER_HOST") or DEFAULT_HOST
        port_text = environ.get("EV_MQTT_BROKER_PORT") or str(DEFAULT_PORT)
        try:
            port = int(port_text)
        except ValueError:
            port = 0
        if not 1 <= port <= 65535 and socket_path is None:
            raise EnvError(f"EV_MQTT_BROKER_PORT={port_text!r} is not a port number (1-65535)")
        return cls(module_id=module_id, prefix=prefix, socket_path=socket_path, host=host,
                   port=port if 1 <= port <= 65535 else DEFAULT_PORT)

    @property
    def broker(self) -> str:
        """The broker for log lines."""
        return f"unix:{self.socket_path}" if self.socket_path else f"{self.host}:{self.port}"
