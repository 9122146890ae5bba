"""A simulated EVerest token provider (interface ``auth_token_provider``): an RFID reader.

``TokenProviderSim.swipe(...)`` publishes var ``provided_token`` (ProvidedIdToken). The
console script ``auth-swipe`` does the same once from the command line::

    auth-swipe --config station.yaml TOKEN [--type RFID] [--id-type ISO14443] [--evse 1 ...]

It reads the broker and the first bus ``token_provider`` entry from the station file and
exits 0 once the message is on its way to the broker (2: bad arguments or station file,
1: broker unreachable).
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

import structlog

from auth_module.types import (
    AuthorizationType,
    IdToken,
    IdTokenType,
    ProvidedIdToken,
    to_wire,
)
from auth_module.logs import mask
from simulators.evse_manager import resolve_bus

__all__ = ["TokenProviderSim", "make_token", "main"]


def _id_token(value: Any, default_type: str) -> dict[str, Any]:
    if isinstance(value, IdToken):
        return to_wire(value)
    if isinstance(value, dict):
        return to_wire(IdToken.model_validate({"type": default_type, **value}))
    return to_wire(IdToken(value=str(value), type=IdTokenType(default_type)))


def make_token(
    token: str | dict[str, Any] | IdToken,
    *,
    authorization_type: str = "RFID",
    id_token_type: str = "ISO14443",
    connectors: list[int] | None = None,
    prevalidated: bool | None = None,
    parent_id_token: str | dict[str, Any] | IdToken | None = None,
    certificate: str | None = None,
    request_id: int | None = None,
) -> dict[str, Any]:
    """The ProvidedIdToken wire dict for these fields (validated by the pydantic model)."""
    data: dict[str, Any] = {
        "id_token": _id_token(token, id_token_type),
        "authorization_type": AuthorizationType(authorization_type).value,
    }
    if connectors is not None:
        data["connectors"] = [int(c) for c in connectors]
    if prevalidated is not None:
        data["prevalidated"] = bool(prevalidated)
    if parent_id_token is not None:
        data["parent_id_token"] = _id_token(parent_id_token, IdTokenType.ISO14443.value)
    if certificate is not None:
        data["certificate"] = certificate
    if request_id is not None:
        data["request_id"] = int(request_id)
    return to_wire(ProvidedIdToken.model_validate(data))


class TokenProviderSim:
    """Publishes ``provided_token`` as module ``module_id``, impl ``impl_id``.

    ``bus`` is a ``BusClient`` with that module id (caller starts/stops it) or a factory
    ``f(module_id) -> BusClient`` (owned: started by ``start()`` or the first ``swipe``).
    """

    def __init__(self, bus: Any, module_id: str = "rfid_reader", impl_id: str = "main", *,
                 logger: Any = None) -> None:
        self.module_id = module_id
        self.impl_id = impl_id
        self.bus, self._owns_bus = resolve_bus(bus, module_id)
        self.log = (logger or structlog.get_logger("sim.token_provider")).bind(module=module_id)
        self._lock = threading.Lock()
        self._started = False
        #: every token published, in order (wire dicts)
        self.sent: list[dict[str, Any]] = []

    def start(self, wait_connected: float | None = 5.0) -> TokenProviderSim:
        with self._lock:
            if self._started:
                return self
            self._started = True
        if hasattr(self.bus, "provide_command"):  # the console's demo buttons press this
            self.bus.provide_command("sim", "swipe", lambda a: bool(
                self.swipe(str((a or {}).get("id_token", "")))))
        if self._owns_bus:
            self.bus.start()
            if wait_connected and not self.bus.wait_connected(timeout=wait_connected):
                self.log.warning(
                    f"token provider {self.module_id}: not connected to the broker yet")
        self.bus.publish_ready()
        return self

    def stop(self) -> None:
        if self._owns_bus:
            self.bus.stop()

    def __enter__(self) -> TokenProviderSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def swipe(
        self,
        token: str | dict[str, Any] | IdToken,
        *,
        authorization_type: str = "RFID",
        id_token_type: str = "ISO14443",
        connectors: list[int] | None = None,
        prevalidated: bool | None = None,
        parent_id_token: str | dict[str, Any] | IdToken | None = None,
        certificate: str | None = None,
        request_id: int | None = None,
    ) -> dict[str, Any]:
        """Publish one ``provided_token``; returns the published value."""
        if self._owns_bus and not self._started:
            self.start()
        msg = make_token(
            token, authorization_type=authorization_type, id_token_type=id_token_type,
            connectors=connectors, prevalidated=prevalidated, parent_id_token=parent_id_token,
            certificate=certificate, request_id=request_id,
        )
        with self._lock:
            self.sent.append(msg)
        self.log.info(f"token provider {self.module_id}: swipe "
                      f"{mask(msg['id_token']['value'])} ({msg['authorization_type']})")
        self.bus.publish_var(self.impl_id, "provided_token", msg)
        return msg


# ---------------------------------------------------------------------- auth-swipe


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="auth-swipe",
        description="Publish one token as the station's (first bus) token provider.",
    )
    p.add_argument("--config", required=True, metavar="STATION.yaml",
                   help="the station file (mqtt settings and connections.token_provider)")
    p.add_argument("token", metavar="TOKEN", help="the id token value")
    p.add_argument("--type", dest="authorization_type", default="RFID",
                   choices=[t.value for t in AuthorizationType],
                   help="authorization type (default RFID)")
    p.add_argument("--id-type", dest="id_token_type", default="ISO14443",
                   choices=[t.value for t in IdTokenType], help="id token type (default ISO14443)")
    p.add_argument("--evse", dest="connectors", type=int, action="append", metavar="N",
                   help="restrict to this evse id (repeatable)")
    p.add_argument("--parent", dest="parent_id_token", default=None, help="parent id token")
    p.add_argument("--prevalidated", action="store_true", default=None,
                   help="mark the token as prevalidated")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds to wait for the broker (default 5)")
    return p


def main(argv: list[str] | None = None) -> int:
    from simulators.launcher import StationError, bus_factory, configure_cli_logging, read_station

    args = _parser().parse_args(argv)
    configure_cli_logging("warning")
    try:
        station = read_station(args.config)
    except StationError as exc:
        print(f"auth-swipe: error: {exc}", file=sys.stderr)
        return 2
    if not station.token_providers:
        print(f"auth-swipe: error: {args.config}: connections.token_provider: no bus entry "
              "(module_id + implementation_id)", file=sys.stderr)
        return 2
    module_id, impl_id = station.token_providers[0]
    try:
        msg = make_token(args.token, authorization_type=args.authorization_type,
                         id_token_type=args.id_token_type, connectors=args.connectors,
                         prevalidated=args.prevalidated, parent_id_token=args.parent_id_token)
    except ValueError as exc:
        first = str(exc).splitlines()
        print(f"auth-swipe: error: bad token: {first[-1].strip() if first else exc}",
              file=sys.stderr)
        return 2
    bus = bus_factory(station.host, station.port, station.prefix)(module_id)
    bus.start()
    try:
        if not bus.wait_connected(timeout=args.timeout):
            print(f"auth-swipe: error: cannot reach the MQTT broker at "
                  f"{station.host}:{station.port}", file=sys.stderr)
            return 1
        bus.publish_var(impl_id, "provided_token", msg)
        flush = getattr(bus, "flush", None)
        if callable(flush):
            flush(timeout=args.timeout)
    finally:
        bus.stop()
    print(f"published {mask(args.token)} as {module_id}/{impl_id} "
          f"({args.authorization_type})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
