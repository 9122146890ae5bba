"""The module under things going wrong: the broker restarting, validators failing, hanging,
answering late or missing, an EVSE manager going silent, bursts of tokens, and its log.

Every test runs ``auth-module --config`` as its own process over a real mosquitto.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.broker import Mosquitto

from .harness import DEADLINE_S, RawClient, Rig, ValidatorSpec, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

P = "everest/"
MID = "auth"
READY = f"{P}modules/{MID}/ready"
VALID_1, VALID_2 = "VALID_RFID_1", "VALID_RFID_2"
FINAL = {"Rejected", "TimedOut", "UsedToStart", "UsedToStop", "UsedToReauthorize", "Withdrawn"}
VALIDATOR_S = 1.0
MARGIN_S = 4.0  # on top of the validator bound: a loaded machine must not fail a correct module


def log_records(rig: Rig) -> list[dict[str, Any]]:
    return rig.log_records()


def event_text(record: dict[str, Any]) -> str:
    return str(record.get("event", "")).lower()


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    """Rigs to stop after the test, whatever happened."""
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.stop()


def all_buses_connected(rig: Rig) -> bool:
    sims = [*rig.evses, *rig.validators, rig.provider]
    return rig.observer.connected and all(s.bus.connected for s in sims)


# --- the broker goes away and comes back -------------------------------------------------------


def test_broker_restart_reconnects_resubscribes_and_republishes_ready(
        tmp_path: Path, rigs: list[Rig]) -> None:
    broker = Mosquitto()
    # Keep sessions across the restart, so a persistent raw subscriber gets the module's
    # second ready even if the module reconnects before the subscriber does.
    conf = broker.conf_path.read_text().replace(
        "persistence false", f"persistence true\npersistence_location {tmp_path}/")
    broker.conf_path.write_text(conf)
    raw: RawClient | None = None
    try:
        broker.start()
        rig = Rig(broker, tmp_path, scripted=True,
                  validators=[ValidatorSpec("validator", tokens=[{"id_token": VALID_1}])],
                  config={"connection_timeout": 30})
        rigs.append(rig)
        rig.start()
        assert rig.proc is not None
        raw = RawClient(broker.host, broker.port, filters=(READY,),
                        client_id="robustness-ready-watch", clean_session=False).start()

        broker.stop()
        wait_until(lambda: any(r.get("level") in ("warning", "error") and "lost" in event_text(r)
                               for r in log_records(rig)), 10.0, "the module logging the loss")
        time.sleep(1.0)  # stay down a while: the module must wait, not exit
        assert rig.proc.poll() is None, f"module exited: {rig.module_log()[-2000:]}"
        lost_at = next(i for i, r in enumerate(log_records(rig)) if "lost" in event_text(r))

        broker.start()
        wait_until(lambda: raw.on(READY), 15.0, "ready published again after the restart")
        assert json.loads(raw.on(READY)[0]) == {"msg_type": "ModuleReady", "data": True}
        wait_until(lambda: any(event_text(r) in ("connected", "reconnected")
                               for r in log_records(rig)[lost_at + 1:]),
                   15.0, "the module logging the reconnection")
        wait_until(lambda: all_buses_connected(rig), 15.0, "the simulators reconnecting")
        assert rig.observer.wait_subscribed(DEADLINE_S)

        rig.swipe(VALID_1, connectors=[1])  # handled only if the module resubscribed
        rig.statuses.wait(VALID_1, "UsedToStart", timeout=15.0)
        assert rig.statuses.of(VALID_1) == ["Processing", "Accepted", "UsedToStart"]
        assert rig.proc.poll() is None
        assert rig.stop_module() == 0
    finally:
        if raw is not None:
            raw.stop()
        for rig in rigs:
            rig.stop()
        broker.close()


# --- validators that fail, hang, answer late or are not there ---------------------------------


def test_failing_silent_late_and_missing_validators_count_as_unknown(
        broker: Mosquitto, tmp_path: Path, rigs: list[Rig]) -> None:
    good = [{"id_token": f"GOOD_{mode}"} for mode in ("fail", "silent", "late", "missing")]
    rig = Rig(broker, tmp_path, scripted=True,
              validators=[ValidatorSpec("v_bad", tokens=good), ValidatorSpec("v_good", tokens=good)],
              config={"connection_timeout": 30},
              extra={"timeouts": {"validator_s": VALIDATOR_S, "command_s": 2.0}})
    rigs.append(rig)
    rig.start()
    assert rig.proc is not None
    bad_validator = rig.validators[0]

    def unknown_warnings() -> int:
        return sum(1 for r in log_records(rig)
                   if r.get("level") in ("warning", "error") and "unknown" in event_text(r)
                   and "v_bad" in json.dumps(r))

    for mode in ("fail", "silent", "late", "missing"):
        bad_validator.fail = mode == "fail"
        bad_validator.silent = mode == "silent"
        bad_validator.delay_s = 2 * VALIDATOR_S + 0.5 if mode == "late" else 0.0
        if mode == "missing":
            bad_validator.stop()  # no module on the bus at all any more
        before = unknown_warnings()

        # the second validator accepts: the token is still accepted
        accepted = f"GOOD_{mode}"
        rig.swipe(accepted, connectors=[1])
        rig.statuses.wait(accepted, "UsedToStart", timeout=VALIDATOR_S + MARGIN_S)
        assert rig.statuses.of(accepted) == ["Processing", "Accepted", "UsedToStart"], mode
        assert rig.call("main", "withdraw_authorization", {"request": {"evse_id": 1}}) \
            == "Accepted"
        rig.statuses.wait(accepted, "Withdrawn")  # EVerest #2499: the granted token hears of it

        # nobody accepts: Rejected, within the bound too
        rejected = f"BAD_{mode}"
        rig.swipe(rejected, connectors=[1])
        rig.statuses.wait(rejected, "Rejected", timeout=VALIDATOR_S + MARGIN_S)
        assert rig.statuses.of(rejected) == ["Processing", "Rejected"], mode
        wait_until(lambda: unknown_warnings() >= before + 2, DEADLINE_S,
                   f"two warnings counting v_bad ({mode}) as Unknown")

    time.sleep(0.5)  # late answers (mode "late") must not add anything
    for mode in ("fail", "silent", "late", "missing"):
        assert rig.statuses.of(f"GOOD_{mode}") == ["Processing", "Accepted", "UsedToStart",
                                                   "Withdrawn"]
        assert rig.statuses.of(f"BAD_{mode}") == ["Processing", "Rejected"]
    assert rig.proc.poll() is None


# --- an EVSE manager that stops answering ------------------------------------------------------


def test_silent_evse_manager_does_not_stop_the_other_evse(
        broker: Mosquitto, tmp_path: Path, rigs: list[Rig]) -> None:
    command_s = 4.0  # the call to EVSE 2 stays unanswered this long; EVSE 1 is served meanwhile
    rig = Rig(broker, tmp_path, scripted=True,
              validators=[ValidatorSpec("validator", tokens=[{"id_token": VALID_1}])],
              config={"connection_timeout": 30},
              extra={"timeouts": {"validator_s": 2.0, "command_s": command_s}})
    rigs.append(rig)
    rig.start()
    assert rig.proc is not None
    raw = RawClient(broker.host, broker.port,
                    filters=(f"{P}modules/evse_manager_2/impl/evse/cmd/+",)).start()
    try:
        rig.evse(2).stop()  # EVSE manager 2 stops answering anything

        reservation: dict[str, Any] = {}

        def reserve_on_2() -> None:
            try:
                reservation["result"] = rig.call(
                    "reservation", "reserve_now",
                    {"request": {"reservation_id": 5, "id_token": "RES", "evse_id": 2,
                                 "expiry_time": "2099-01-01T00:00:00Z"}},
                    timeout=command_s + 10.0)
            except Exception as exc:  # reported below
                reservation["error"] = exc

        caller = threading.Thread(target=reserve_on_2, daemon=True)
        caller.start()
        wait_until(lambda: raw.on(f"{P}modules/evse_manager_2/impl/evse/cmd/reserve"),
                   DEADLINE_S, "the module asking EVSE manager 2 to reserve")

        # while that call to EVSE manager 2 is unanswered, EVSE 1 is served
        rig.swipe(VALID_1, connectors=[1])
        rig.statuses.wait(VALID_1, "UsedToStart")
        assert caller.is_alive(), "EVSE 1 was served only after the call to EVSE 2 ended"
        auth = wait_until(lambda: rig.commands(1, "authorize_response"), DEADLINE_S,
                          "authorize_response at EVSE 1")
        assert [a["validation_result"]["authorization_status"] for a in auth] == ["Accepted"]
        assert rig.call("main", "withdraw_authorization", {"request": {"evse_id": 1}}) \
            == "Accepted"

        caller.join(command_s + 12.0)
        assert not caller.is_alive()
        assert "error" not in reservation, reservation
        assert reservation["result"] != "Accepted", reservation  # never confirmed by EVSE 2
        assert rig.proc.poll() is None
    finally:
        raw.stop()


# --- bursts ------------------------------------------------------------------------------------


def test_thirty_tokens_at_once_find_first(broker: Mosquitto, tmp_path: Path,
                                          rigs: list[Rig]) -> None:
    tokens = [f"BURST_{i:02d}" for i in range(30)]
    rig = Rig(broker, tmp_path, scripted=True,
              validators=[ValidatorSpec("validator", tokens=[{"id_token": t} for t in tokens])],
              config={"selection_algorithm": "FindFirst", "connection_timeout": 30})
    rigs.append(rig)
    rig.start()
    for token in tokens:
        rig.swipe(token)
    wait_until(lambda: all(FINAL & set(rig.statuses.of(t)) for t in tokens), 20.0,
               "a final status for each of the 30 tokens")
    time.sleep(0.5)  # nothing more may follow

    started: list[int] = []
    for token in tokens:
        seen = rig.statuses.of(token)
        assert seen[0] == "Processing", (token, seen)
        assert seen.count("Processing") == 1, (token, seen)
        finals = [s for s in seen if s in FINAL]
        assert len(finals) == 1, (token, seen)
        if finals[0] == "UsedToStart":
            started += rig.statuses.messages(token, "UsedToStart")[0]["token"]["connectors"]
        else:
            assert finals[0] == "Rejected", (token, seen)
    assert sorted(started) == [1, 2], started  # one token per EVSE, both EVSEs used
    def granted(evse_id: int) -> list[dict[str, Any]]:
        return [a for a in rig.commands(evse_id, "authorize_response")
                if a["validation_result"]["authorization_status"] == "Accepted"]
    for evse_id in (1, 2):
        wait_until(lambda: granted(evse_id), DEADLINE_S, f"authorize_response at EVSE {evse_id}")
        assert len(granted(evse_id)) == 1, (evse_id, granted(evse_id))
    assert rig.proc is not None and rig.proc.poll() is None


def test_same_token_five_times_at_once(broker: Mosquitto, tmp_path: Path,
                                       rigs: list[Rig]) -> None:
    rig = Rig(broker, tmp_path, scripted=True,
              validators=[ValidatorSpec("validator", tokens=[{"id_token": VALID_1},
                                                             {"id_token": VALID_2}])],
              config={"connection_timeout": 30})
    rigs.append(rig)
    rig.start()
    for _ in range(5):
        rig.swipe(VALID_1, connectors=[1])
    rig.statuses.wait(VALID_1, "UsedToStart")
    # a later token from the same provider: once it is done, all five swipes were seen
    rig.swipe(VALID_2, connectors=[2])
    rig.statuses.wait(VALID_2, "UsedToStart")
    time.sleep(0.5)
    assert rig.statuses.of(VALID_1) == ["Processing", "Accepted", "UsedToStart"]
    asked = [a for _c, a in rig.validators[0].received
             if a["provided_token"]["id_token"]["value"] == VALID_1]
    assert len(asked) == 1, asked
    wait_until(lambda: rig.commands(1, "authorize_response"), DEADLINE_S, "authorize_response")
    assert len(rig.commands(1, "authorize_response")) == 1


# --- the log -----------------------------------------------------------------------------------


@pytest.mark.parametrize("logging", [{"level": "debug", "show_tokens": False},
                                     {"level": "debug"}],  # masked by default
                         ids=["show_tokens-false", "show_tokens-default"])
def test_log_is_json_lines_and_tokens_are_masked(broker: Mosquitto, tmp_path: Path,
                                                 rigs: list[Rig], logging: dict[str, Any]) -> None:
    secret, stranger = "SECRET_CARD_0123456789", "STRANGER_CARD_987654321"
    rig = Rig(broker, tmp_path, scripted=True,
              validators=[ValidatorSpec("validator", tokens=[{"id_token": secret}])],
              config={"connection_timeout": 30},
              extra={"logging": logging})  # format: the default (auto), stderr is a file
    rigs.append(rig)
    rig.start()
    session_topic = f"{P}modules/evse_manager_1/impl/evse/var/session_event"
    raw = RawClient(broker.host, broker.port, filters=(session_topic,)).start()
    try:
        sent = rig.swipe(secret, connectors=[1])
        rig.statuses.wait(secret, "UsedToStart")
        rig.evse(1).transaction_started(sent)
        # once the broker passed it on, the event reaches the module before the next token
        wait_until(lambda: raw.on(session_topic), DEADLINE_S, "TransactionStarted on the broker")
    finally:
        raw.stop()
    rig.swipe(stranger, connectors=[2])
    rig.statuses.wait(stranger, "Rejected")
    rig.swipe(secret.lower(), connectors=[1])
    rig.statuses.wait(secret.lower(), "UsedToStop")
    assert rig.call("main", "withdraw_authorization",
                    {"request": {"id_token": {"value": stranger, "type": "ISO14443"}}}) \
        == "AuthorizationNotFound"
    assert rig.stop_module() == 0

    text = rig.module_log()
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"log line {number} is not JSON: {line!r}")
        assert isinstance(record, dict), line
        assert "event" in record and "level" in record, line
        records.append(record)
    assert len(records) >= 5, text

    for token in (secret, stranger):
        assert token.lower() not in text.lower(), f"{token} appears in the log unmasked"

    def strings(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)

    # Each token as a keyed hash ``tok:xxxxxx``, the same one for every line about it
    # (the upper- and lower-case swipes of ``secret`` included), different per token.
    all_labels = {s for r in records for s in strings(r) if re.fullmatch(r"tok:[0-9a-f]{6}", s)}
    assert len(all_labels) == 2, all_labels  # two cards, two labels, nothing else


@pytest.mark.parametrize("echoer", ["validator", "evse_manager"])
def test_token_echoed_in_another_modules_error_is_masked_in_the_log(
        broker: Mosquitto, tmp_path: Path, rigs: list[Rig], echoer: str) -> None:
    secret = "SECRET_CARD_0123456789"
    validators = [ValidatorSpec("validator", tokens=[{"id_token": secret}])]
    if echoer == "validator":
        validators.insert(0, ValidatorSpec("echo"))
    rig = Rig(broker, tmp_path, scripted=True, evses=[[(1, "cCCS2")]], validators=validators,
              config={"connection_timeout": 30}, extra={"logging": {"level": "debug"}})
    rigs.append(rig)
    rig.write_station()
    rig.start_simulators()
    calls: list[dict[str, Any]] = []

    def echo(args: dict[str, Any]) -> Any:
        calls.append(args)
        raise RuntimeError(f"cannot handle card {args['provided_token']['id_token']['value']}")

    if echoer == "validator":  # answers validate_token with an error naming the card
        rig.validators[0].stop()
        echo_bus = rig._bus("echo")
        echo_bus.provide_command("main", "validate_token", echo)
    else:  # answers authorize_response with an error naming the card
        rig.evses[0].stop()
        echo_bus = rig._bus("evse_manager_1")
        echo_bus.provide_command("evse", "get_evse",
                                 lambda a: {"id": 1, "connectors": [{"id": 1, "type": "cCCS2"}]})
        echo_bus.provide_command("evse", "authorize_response", echo)
    echo_bus.start()
    try:
        assert echo_bus.wait_connected(DEADLINE_S)
        rig.start_module()
        rig.swipe(secret, connectors=[1])
        rig.statuses.wait(secret, "UsedToStart")
        wait_until(lambda: calls, DEADLINE_S, f"the {echoer} being called")
        try:  # give the module time to log the error answer; a masked log never matches
            wait_until(lambda: secret.lower() in rig.module_log().lower(), 2.0)
        except AssertionError:
            pass
        assert secret.lower() not in rig.module_log().lower(), \
            [line for line in rig.module_log().splitlines() if secret in line]
    finally:
        echo_bus.stop()


# --- more tokens than the module takes at once ---------------------------------------------------


@pytest.mark.timeout(60)
def test_tokens_beyond_the_bound_are_refused_with_a_final_status(
        broker: Mosquitto, tmp_path: Path, rigs: list[Rig]) -> None:
    """No thread waits for a validator, so what bounds the work is the number of tokens in
    process (token_workers + token_backlog): past it a token is refused at once, with a
    final Rejected, and the module keeps serving."""
    from auth_module.module import AuthModule
    from auth_module.station import load_station

    rig = Rig(broker, tmp_path, scripted=True, validators=[ValidatorSpec("v")],
              config={"connection_timeout": 30},
              extra={"timeouts": {"validator_s": 5.0, "command_s": 2.0}})
    rigs.append(rig)
    rig.write_station()
    rig.start_simulators()
    rig.validators[0].silent = True  # tokens stay in validation until the 5 s bound
    module = AuthModule(load_station(rig.station_path), token_workers=1, token_backlog=1)
    stop = threading.Event()
    runner = threading.Thread(target=module.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_until(module.ready.is_set, DEADLINE_S, "the module to be ready")
        for value in ("FIRST", "SECOND"):
            rig.swipe(value)
            rig.statuses.wait(value, "Processing")
        rig.swipe("THIRD")
        rig.statuses.wait("THIRD", "Rejected", timeout=2.0)  # at once, not after 5 s
        assert rig.statuses.of("THIRD") == ["Rejected"]
        assert rig.statuses.of("FIRST") == ["Processing"]  # still being validated
        # the first two end by their validator bound, and then there is room again
        for value in ("FIRST", "SECOND"):
            rig.statuses.wait(value, "Rejected", timeout=5.0 + MARGIN_S)
        rig.validators[0].silent = False
        rig.swipe("VALID_AGAIN")
        rig.statuses.wait("VALID_AGAIN", "Rejected", timeout=DEADLINE_S)
        assert rig.statuses.of("VALID_AGAIN") == ["Processing", "Rejected"]
    finally:
        stop.set()
        runner.join(10)


@pytest.mark.timeout(90)
def test_a_token_in_validation_when_the_broker_dies_still_gets_its_final_status(
        tmp_path: Path, rigs: list[Rig]) -> None:
    """The token's validator call times out while the broker is away; its final status is
    published then (QoS 1, kept by paho) and delivered once the broker is back."""
    broker = Mosquitto()
    conf = broker.conf_path.read_text().replace(
        "persistence false", f"persistence true\npersistence_location {tmp_path}/")
    broker.conf_path.write_text(conf)
    status_topic = f"{P}modules/{MID}/impl/main/var/token_validation_status"
    raw: RawClient | None = None
    try:
        broker.start()
        rig = Rig(broker, tmp_path, scripted=True, validators=[ValidatorSpec("validator")],
                  config={"connection_timeout": 30},
                  extra={"timeouts": {"validator_s": 2.0, "command_s": 2.0}})
        rigs.append(rig)
        rig.start()
        raw = RawClient(broker.host, broker.port, filters=(status_topic,),
                        client_id="robustness-status-watch", clean_session=False).start()
        rig.validators[0].silent = True
        rig.swipe("IN_FLIGHT")
        rig.statuses.wait("IN_FLIGHT", "Processing")
        broker.stop()  # the validator's answer can no longer come: the call times out
        time.sleep(3.0)
        assert rig.proc is not None and rig.proc.poll() is None
        broker.start()

        def statuses() -> list[str]:
            return [json.loads(p)["data"]["data"]["status"] for p in raw.on(status_topic)
                    if json.loads(p)["data"]["data"]["token"]["id_token"]["value"] == "IN_FLIGHT"]

        wait_until(lambda: "Rejected" in statuses(), 20.0, "the final status after the restart")
        assert statuses() == ["Processing", "Rejected"]
    finally:
        if raw is not None:
            raw.stop()
        for r in rigs:
            r.stop()
        broker.close()
