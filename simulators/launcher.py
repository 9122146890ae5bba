"""Run a whole simulated charging station in one process: ``auth-sim``.

::

    auth-sim --config station.yaml [--tokens config/tokens.yaml] [--pace SECONDS]

For the station file (CONTRACT.md §2) it starts an :class:`EvseManagerSim` for every
``connections.evse_manager`` entry, in list order, with evse id = position + 1, a
:class:`ValidatorSim` for every bus ``token_validator`` entry (in-process plugins are the
auth module's business and are skipped), and a :class:`TokenProviderSim` for the first bus
``token_provider`` entry. It runs until SIGINT or SIGTERM and exits 0; a bad station or
tokens file exits 2 with one line on stderr.

``--pace S`` delays ``ChargingStarted`` by S seconds after ``TransactionStarted`` (for the
demo, so a human can follow); the default 0 publishes it at once.

Importable: :func:`start_station` returns a running :class:`SimulatedStation`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from auth_module.logs import configure_logging
from auth_module.station import BusConnection, PluginConnection, StationError, load_station
from simulators.evse_manager import EvseManagerSim
from simulators.token_provider import TokenProviderSim
from simulators.validator import TokensFileError, ValidatorSim

__all__ = [
    "StationError",
    "StationInfo",
    "SimulatedStation",
    "bus_factory",
    "read_station",
    "start_station",
    "main",
]

log = structlog.get_logger("sim.launcher")


@dataclass
class StationInfo:
    """What the simulators need from a station file (:class:`StationError` is the module's)."""

    path: Path
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "everest/"
    module_id: str = "auth"
    token_providers: list[tuple[str, str]] = field(default_factory=list)
    token_validators: list[tuple[str, str]] = field(default_factory=list)
    evse_managers: list[tuple[str, str]] = field(default_factory=list)


def _bus(entries: list[BusConnection | PluginConnection]) -> list[tuple[str, str]]:
    """The bus entries (module id, implementation id); in-process plugins are skipped."""
    return [(e.module_id, e.implementation_id) for e in entries if isinstance(e, BusConnection)]


def read_station(path: str | os.PathLike[str]) -> StationInfo:
    """The broker and bus connections of a station file, read by the module's own reader
    (``auth_module.station.load_station``): the same checks, the same one-line errors."""
    station = load_station(Path(path))
    return StationInfo(
        path=Path(path), host=station.mqtt.host, port=station.mqtt.port,
        prefix=station.mqtt.prefix, module_id=station.module_id,
        token_providers=_bus(station.token_providers),
        token_validators=_bus(station.token_validators),
        evse_managers=_bus(station.evse_managers),
    )


def bus_factory(host: str, port: int, prefix: str, **kwargs: Any) -> Callable[[str], Any]:
    """``f(module_id) -> BusClient`` for this broker."""
    from auth_module.bus import BusClient

    def make(module_id: str) -> Any:
        return BusClient(module_id=module_id, host=host, port=port, prefix=prefix, **kwargs)

    return make


def _default_tokens_file(station_path: Path) -> Path | None:
    for cand in (station_path.parent / "tokens.yaml", Path("config") / "tokens.yaml"):
        if cand.is_file():
            return cand
    return None


class SimulatedStation:
    """The simulators of one station, running. ``stop()`` stops them all."""

    def __init__(self, info: StationInfo, evses: list[EvseManagerSim],
                 validators: list[ValidatorSim], provider: TokenProviderSim | None) -> None:
        self.info = info
        self.evses = evses
        self.validators = validators
        self.provider = provider
        self._stopped = False

    def evse(self, evse_id: int) -> EvseManagerSim:
        return self.evses[evse_id - 1]

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for sim in [*self.evses, *self.validators, *([self.provider] if self.provider else [])]:
            try:
                sim.stop()
            except Exception as exc:  # keep stopping the others
                log.warning(f"stopping {sim.module_id} failed: {exc}")

    def __enter__(self) -> SimulatedStation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_station(
    station_path: str | os.PathLike[str],
    tokens_file: str | os.PathLike[str] | None = None,
    *,
    pace: float = 0.0,
    wait_connected: float | None = 5.0,
    factory: Callable[[str], Any] | None = None,
) -> SimulatedStation:
    """Start the simulators for ``station_path``; returns them running.

    ``tokens_file`` defaults to ``tokens.yaml`` beside the station file, else
    ``config/tokens.yaml``; with neither the validators know no token.
    Raises :class:`StationError` / :class:`TokensFileError` on a bad file.
    """
    info = read_station(station_path)
    make = factory or bus_factory(info.host, info.port, info.prefix)
    tokens = Path(tokens_file) if tokens_file is not None else _default_tokens_file(info.path)
    evses = [
        EvseManagerSim(make, module_id=mid, impl_id=iid, evse_id=n + 1, pace_s=pace)
        for n, (mid, iid) in enumerate(info.evse_managers)
    ]
    validators = [ValidatorSim(make, module_id=mid, impl_id=iid, tokens_file=tokens)
                  for mid, iid in info.token_validators]
    provider = (TokenProviderSim(make, module_id=info.token_providers[0][0],
                                 impl_id=info.token_providers[0][1])
                if info.token_providers else None)
    station = SimulatedStation(info, evses, validators, provider)
    try:
        # start them side by side: each waits for its own connection
        sims: list[Any] = [*evses, *validators, *([provider] if provider else [])]
        threads = [threading.Thread(target=s.start, kwargs={"wait_connected": wait_connected},
                                    daemon=True) for s in sims]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except BaseException:
        station.stop()
        raise
    log.info(f"simulated station up: {len(evses)} evse(s), {len(validators)} validator(s), "
             f"provider {provider.module_id if provider else 'none'}, broker "
             f"{info.host}:{info.port} prefix {info.prefix!r}")
    return station


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="auth-sim",
        description="Run simulated evse managers, validators and an RFID reader for a station.",
    )
    p.add_argument("--config", required=True, metavar="STATION.yaml", help="the station file")
    p.add_argument("--tokens", default=None, metavar="TOKENS.yaml",
                   help="allow list for the simulated validators (default: tokens.yaml beside "
                        "the station file, else config/tokens.yaml)")
    p.add_argument("--pace", type=float, default=0.0, metavar="SECONDS",
                   help="delay between TransactionStarted and ChargingStarted (default 0)")
    return p


def configure_cli_logging(level: str = "info") -> None:
    """The project's log setup (console lines on stderr)."""
    try:
        configure_logging(level=level, fmt="console")
    except Exception:  # never let log setup stop a simulator
        return


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_cli_logging("info")
    if args.pace < 0:
        print("auth-sim: error: --pace: must be >= 0", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        station = start_station(args.config, args.tokens, pace=args.pace)
    except (StationError, TokensFileError) as exc:
        print(f"auth-sim: error: {exc}", file=sys.stderr)
        return 2
    try:
        while not stop.wait(0.5):
            pass
    finally:
        log.info("simulated station stopping")
        station.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
