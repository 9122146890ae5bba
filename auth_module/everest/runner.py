"""``auth-module --everest``: the module as EVerest's manager runs it.

Environment → configuration request → station → module → ModuleReady → GlobalReady →
``get_evse`` and tokens. The manager takes any exit of a module as a crash and stops the
whole charger, so after the environment is read nothing here ends the process: a
configuration that cannot work is one error line and the module stays alive and not
ready until SIGTERM, which ends it with status 0.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import structlog

from ..logs import configure_logging
from ..station import Station, StationError
from ..text import exception_line
from .env import EnvError, ManagerEnv
from .handshake import ConfigRequester
from .link import ManagerLink
from .settings import (
    ManagerConfigError,
    ignored_parameters,
    module_config_of,
    station_from_manager,
    translate_error,
)

__all__ = ["run_everest"]

log = structlog.get_logger("everest")

_NOT_READY = "staying alive and not ready until EVerest's manager stops the charger"


def run_everest(stop: threading.Event, module_dir: str | None = None) -> int:
    """Serve until ``stop`` is set; 2 only when not started by a manager at all."""
    configure_logging("info", "auto", False, cache=False)  # until the config says otherwise
    try:
        env = ManagerEnv.from_environ(os.environ)
    except EnvError as exc:
        print(f"auth-module: {exc}", file=sys.stderr)
        return 2
    base_dir = Path(module_dir).resolve() if module_dir else Path.cwd()
    try:
        _serve(env, base_dir, stop)
    except Exception as exc:  # last resort: one line, and still no exit of our own
        log.error(f"unexpected error; {_NOT_READY}", error=exception_line(exc))
    stop.wait()
    return 0


def _serve(env: ManagerEnv, base_dir: Path, stop: threading.Event) -> None:
    from ..module import AuthModule, StartupError  # heavy imports after the env check

    answer = ConfigRequester(env).fetch(stop)
    if answer is None:
        if not stop.is_set():
            log.error(f"no configuration from EVerest's manager after 2 requests; {_NOT_READY}",
                      module_id=env.module_id, broker=env.broker, prefix=env.prefix)
        return
    try:
        module_config = module_config_of(answer, env.module_id)
        station = station_from_manager(module_config, env, base_dir)
    except (ManagerConfigError, StationError) as exc:
        log.error(f"configuration unusable: {exc}; {_NOT_READY}")
        return
    _configure_logging(station)
    unused = ignored_parameters(module_config)
    if unused:
        log.warning("config keys this version does not know are ignored", keys=unused)
    if "kvs" in module_config["connections"]:
        log.info("kvs is connected but not used: reservations are kept in a file",
                 file=str(station.reservation_store))
    try:
        module = AuthModule(station, manager=ManagerLink(env.prefix))
    except StationError as exc:  # a plugin's name or options
        log.error(f"configuration unusable: {translate_error(exc, module_config, env)}; "
                  f"{_NOT_READY}")
        return
    try:
        module.run(stop)
    except StartupError as exc:
        log.error(f"cannot start: {exc}; {_NOT_READY}")


def _configure_logging(station: Station) -> None:
    settings = station.logging
    configure_logging(settings.level, settings.format, settings.show_tokens, cache=True)
