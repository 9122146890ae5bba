"""BusClient against a real mosquitto: calls, vars, errors, malformed input, reconnects."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from auth_module.bus import BusClient, CallOutcome, CommandError, CommandTimeout, NotConnected
from simulators.broker import Mosquitto

pytestmark = [pytest.mark.integration]

P = "everest/"


def wait_for(pred: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``pred`` until true or ``timeout``; tests assert the result, never the time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


class RecordingLogger:
    """A structlog-shaped logger that records (level, event, fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def bind(self, **_kw: Any) -> RecordingLogger:
        return self

    def _add(self, level: str, event: str, **kw: Any) -> None:
        with self._lock:
            self.records.append((level, event, kw))

    def debug(self, event: str, **kw: Any) -> None:
        self._add("debug", event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._add("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._add("error", event, **kw)

    def events(self, *names: str) -> list[str]:
        with self._lock:
            return [e for _, e, _ in self.records if not names or e in names]


LINK_EVENTS = ("broker unreachable, retrying", "connected", "connection lost")


@pytest.fixture
def make_bus(broker: Mosquitto) -> Iterator[Callable[..., BusClient]]:
    """Build BusClients on the test broker; every one is stopped at teardown."""
    made: list[BusClient] = []

    def make(module_id: str, start: bool = True, **kw: Any) -> BusClient:
        kw.setdefault("port", broker.port)
        bus = BusClient(module_id=module_id, host=broker.host, prefix=P, **kw)
        made.append(bus)
        if start:
            bus.start()
            assert bus.wait_connected(10.0), f"{module_id} did not connect"
        return bus

    yield make
    for bus in made:
        bus.stop()


@pytest.fixture
def raw_client(broker: Mosquitto) -> Iterator[Callable[[], mqtt.Client]]:
    """Plain paho clients, for sending what a BusClient never would."""
    made: list[mqtt.Client] = []

    def make() -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.connect(broker.host, broker.port)
        c.loop_start()
        made.append(c)
        return c

    yield make
    for c in made:
        c.disconnect()
        c.loop_stop()


def subscribe_and_wait(client: mqtt.Client, topic: str) -> None:
    done = threading.Event()
    client.on_subscribe = lambda *a: done.set()
    client.subscribe(topic, qos=1)
    assert done.wait(10.0)


# --- vars --------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_var_publish_reaches_subscriber(make_bus: Callable[..., BusClient]) -> None:
    got: list[Any] = []
    listener = make_bus("listener", start=False)
    listener.subscribe_var("rfid_reader", "main", "provided_token", got.append)
    listener.start()
    assert listener.wait_connected(10.0)
    reader = make_bus("rfid_reader")
    token = {"id_token": {"value": "ABC", "type": "ISO14443"}, "authorization_type": "RFID"}
    reader.publish_var("main", "provided_token", token)
    reader.publish_var("main", "provided_token", None)
    assert wait_for(lambda: len(got) == 2)
    assert got == [token, None]


@pytest.mark.timeout(30)
def test_subscribe_after_connect_and_raw_envelope(make_bus: Callable[..., BusClient]) -> None:
    listener = make_bus("listener")
    got: list[Any] = []
    raw: list[tuple[str, bytes]] = []
    listener.subscribe_var("pub", "main", "v", got.append)
    listener.subscribe_raw(P + "modules/pub/#", lambda t, p: raw.append((t, p)))
    assert listener.wait_subscribed(10.0)
    pub = make_bus("pub")
    pub.publish_var("main", "v", {"n": 1})
    assert wait_for(lambda: got and raw)
    assert got == [{"n": 1}]
    topic, payload = raw[0]
    assert topic == "everest/modules/pub/impl/main/var/v"
    assert json.loads(payload) == {"msg_type": "Var", "data": {"data": {"n": 1}}}


@pytest.mark.timeout(30)
def test_failing_and_malformed_vars_do_not_stop_the_network_thread(
    make_bus: Callable[..., BusClient], raw_client: Callable[[], mqtt.Client]
) -> None:
    log = RecordingLogger()
    got: list[Any] = []

    def handler(value: Any) -> None:
        if value == "boom":
            raise RuntimeError("handler broke")
        got.append(value)

    listener = make_bus("listener", start=False, logger=log)
    listener.subscribe_var("pub", "main", "v", handler)
    listener.start()
    assert listener.wait_connected(10.0)
    pub = make_bus("pub")
    pub.publish_var("main", "v", "boom")
    raw = raw_client()
    raw.publish(P + "modules/pub/impl/main/var/v", b"{not json", qos=1).wait_for_publish(5)
    raw.publish(P + "modules/pub/impl/main/var/v", b'{"msg_type":"Cmd"}', qos=1).wait_for_publish(5)
    pub.publish_var("main", "v", "after")
    assert wait_for(lambda: got == ["after"])
    assert log.events("var handler failed") == ["var handler failed"]
    assert log.events("malformed var dropped") == ["malformed var dropped"] * 2


# --- commands ----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_call_returns_the_handler_result(make_bus: Callable[..., BusClient]) -> None:
    seen: list[dict[str, Any]] = []
    evse = make_bus("evse_manager_1", start=False)

    def get_evse(args: dict[str, Any]) -> dict[str, Any]:
        seen.append(args)
        return {"id": 1, "connectors": [{"id": 1}]}

    evse.provide_command("evse", "get_evse", get_evse)
    evse.provide_command("evse", "authorize_response", lambda args: None)
    evse.start()
    assert evse.wait_connected(10.0)

    auth = make_bus("auth")
    assert auth.call("evse_manager_1", "evse", "get_evse", {}, timeout=5.0) == {"id": 1, "connectors": [{"id": 1}]}
    assert seen == [{}]
    assert auth.call("evse_manager_1", "evse", "authorize_response", {"provided_token": {}}) is None


@pytest.mark.timeout(30)
def test_none_result_is_answered_as_retval_null(make_bus: Callable[..., BusClient]) -> None:
    callee = make_bus("callee", start=False)
    callee.provide_command("main", "noop", lambda args: None)
    callee.start()
    caller = make_bus("caller", start=False)
    answers: list[bytes] = []
    caller.subscribe_raw(P + "modules/callee/impl/main/cmd/noop/response/caller", lambda t, p: answers.append(p))
    caller.start()
    assert callee.wait_connected(10.0) and caller.wait_connected(10.0)
    assert caller.call("callee", "main", "noop", {}) is None
    assert wait_for(lambda: answers)
    body = json.loads(answers[0])
    assert body["msg_type"] == "CmdResult"
    assert body["data"]["type"] == "result"
    inner = body["data"]["data"]
    assert inner["retval"] is None and "retval" in inner
    assert inner["origin"] == "callee"


@pytest.mark.timeout(30)
def test_handler_exception_answers_handler_exception(make_bus: Callable[..., BusClient]) -> None:
    callee = make_bus("callee", start=False)

    def broken(args: dict[str, Any]) -> Any:
        raise ValueError("no such evse 7")

    callee.provide_command("main", "broken", broken)
    callee.start()
    caller = make_bus("caller")
    assert callee.wait_connected(10.0)
    with pytest.raises(CommandError) as info:
        caller.call("callee", "main", "broken", {"x": 1})
    assert info.value.event == "HandlerException"
    assert "no such evse 7" in info.value.msg


@pytest.mark.timeout(30)
def test_validate_refusal_answers_schema_validation_failed(make_bus: Callable[..., BusClient]) -> None:
    ran: list[dict[str, Any]] = []
    callee = make_bus("auth", start=False)

    def validate(args: dict[str, Any]) -> str | None:
        value = args.get("connection_timeout")
        if not isinstance(value, int):
            return "connection_timeout must be an integer"
        return None

    callee.provide_command("main", "set_connection_timeout", ran.append, validate=validate)
    callee.start()
    caller = make_bus("ocpp")
    assert callee.wait_connected(10.0)
    with pytest.raises(CommandError) as info:
        caller.call("auth", "main", "set_connection_timeout", {"connection_timeout": "ten"})
    assert info.value.event == "SchemaValidationError"
    assert "integer" in info.value.msg
    assert ran == []
    assert caller.call("auth", "main", "set_connection_timeout", {"connection_timeout": 10}) is None
    assert ran == [{"connection_timeout": 10}]


@pytest.mark.timeout(30)
def test_result_that_is_not_json_answers_handler_exception(make_bus: Callable[..., BusClient]) -> None:
    callee = make_bus("callee", start=False)
    callee.provide_command("main", "weird", lambda args: {1, 2})
    callee.start()
    caller = make_bus("caller")
    assert callee.wait_connected(10.0)
    with pytest.raises(CommandError) as info:
        caller.call("callee", "main", "weird", {})
    assert info.value.event == "HandlerException"


@pytest.mark.timeout(30)
def test_malformed_command_gets_message_parsing_failed(
    make_bus: Callable[..., BusClient], raw_client: Callable[[], mqtt.Client]
) -> None:
    ran: list[dict[str, Any]] = []
    callee = make_bus("auth", start=False)
    callee.provide_command("main", "set_connection_timeout", ran.append)
    callee.start()
    assert callee.wait_connected(10.0)

    answers: list[dict[str, Any]] = []
    tool = raw_client()
    tool.on_message = lambda c, u, m: answers.append(json.loads(m.payload))
    subscribe_and_wait(tool, P + "modules/auth/impl/main/cmd/set_connection_timeout/response/tool")
    cmd = P + "modules/auth/impl/main/cmd/set_connection_timeout"

    # Broken JSON whose id and origin can still be read: answered.
    tool.publish(cmd, b'{"msg_type":"Cmd","data":{"id":"call-1","origin":"tool","args":{', qos=1)
    # Valid JSON, wrong shape: answered.
    tool.publish(cmd, json.dumps({"msg_type": "Cmd", "data": {"id": "call-2", "origin": "tool", "args": 5}}), qos=1)
    # No id at all: nobody to answer, dropped.
    tool.publish(cmd, b'{"msg_type":"Cmd","data":{"origin":"tool","args":{}}}', qos=1)
    # And the module still serves good calls afterwards.
    good = {"msg_type": "Cmd", "data": {"id": "call-3", "origin": "tool", "args": {"connection_timeout": 5}}}
    tool.publish(cmd, json.dumps(good), qos=1)

    assert wait_for(lambda: len(answers) >= 3)
    by_id = {a["data"]["data"]["id"]: a["data"]["data"] for a in answers}
    assert set(by_id) == {"call-1", "call-2", "call-3"}
    for cid in ("call-1", "call-2"):
        assert by_id[cid]["error"]["__everest__error_type"] == "MessageParsingError"
        assert by_id[cid]["error"]["__everest__error_msg"]
        assert by_id[cid]["origin"] == "auth"
        assert "retval" not in by_id[cid]
    assert by_id["call-3"]["retval"] is None
    assert ran == [{"connection_timeout": 5}]


@pytest.mark.timeout(30)
def test_call_to_nobody_times_out(make_bus: Callable[..., BusClient]) -> None:
    caller = make_bus("caller")
    with pytest.raises(CommandTimeout):
        caller.call("nobody", "main", "anything", {}, timeout=0.3)


@pytest.mark.timeout(30)
def test_handler_may_call_another_module(make_bus: Callable[..., BusClient]) -> None:
    """A handler runs on a worker, not paho's thread, so nested calls work."""
    inner = make_bus("inner", start=False)
    inner.provide_command("main", "double", lambda args: args["n"] * 2)
    inner.start()
    outer = make_bus("outer", start=False)
    outer_ref: list[BusClient] = [outer]
    outer.provide_command(
        "main", "quad", lambda args: outer_ref[0].call("inner", "main", "double", {"n": args["n"] * 2})
    )
    outer.start()
    caller = make_bus("caller")
    assert inner.wait_connected(10.0) and outer.wait_connected(10.0)
    assert caller.call("outer", "main", "quad", {"n": 3}) == 12


@pytest.mark.timeout(30)
def test_many_concurrent_callers_get_their_own_answers(make_bus: Callable[..., BusClient]) -> None:
    callee = make_bus("callee", start=False, command_workers=4)
    callee.provide_command("main", "echo", lambda args: args["n"])
    callee.start()
    caller = make_bus("caller")
    assert callee.wait_connected(10.0)
    results: dict[int, Any] = {}

    def worker(n: int) -> None:
        results[n] = caller.call("callee", "main", "echo", {"n": n}, timeout=10.0)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20.0)
    assert results == {n: n for n in range(40)}


@pytest.mark.timeout(30)
def test_call_async_keeps_wire_order_and_reports_outcomes(make_bus: Callable[..., BusClient]) -> None:
    callee = make_bus("evse_manager_1", start=False)
    wire: list[str] = []
    callee.provide_command("evse", "authorize_response", lambda args: args["n"])
    callee.subscribe_raw(
        P + "modules/evse_manager_1/impl/evse/cmd/authorize_response",
        lambda t, p: wire.append(json.loads(p)["data"]["id"]),
    )
    callee.start()
    caller = make_bus("auth")
    assert callee.wait_connected(10.0)

    outcomes: dict[int, CallOutcome] = {}
    lock = threading.Lock()

    def on_result_for(n: int) -> Callable[[CallOutcome], None]:
        def on_result(outcome: CallOutcome) -> None:
            with lock:
                outcomes[n] = outcome

        return on_result

    ids = [
        caller.call_async("evse_manager_1", "evse", "authorize_response", {"n": n}, on_result=on_result_for(n))
        for n in range(50)
    ]
    assert wait_for(lambda: len(outcomes) == 50 and len(wire) == 50)
    assert wire == ids
    assert all(outcomes[n].ok and outcomes[n].retval == n for n in range(50))

    # A call that nobody answers ends in CommandTimeout; one without on_result is just logged.
    late: list[CallOutcome] = []
    caller.call_async("nobody", "main", "x", {}, timeout=0.2, on_result=late.append)
    caller.call_async("nobody", "main", "y", {}, timeout=0.2)
    assert wait_for(lambda: late)
    assert isinstance(late[0].error, CommandTimeout) and not late[0].ok

    # An error answer arrives as CommandError.
    callee.provide_command("evse", "broken", lambda args: 1 / 0)
    assert callee.wait_subscribed(10.0)
    errs: list[CallOutcome] = []
    caller.call_async("evse_manager_1", "evse", "broken", {}, on_result=errs.append)
    assert wait_for(lambda: errs)
    assert isinstance(errs[0].error, CommandError) and errs[0].error.event == "HandlerException"


@pytest.mark.timeout(30)
def test_duplicate_provide_command_is_refused(make_bus: Callable[..., BusClient]) -> None:
    bus = make_bus("m", start=False)
    bus.provide_command("main", "c", lambda a: None)
    with pytest.raises(ValueError):
        bus.provide_command("main", "c", lambda a: None)


# --- errors and ready --------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_error_raise_and_clear_reach_subscriber(make_bus: Callable[..., BusClient]) -> None:
    raised: list[dict[str, Any]] = []
    cleared: list[dict[str, Any]] = []
    auth = make_bus("auth", start=False)
    auth.subscribe_error(
        "evse_manager_1", "evse", "evse_manager/Inoperative", on_raised=raised.append, on_cleared=cleared.append
    )
    auth.start()
    assert auth.wait_connected(10.0)
    evse = make_bus("evse_manager_1")
    evse.raise_error("evse", "evse_manager/Inoperative", "contactor welded")
    assert wait_for(lambda: raised)
    evse.clear_error("evse", "evse_manager/Inoperative", "ok again")
    assert wait_for(lambda: cleared)
    assert raised[0]["type"] == "evse_manager/Inoperative"
    assert raised[0]["message"] == "contactor welded"
    assert raised[0]["origin"] == {"module_id": "evse_manager_1", "implementation_id": "evse"}
    assert raised[0]["severity"] == "High" and raised[0]["state"] == "Active"
    assert raised[0]["uuid"] and raised[0]["timestamp"]
    assert cleared[0]["message"] == "ok again" and cleared[0]["state"] == "ClearedByModule"
    for body in (raised[0], cleared[0]):  # every key EVerest's C++ readers take with .at()
        assert {"description", "sub_type", "vendor_id"} <= set(body), body


@pytest.mark.timeout(30)
def test_publish_ready(make_bus: Callable[..., BusClient]) -> None:
    watcher = make_bus("watcher", start=False)
    got: list[tuple[str, bytes]] = []
    watcher.subscribe_raw(P + "modules/+/ready", lambda t, p: got.append((t, p)))
    watcher.start()
    auth = make_bus("auth")
    assert watcher.wait_connected(10.0)
    auth.publish_ready()
    assert wait_for(lambda: got)
    assert got[0][0] == "everest/modules/auth/ready"
    assert json.loads(got[0][1]) == {"msg_type": "ModuleReady", "data": True}


# --- connection loss ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_reconnects_after_broker_restart_and_renews_subscriptions(
    broker: Mosquitto, make_bus: Callable[..., BusClient]
) -> None:
    log = RecordingLogger()
    changes: list[bool] = []
    got: list[Any] = []
    callee = make_bus("callee", start=False, logger=log)
    callee.provide_command("main", "echo", lambda args: args)
    callee.subscribe_var("caller", "main", "v", got.append)
    callee.on_connection_change = changes.append
    callee.start()
    caller = make_bus("caller")
    assert callee.wait_connected(10.0)
    assert caller.call("callee", "main", "echo", {"a": 1}) == {"a": 1}

    broker.stop()
    assert wait_for(lambda: not callee.connected and not caller.connected)
    with pytest.raises(NotConnected):
        caller.call("callee", "main", "echo", {"a": 2})
    failed: list[CallOutcome] = []
    caller.call_async("callee", "main", "echo", {}, on_result=failed.append)
    assert wait_for(lambda: failed)
    assert isinstance(failed[0].error, NotConnected)

    broker.start()
    assert callee.wait_connected(20.0) and caller.wait_connected(20.0)

    def var_arrives() -> bool:
        caller.publish_var("main", "v", "ping")
        return wait_for(lambda: "ping" in got, timeout=0.5)

    assert wait_for(var_arrives, timeout=20.0)
    assert caller.call("callee", "main", "echo", {"a": 3}) == {"a": 3}
    assert changes[:3] == [True, False, True]
    link = log.events(*LINK_EVENTS)
    assert link[0] == "connected"
    assert link[1] == "connection lost"
    assert link[-1] == "connected"
    assert all(a != b for a, b in zip(link, link[1:], strict=False)), link  # once per change


@pytest.mark.timeout(60)
def test_client_started_while_broker_down_connects_when_it_comes_up() -> None:
    log = RecordingLogger()
    broker = Mosquitto()  # configured, not started
    bus = BusClient("auth", host=broker.host, port=broker.port, prefix=P, logger=log)
    try:
        bus.start()
        assert wait_for(lambda: "broker unreachable, retrying" in log.events())
        assert not bus.connected
        with pytest.raises(NotConnected):
            bus.call("x", "main", "y", {})
        broker.start()
        assert bus.wait_connected(20.0)
        assert log.events(*LINK_EVENTS) == ["broker unreachable, retrying", "connected"]
        with pytest.raises(CommandTimeout):
            bus.call("nobody", "main", "y", {}, timeout=0.2)
    finally:
        bus.stop()
        broker.close()


@pytest.mark.timeout(30)
def test_stop_fails_waiting_calls_and_is_idempotent(make_bus: Callable[..., BusClient]) -> None:
    caller = make_bus("caller")
    errors: list[BaseException] = []

    def waiting_call() -> None:
        try:
            caller.call("nobody", "main", "x", {}, timeout=20.0)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    t = threading.Thread(target=waiting_call)
    t.start()
    assert wait_for(lambda: bool(caller._calls._pending))
    caller.stop()
    caller.stop()
    t.join(10.0)
    assert len(errors) == 1 and isinstance(errors[0], NotConnected)


@pytest.mark.timeout(30)
def test_call_from_a_var_handler_is_refused_not_deadlocked(make_bus: Callable[..., BusClient]) -> None:
    log = RecordingLogger()
    listener = make_bus("listener", start=False, logger=log)
    listener.subscribe_var("pub", "main", "v", lambda v: listener.call("x", "main", "y", {}))
    listener.start()
    assert listener.wait_connected(10.0)
    pub = make_bus("pub")
    pub.publish_var("main", "v", 1)
    assert wait_for(lambda: "var handler failed" in log.events())
    _, _, fields = next(r for r in log.records if r[1] == "var handler failed")
    assert "call_async" in fields["error"]


# --- the crew: any thread writes, deferred work runs beside the reader ----------------------


@pytest.mark.timeout(60)
def test_publishes_from_many_threads_arrive_whole_and_in_order(
        make_bus: Callable[..., BusClient]) -> None:
    """Every thread writes its own packets; the write lock must keep them whole and each
    thread's in its order."""
    threads, per_thread = 8, 150
    got: dict[int, list[int]] = {t: [] for t in range(threads)}
    lock = threading.Lock()

    def on_value(v: Any) -> None:
        with lock:
            got[v["t"]].append(v["n"])

    listener = make_bus("listener", start=False)
    listener.subscribe_var("pub", "main", "v", on_value)
    listener.start()
    assert listener.wait_connected(10.0)
    pub = make_bus("pub")
    barrier = threading.Barrier(threads)

    def publish(t: int) -> None:
        barrier.wait()
        for n in range(per_thread):
            pub.publish_var("main", "v", {"t": t, "n": n, "pad": "x" * (n % 7) * 100})

    workers = [threading.Thread(target=publish, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert wait_for(lambda: sum(len(v) for v in got.values()) == threads * per_thread, 30.0)
    assert all(got[t] == list(range(per_thread)) for t in range(threads))


@pytest.mark.timeout(60)
def test_deferred_work_runs_beside_the_reader(make_bus: Callable[..., BusClient]) -> None:
    """Work deferred from a handler runs on the thread that read the message, and another
    crew thread reads on: a message that arrives while the work blocks is still handled.
    Quick work hands the reading over at its first publish; other work at once."""
    for quick in (False, True):
        release = threading.Event()
        seen: list[Any] = []
        ran_on: list[str] = []
        listener = make_bus(f"listener{int(quick)}", start=False)

        def work() -> None:
            ran_on.append(threading.current_thread().name)
            listener.publish_var("main", "started", True)  # quick work: reading moves on here
            release.wait(20)

        def on_value(v: Any, work: Callable[[], None] = work, quick: bool = quick,
                     listener: BusClient = listener, seen: list[Any] = seen) -> None:
            seen.append(v)
            if v == "block":
                assert listener.defer(work, quick=quick)

        listener.subscribe_var(f"pub{int(quick)}", "main", "v", on_value)
        listener.start()
        assert listener.wait_connected(10.0)
        pub = make_bus(f"pub{int(quick)}")
        pub.publish_var("main", "v", "block")
        assert wait_for(lambda: len(ran_on) == 1)
        pub.publish_var("main", "v", "while blocked")
        assert wait_for(lambda: "while blocked" in seen), f"reading stopped (quick={quick})"
        assert ran_on[0].startswith("bus-listener")
        release.set()


@pytest.mark.timeout(60)
def test_defer_says_no_when_the_crew_and_its_backlog_are_full(
        make_bus: Callable[..., BusClient]) -> None:
    bus = make_bus("crew", work_threads=2, work_backlog=2)
    release = threading.Event()
    done: list[int] = []

    def blocked(i: int) -> Callable[[], None]:
        def work() -> None:
            release.wait(20)
            done.append(i)
        return work

    # One crew thread reads; the other two run work; two more wait in the backlog.
    accepted = [bus.defer(blocked(i)) for i in range(4)]
    assert accepted == [True, True, True, True]
    assert bus.defer(blocked(4)) is False
    release.set()
    assert wait_for(lambda: sorted(done) == [0, 1, 2, 3])
    assert bus.defer(blocked(5)) is True  # room again
    assert wait_for(lambda: 5 in done)


@pytest.mark.timeout(60)
def test_deferred_work_may_make_blocking_calls(make_bus: Callable[..., BusClient]) -> None:
    """A crew thread running work is not the reader, so a blocking call is answered."""
    callee = make_bus("callee")
    callee.provide_command("main", "echo", lambda a: a["x"])
    caller = make_bus("caller", start=False)
    answers: list[Any] = []

    def on_value(v: Any) -> None:
        assert caller.defer(lambda: answers.append(caller.call("callee", "main", "echo",
                                                               {"x": v}, timeout=10)))

    caller.subscribe_var("pub", "main", "v", on_value)
    caller.start()
    assert caller.wait_connected(10.0)
    make_bus("pub").publish_var("main", "v", 42)
    assert wait_for(lambda: answers == [42])


@pytest.mark.timeout(60)
def test_a_busy_crew_keeps_reading_and_runs_queued_work_later(
        make_bus: Callable[..., BusClient]) -> None:
    """With every other crew thread busy, the reader does not step down: it queues the work
    and keeps reading, and the work runs when a thread is free again."""
    release = threading.Event()
    ran: list[str] = []
    seen: list[Any] = []
    listener = make_bus("busy", start=False, work_threads=1, work_backlog=4)

    def blocking() -> None:
        ran.append("blocking")
        release.wait(20)

    def on_value(v: Any) -> None:
        seen.append(v)
        if v == "block":
            assert listener.defer(blocking)
        elif v == "queue":
            assert listener.defer(lambda: ran.append("queued"))

    listener.subscribe_var("pubq", "main", "v", on_value)
    listener.start()
    assert listener.wait_connected(10.0)
    pub = make_bus("pubq")
    pub.publish_var("main", "v", "block")
    assert wait_for(lambda: ran == ["blocking"])
    pub.publish_var("main", "v", "queue")  # the only worker is busy: queued
    pub.publish_var("main", "v", "still read")
    assert wait_for(lambda: "still read" in seen)
    assert ran == ["blocking"]
    release.set()
    assert wait_for(lambda: ran == ["blocking", "queued"])
