"""Reservations survive the module being killed (SIGKILL) and started again.

* Reservations placed over MQTT (EVSE-specific and station-wide, one expiring while the
  module is down, one expiring after it is back) come back from the store named in the
  station file: ``exists_reservation`` answers as before, the EVSE managers are told again,
  the one that expired while the module was down is reported ``Expired`` at start, timers
  run again, and nothing is doubled.
* SIGKILL at a random moment of a burst of ``reserve_now`` / ``cancel_reservation``, twenty
  times over: after each restart the reservations are exactly those the acknowledged
  commands leave (the one command in flight at the kill may go either way).
* A corrupt store: the module starts empty, says so in one log line, keeps the bad file.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from simulators.broker import Mosquitto

from .harness import Rig, ValidatorSpec, wait_until
from .test_reservations import (
    FOR_TOKEN,
    NOT_RESERVED,
    Station,
    rfc3339,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

A, O = "Accepted", "Occupied"


@pytest.fixture
def station(broker: Mosquitto, tmp_path: Path) -> Iterator[Callable[..., Station]]:
    rigs: list[Rig] = []

    def start(evses: list[list[tuple[int, str]]], start_module: bool = True) -> Station:
        rig = Rig(broker, tmp_path, scripted=True, evses=evses,
                  validators=[ValidatorSpec("validator", unknown_status="Accepted")])
        rigs.append(rig)
        st = Station(rig)
        rig.write_station()
        rig.start_simulators()
        if start_module:
            rig.start_module()
        return st

    try:
        yield start
    finally:
        for rig in rigs:
            rig.stop_module(signal.SIGKILL)
            rig.stop()
            print(f"--- module log ({rig.log_path}) ---\n{rig.module_log()[-6000:]}")


def reserve_commands(st: Station, since: int) -> list[tuple[int, int]]:
    return [(e, a["reservation_id"]) for e, c, a in st.sent_snapshot()[since:] if c == "reserve"]


# --- reservations placed, module killed, started again -------------------------------------


def test_reservations_survive_sigkill(station: Callable[..., Station]) -> None:
    """EVSEs 1, 2, 4, 5, 6 have a cCCS2 connector, EVSE 3 the only sType2 one."""
    st = station([[(1, "cCCS2")], [(1, "cCCS2")], [(1, "sType2")],
                  [(1, "cCCS2")], [(1, "cCCS2")], [(1, "cCCS2")]])
    rig = st.rig
    t0 = time.monotonic()
    expires_down, expires_later = 2.5, 5.5  # seconds after t0
    assert st.reserve(101, "TOKEN_A", 1) == A
    assert st.reserve(102, "TOKEN_B", 2, expiry=rfc3339(timedelta(seconds=expires_down))) == A
    assert st.reserve(103, "TOKEN_E", 4, expiry=rfc3339(timedelta(seconds=expires_later))) == A
    assert st.reserve(201, "TOKEN_C", None, "sType2") == A  # holds EVSE 3, the only sType2
    assert st.reserve(202, "TOKEN_D", None, "cCCS2", parent="GROUP") == A
    st.barrier()
    assert sorted(reserve_commands(st, 0)) == [(1, 101), (2, 102), (3, -1), (4, 103)]
    assert st.exists("TOKEN_B", 2) == FOR_TOKEN  # not expired before the kill
    assert time.monotonic() - t0 < expires_down - 0.5, "placing the reservations took too long"

    assert rig.stop_module(signal.SIGKILL) == -signal.SIGKILL
    sent_mark, updates_mark = st.mark(), len(st.updates())
    time.sleep(max(0.0, t0 + expires_down + 0.3 - time.monotonic()))
    rig.start_module()

    # The one that expired while the module was down: Expired on start, its EVSE released.
    wait_until(lambda: (102, "Expired") in st.updates()[updates_mark:], message="102 Expired")
    wait_until(lambda: st.sent_to(2, "cancel_reservation", sent_mark) == [{}],
               message="cancel_reservation to EVSE 2")
    assert st.exists("TOKEN_B", 2) == NOT_RESERVED
    assert st.exists("TOKEN_B") == NOT_RESERVED

    # The others answer as before.
    assert st.exists("TOKEN_A", 1) == FOR_TOKEN
    if time.monotonic() < t0 + expires_later - 0.3:
        assert st.exists("TOKEN_E", 4) == FOR_TOKEN
    assert st.exists("TOKEN_C") == FOR_TOKEN
    assert st.exists("TOKEN_D") == FOR_TOKEN
    assert st.exists("SOMEONE", group="group") == FOR_TOKEN  # 202 via its parent token
    assert st.exists("SOMEONE", 1) == "ReservedForOtherToken"

    # The station-wide sType2 reservation holds EVSE 3 again, once.
    st.barrier()
    assert reserve_commands(st, sent_mark).count((3, -1)) == 1
    # Nothing doubled: no EVSE was asked to reserve the same id twice after the restart.
    counts = Counter(reserve_commands(st, sent_mark))
    assert all(n == 1 for n in counts.values()), counts

    # Still working: a new id is placed, a held EVSE stays held.
    assert st.reserve(301, "TOKEN_F", 5) == A
    assert st.reserve(302, "TOKEN_G", 1) == O  # EVSE 1 still has 101
    assert st.exists("TOKEN_F", 5) == FOR_TOKEN

    # The timer of a reloaded reservation runs again: 103 expires at its time.
    wait_until(lambda: (103, "Expired") in st.updates()[updates_mark:],
               timeout=max(1.0, t0 + expires_later + 3.0 - time.monotonic()),
               message="103 Expired after the restart")
    assert time.monotonic() > t0 + expires_later - 0.2
    wait_until(lambda: st.sent_to(4, "cancel_reservation", sent_mark) == [{}],
               message="cancel_reservation to EVSE 4")
    assert st.exists("TOKEN_E", 4) == NOT_RESERVED
    st.barrier()
    after_restart = st.updates()[updates_mark:]
    assert after_restart[0] == (102, "Expired")  # reported on start, before anything else
    assert sorted(after_restart) == [(102, "Expired"), (103, "Expired"), (301, "Placed")]
    assert st.exists("TOKEN_A", 1) == FOR_TOKEN

    # The store holds each surviving reservation once.
    stored = json.loads((rig.tmp_path / "reservations.json").read_text())["reservations"]
    ids = [entry["reservation"]["reservation_id"] for entry in stored]
    assert sorted(ids) == [101, 201, 202, 301]


def test_evse_managers_are_told_again_after_restart(station: Callable[..., Station]) -> None:
    """Each reloaded EVSE-specific reservation is passed to its EVSE manager again, once."""
    st = station([[(1, "cCCS2")], [(1, "cCCS2")], [(1, "cCCS2")]])
    assert st.reserve(11, "TOKEN_A", 1) == A
    assert st.reserve(12, "TOKEN_B", 2) == A
    assert st.rig.stop_module(signal.SIGKILL) == -signal.SIGKILL
    mark = st.mark()
    st.rig.start_module()
    assert st.exists("TOKEN_A", 1) == FOR_TOKEN
    wait_until(lambda: sorted(reserve_commands(st, mark)) == [(1, 11), (2, 12)], timeout=2.0,
               message="reserve 11 to EVSE 1 and reserve 12 to EVSE 2 after the restart")
    st.barrier()
    assert sorted(reserve_commands(st, mark)) == [(1, 11), (2, 12)]


# --- SIGKILL in the middle of a burst of commands --------------------------------------------

ABSENT, STATION_WIDE = -1, 0
IDS = range(1, 9)
EVSES = 4


def _command(rng: random.Random) -> tuple[str, int, int]:
    """(command, reservation id, where): where = STATION_WIDE or an EVSE id."""
    rid = rng.choice(IDS)
    if rng.random() < 0.3:
        return "cancel_reservation", rid, ABSENT
    return "reserve_now", rid, rng.choice([STATION_WIDE, *range(1, EVSES + 1)])


def _args(cmd: str, rid: int, where: int) -> dict[str, Any]:
    if cmd == "cancel_reservation":
        return {"reservation_id": rid}
    request: dict[str, Any] = {"reservation_id": rid, "id_token": f"T{rid}",
                               "expiry_time": rfc3339(timedelta(hours=1))}
    if where != STATION_WIDE:
        request["evse_id"] = where
    return {"request": request}


class Burst(threading.Thread):
    """Issues commands one after the other, each when the previous one was answered."""

    def __init__(self, rig: Rig, commands: list[tuple[str, int, int]]) -> None:
        super().__init__(daemon=True)
        self.rig, self.commands = rig, commands
        self.killed = threading.Event()
        self.log: list[dict[str, Any]] = []  # {cmd, rid, where, acked, result}

    def run(self) -> None:
        for cmd, rid, where in self.commands:
            if self.killed.is_set():
                return
            entry: dict[str, Any] = {"cmd": cmd, "rid": rid, "where": where, "acked": False}
            self.log.append(entry)
            done, box = threading.Event(), {}

            def on_result(outcome: Any, box: dict[str, Any] = box, done: threading.Event = done
                          ) -> None:
                box["outcome"] = outcome
                done.set()

            self.rig.observer.call_async(self.rig.module_id, "reservation", cmd,
                                         _args(cmd, rid, where), timeout=10.0,
                                         on_result=on_result)
            while not done.wait(0.002):
                if self.killed.is_set():
                    return  # in flight at the kill
            if box["outcome"].error is not None:
                return  # no answer we can count on: treat it as in flight, and stop
            entry["acked"], entry["result"] = True, box["outcome"].retval


def _observe(st: Station) -> dict[int, int]:
    """Where each reservation id is now, from exists_reservation (its token is T<id>)."""
    found: dict[int, int] = {}
    for rid in IDS:
        places = [where for where in (STATION_WIDE, *range(1, EVSES + 1))
                  if st.exists(f"T{rid}", where or None) == FOR_TOKEN]
        assert len(places) <= 1, f"reservation {rid} is in several places: {places}"
        found[rid] = places[0] if places else ABSENT
    return found


def test_sigkill_during_a_burst_of_commands(station: Callable[..., Station]) -> None:
    """20 x: a burst of reserve_now / cancel_reservation, SIGKILL at a random moment,
    restart; the reservations after the restart are what the acknowledged commands say."""
    st = station([[(1, "cCCS2")] for _ in range(EVSES)])
    rig = st.rig
    seed = int(time.time() * 1000) % 100_000
    rng = random.Random(seed)
    known = {rid: ABSENT for rid in IDS}
    acked_total = kills_mid_command = 0
    for iteration in range(20):
        burst = Burst(rig, [_command(rng) for _ in range(40)])
        burst.start()
        time.sleep(rng.uniform(0.0, 0.15))
        assert rig.stop_module(signal.SIGKILL) == -signal.SIGKILL
        burst.killed.set()
        burst.join(5)
        assert not burst.is_alive()

        context = f"seed {seed}, iteration {iteration}, commands {burst.log}, before {known}"
        state = dict(known)
        in_flight = None
        for n, entry in enumerate(burst.log):
            rid = entry["rid"]
            if not entry["acked"]:
                assert n == len(burst.log) - 1, context
                in_flight = entry
                continue
            acked_total += 1
            if entry["cmd"] == "cancel_reservation":
                # Nothing was lost so far: cancel finds exactly what the model holds.
                assert entry["result"] is (state[rid] != ABSENT), context
                state[rid] = ABSENT
            else:
                state[rid] = entry["where"] if entry["result"] == A else ABSENT
        allowed = {rid: {where} for rid, where in state.items()}
        if in_flight is not None:
            kills_mid_command += 1
            allowed[in_flight["rid"]] |= {ABSENT}
            if in_flight["cmd"] == "reserve_now":
                allowed[in_flight["rid"]] |= {in_flight["where"]}

        rig.start_module()
        found = _observe(st)
        wrong = {rid: (found[rid], allowed[rid]) for rid in IDS if found[rid] not in allowed[rid]}
        assert not wrong, f"(found, allowed) per id: {wrong}; {context}"
        known = found
    assert acked_total > 0
    print(f"seed {seed}: {acked_total} acknowledged commands, "
          f"{kills_mid_command} kills with a command in flight")


# --- a corrupt store -------------------------------------------------------------------------


@pytest.mark.parametrize("garbage", [
    b'{"version": 1, "reservations": [{"evse_id": 1, "reserv\x00\xff garbage',  # not even text
    b'{"version": 1, "reservations": [{"evse_id": 1, "reservation": {"reservation_id": 3',
], ids=["binary", "truncated-json"])
def test_corrupt_store_starts_empty_and_keeps_the_file(station: Callable[..., Station],
                                                       garbage: bytes) -> None:
    """Garbage in the store file: one log line, an empty start, the file kept aside."""
    st = station([[(1, "cCCS2")], [(1, "cCCS2")]], start_module=False)
    rig = st.rig
    store = rig.tmp_path / "reservations.json"
    store.write_bytes(garbage)

    rig.start_module()
    assert st.exists("TOKEN_A", 1) == NOT_RESERVED
    assert st.exists("SOMEONE", 1) == NOT_RESERVED
    kept = list(rig.tmp_path.glob("reservations.json.corrupt-*"))
    assert len(kept) == 1, kept
    assert kept[0].read_bytes() == garbage

    lines = [line for line in rig.module_log().splitlines()
             if "reservations.json" in line and "store" in line.lower()]
    assert len(lines) == 1, lines
    assert "Traceback" not in rig.module_log()

    # It works normally from there: a reservation is made and stored in a fresh file.
    assert st.reserve(5, "TOKEN_A", 1) == A
    assert st.exists("TOKEN_A", 1) == FOR_TOKEN
    stored = json.loads(store.read_text())
    assert [e["reservation"]["reservation_id"] for e in stored["reservations"]] == [5]
    assert rig.proc is not None and rig.proc.poll() is None
