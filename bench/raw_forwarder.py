"""The floor of the token-latency bench: a raw-paho "auth" that only forwards JSON.

Not the module: it sends the same messages on the token path (``Processing``, the
``validate_token`` call, ``Accepted``, ``authorize_response``, ``UsedToStart``; QoS 1) with
no decisions, all on paho's network thread. Run it in place of the module to see what the
bench's four broker legs cost on a machine::

    python -m bench.token_latency --module-command "python $PWD/bench/raw_forwarder.py"
"""
import sys, json, uuid, socket, signal, threading, yaml
import paho.mqtt.client as mqtt
cfg = yaml.safe_load(open(sys.argv[sys.argv.index("--config") + 1]))
P = "everest/modules/"
T_TOKEN = P + "rfid_reader/impl/main/var/provided_token"
T_VAL = P + "validator/impl/main/cmd/validate_token"
T_AUTH = P + "evse_manager_1/impl/evse/cmd/authorize_response"
T_HS = P + "auth/impl/reservation/cmd/exists_reservation"
T_STATUS = P + "auth/impl/main/var/token_validation_status"
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="auth-raw-" + uuid.uuid4().hex[:6], protocol=mqtt.MQTTv311)
c.on_socket_open = lambda cl, u, s: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
cur = {}
def status(tok, s):
    c.publish(T_STATUS, json.dumps({"msg_type": "Var", "data": {"data": {"token": tok, "status": s, "messages": []}}}), qos=1)
def cmd(topic, args):
    c.publish(topic, json.dumps({"msg_type": "Cmd", "data": {"id": str(uuid.uuid4()), "args": args, "origin": "auth"}}), qos=1)
def on_message(cl, u, m):
    if m.topic == T_TOKEN:
        tok = json.loads(m.payload)["data"]["data"]; cur["t"] = tok
        status(tok, "Processing"); cmd(T_VAL, {"provided_token": tok})
    elif m.topic == T_VAL + "/response/auth":
        res = json.loads(m.payload)["data"]["data"]["retval"]; tok = dict(cur["t"], connectors=[1])
        status(cur["t"], "Accepted"); cmd(T_AUTH, {"provided_token": tok, "validation_result": res}); status(tok, "UsedToStart")
    elif m.topic == T_HS:
        d = json.loads(m.payload)["data"]
        c.publish(T_HS + "/response/" + d["origin"], json.dumps({"msg_type": "CmdResult", "data": {"type": "result", "data": {"id": d["id"], "retval": "NotFound", "origin": "auth"}}}), qos=1)
def on_connect(cl, u, f, rc, p):
    cl.subscribe([(T_TOKEN, 0), (T_VAL + "/response/auth", 0), (T_HS, 0), (T_AUTH + "/response/auth", 0)])  # as BusClient
def on_subscribe(cl, u, mid, rc, p):
    cl.publish(P + "auth/ready", json.dumps({"msg_type": "ModuleReady", "data": True}), qos=1)
c.on_message, c.on_connect, c.on_subscribe = on_message, on_connect, on_subscribe
stop = threading.Event(); signal.signal(signal.SIGTERM, lambda *a: stop.set())
c.connect(cfg["mqtt"]["host"], cfg["mqtt"]["port"]); c.loop_start(); stop.wait(); c.disconnect(); c.loop_stop()
