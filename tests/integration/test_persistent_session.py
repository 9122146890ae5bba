"""Back quickly, lose nothing: the module's own link is cut while the broker stays up.

A TCP relay between the module and mosquitto cuts the module's connection (the simulators
stay connected directly). A token published meanwhile is queued by the broker for the
module's persistent session and handled after the reconnect; without the option it is lost
(which is why the option exists, and what this test shows it changes).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.broker import Mosquitto
from tests.integration.harness import Rig, ValidatorSpec, wait_until
from tests.integration.secure_broker import TcpRelay

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

WHILE_CUT = "CARD-WHILE-CUT"


@pytest.fixture
def relayed(broker: Mosquitto) -> Iterator[TcpRelay]:
    relay = TcpRelay(broker.host, broker.port)
    yield relay
    relay.close()


def lost_logged(rig: Rig) -> bool:
    return any("lost" in str(r.get("event", "")) for r in rig.log_records())


@pytest.mark.parametrize("persistent", [True, False])
def test_token_published_while_the_module_is_cut_off(broker: Mosquitto, relayed: TcpRelay,
                                                     tmp_path: Path, persistent: bool) -> None:
    rig = Rig(broker, tmp_path, scripted=True, evses=[[(1, "cType2")]],
              validators=[ValidatorSpec("validator", tokens=[{"id_token": WHILE_CUT}])],
              config={"selection_algorithm": "FindFirst", "connection_timeout": 30},
              mqtt={"port": relayed.port, "persistent_session": persistent})
    try:
        rig.start()
        connections = relayed.connections

        relayed.cut()  # the broker stays up; only the module's link is gone
        wait_until(lambda: lost_logged(rig), 10.0, "the module noticing the cut")
        rig.swipe(WHILE_CUT, connectors=[1])  # published at QoS 1 by the reader
        time.sleep(0.5)
        assert rig.statuses.of(WHILE_CUT) == []
        relayed.resume()
        wait_until(lambda: relayed.connections > connections, 10.0, "the module reconnecting")

        if persistent:
            rig.statuses.wait(WHILE_CUT, "Processing", timeout=10.0)
            rig.statuses.wait(WHILE_CUT, "Accepted", timeout=10.0)
            records = rig.log_records()
            assert any(r.get("persistent_session") == "auth-everest-auth" for r in records)
        else:
            wait_until(lambda: rig.ready_count >= 2, 10.0, "ready again after the reconnect")
            time.sleep(1.0)
            assert rig.statuses.of(WHILE_CUT) == []  # lost: what the option is for
        # Either way the module serves new tokens after the reconnect.
        rig.swipe("CARD-AFTER", connectors=[1])
        rig.statuses.wait("CARD-AFTER", "Processing", timeout=10.0)
        assert rig.proc is not None and rig.proc.poll() is None
    finally:
        rig.stop()
