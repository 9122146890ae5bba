"""Issue 9 over the real broker: a parked token is never given a disabled, faulted EVSE.

The sequence of the soak that found it (PlugEvents, ``connection_timeout: 3``,
``ignore_connector_faults: false``, four EVSEs): a token is accepted and parked; EVSE 3
reports ``Disabled``, then raises ``evse_manager/Inoperative``; a car plugs in at EVSE 3.
The module must not answer EVSE 3 with an Accepted ``authorize_response``; the token times
out as usual.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.broker import Mosquitto

from .harness import DEADLINE_S, Rig, ValidatorSpec, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOKEN = "SOAK_CARD_01"
CONNECTION_TIMEOUT = 3


def test_parked_token_is_not_given_a_disabled_faulted_evse(broker: Mosquitto,
                                                           tmp_path: Path) -> None:
    rig = Rig(broker, tmp_path, scripted=True,
              evses=[[(1, "cCCS2")] for _ in range(4)],
              validators=[ValidatorSpec("validator", tokens=[
                  {"id_token": TOKEN, "status": "Accepted"}])],
              config={"selection_algorithm": "PlugEvents",
                      "connection_timeout": CONNECTION_TIMEOUT,
                      "ignore_connector_faults": False})
    try:
        rig.start()
        rig.swipe(TOKEN)  # no connectors named, no car anywhere: parked
        rig.statuses.wait(TOKEN, "Accepted")
        evse3 = rig.evse(3)
        evse3.event("Disabled")
        evse3.fault()
        wait_until(lambda: any(r.get("event") == "EVSE fault raised" and r.get("evse") == 3
                               for r in rig.log_records()),
                   message="the module to see EVSE 3's fault")
        evse3.plug_in()
        wait_until(lambda: any(r.get("event") == "car plugged in" and r.get("evse") == 3
                               for r in rig.log_records()),
                   message="the module to see the car at EVSE 3")
        rig.statuses.wait(TOKEN, "TimedOut", timeout=CONNECTION_TIMEOUT + DEADLINE_S)
        assert rig.commands(3, "authorize_response") == []
        assert not any(r.get("event") == "authorization given" for r in rig.log_records())
        rig.statuses.expect(TOKEN, ["Processing", "Accepted", "TimedOut"])
    finally:
        rig.stop()
