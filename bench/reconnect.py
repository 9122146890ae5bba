"""How long after a broker comes back the module serves tokens again (CONTRACT §2.1: 0.5 s).

    python -m bench.reconnect [--outages 1,10] [--repeat 3]

A real mosquitto, the module as its own process (``auth-module --config``), simulators for
an EVSE manager and a validator. For each outage: stop the broker, wait, start it again;
from the moment its port accepts connections, a probe client connects at once and
publishes a new token every 10 ms on the token provider's topic. The figure is the time
from "port accepts" to the module's ``Processing`` status for one of those tokens: the
module is connected, subscribed again, and handling tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from simulators.broker import Mosquitto

STATUS_TOPIC = "everest/modules/auth/impl/main/var/token_validation_status"
TOKEN_TOPIC = "everest/modules/rfid_reader/impl/main/var/provided_token"


def _probe(host: str, port: int, t_up: float, deadline_s: float = 30.0) -> float:
    """Seconds from ``t_up`` to the first Processing status of a probe token."""
    seen = threading.Event()
    prefix = f"probe-{int(t_up * 1000)}-"

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        value = json.loads(msg.payload)["data"]["data"]
        if value["token"]["id_token"]["value"].startswith(prefix) and value["status"] == "Processing":
            seen.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, clean_session=True)
    client.on_message = on_message
    end = time.monotonic() + deadline_s
    while True:
        try:
            client.connect(host, port)
            break
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.005)
    client.subscribe(STATUS_TOPIC, qos=0)
    client.loop_start()
    try:
        n = 0
        while not seen.is_set():
            if time.monotonic() > end:
                raise TimeoutError("the module did not serve a token within the deadline")
            n += 1
            token = {"id_token": {"value": f"{prefix}{n}", "type": "Local"},
                     "authorization_type": "RFID"}
            client.publish(TOKEN_TOPIC, json.dumps({"msg_type": "Var", "data": {"data": token}}))
            seen.wait(0.01)
        return time.monotonic() - t_up
    finally:
        client.loop_stop()
        client.disconnect()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reconnect", description=__doc__.split("\n\n")[0])
    p.add_argument("--outages", default="1,10", help="broker down times in seconds (default 1,10)")
    p.add_argument("--repeat", type=int, default=3, help="runs per outage (default 3)")
    args = p.parse_args(argv)
    outages = [float(x) for x in args.outages.split(",")]

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.integration.harness import Rig, ValidatorSpec

    results: dict[float, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-reconnect-") as tmp, Mosquitto() as broker:
        rig = Rig(broker, Path(tmp), scripted=True, evses=[[(1, "cType2")]],
                  validators=[ValidatorSpec("validator")])
        rig.extra = {"logging": {"level": "warning", "format": "json", "show_tokens": False}}
        try:
            rig.start()
            for outage in outages:
                for _ in range(args.repeat):
                    broker.stop()
                    time.sleep(outage)
                    broker.start()
                    t_up = time.monotonic()
                    results.setdefault(outage, []).append(_probe(broker.host, broker.port, t_up))
                    time.sleep(1.0)  # let the simulators settle before the next outage
        finally:
            rig.stop()
    for outage, values in results.items():
        print(f"outage {outage:g} s: back in {statistics.median(values):.3f} s median, "
              f"{max(values):.3f} s max ({', '.join(f'{v:.3f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
