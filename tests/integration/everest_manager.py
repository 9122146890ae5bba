"""A stand-in for EVerest's manager, written from its source (spec/EVEREST-MANAGER.md).

Framework commit followed: EVerest/EVerest aa8113f90948764d6a66c816121bb517cae39b96
(lib/everest/framework, v0.25.0). What it does, in the manager's order:

1. publishes the retained start-up definitions (§b: interfaces, interface_definitions/*,
   types, settings, manifests/*, module_names; ConfigurationResponse envelopes, QoS 2);
2. answers ``P config/request`` with the module's config exactly as the manager builds it
   (§c: every manifest config entry, defaults filled, sorted by name, checked against the
   entry's schema; connections in config order with their requirement index);
3. spawns each module that has a ``module.py`` as the manager does (§a: ``python3
   <module.py>`` with no arguments, or ``<dir>/.venv/bin/python3``; EV_* variables set only
   where unset, EV_MODULE always; PYTHONPATH prefixed with everestpy's folder);
4. waits for every awaited module's ModuleReady, then clears the retained topics and
   publishes GlobalReady on ``P ready`` (§d);
5. stops its children with SIGTERM, SIGKILL 5 s later.

It also watches every message under the prefix and records those an EVerest process
could not take (an unknown ``msg_type``, a non-bool ModuleReady): the tests assert none.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import yaml

FRAMEWORK_COMMIT = "aa8113f90948764d6a66c816121bb517cae39b96"

MSG_TYPES = {"Var", "Cmd", "CmdResult", "RaiseError", "ClearError", "ConfigurationRequest",
             "ConfigurationResponse", "Heartbeat", "ModuleReady", "GlobalReady"}
_DATATYPE = {"string": "string", "number": "number", "integer": "integer", "boolean": "bool"}
KILL_AFTER_S = 5.0  # manager.cpp:56-57


def dump(value: Any) -> bytes:
    """nlohmann's dump(): compact, keys sorted."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


class ConfigRefused(Exception):
    """The manager would refuse this config and start nothing (config.cpp:199-239)."""


@dataclass
class ModuleSpec:
    """One entry of the EVerest config (``active_modules``)."""

    module: str                                   # the module name
    config_module: dict[str, Any] = field(default_factory=dict)
    connections: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    mapping: dict[str, Any] | None = None         # e.g. {"implementations": {"evse": {"evse": 1}}}


def _configuration_parameters(manifest: dict[str, Any], given: dict[str, Any]
                              ) -> list[dict[str, Any]]:
    """``!module`` entries as parse_config_map builds them (config.cpp:175-267)."""
    out = []
    for name, entry in sorted(manifest.get("config", {}).items()):
        if name in given:
            value = given[name]
        elif "default" in entry:
            value = entry["default"]
        else:
            raise ConfigRefused(f"missing config entry {name}")
        schema = {k: v for k, v in entry.items() if k not in ("description", "mutability")}
        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as exc:
            raise ConfigRefused(f"{name}: {exc.message}") from None
        if entry["type"] == "number":
            value = float(value)
        out.append({"name": name, "value": value,
                    "characteristics": {"datatype": _DATATYPE[entry["type"]],
                                        "mutability": entry.get("mutability", "ReadOnly")}})
    return out


def build_config_answer(config: dict[str, ModuleSpec], manifests: dict[str, dict[str, Any]],
                        origin: str) -> dict[str, Any]:
    """The ConfigurationResponse for a ``Get``/``Module`` request from ``origin``."""
    if origin not in config:  # mqtt_config_service.cpp:539-544
        return {"msg_type": "ConfigurationResponse",
                "data": {"status": "Error", "status_info": f"Unknown origin module: {origin}",
                         "response": None}}
    spec = config[origin]
    manifest = manifests[spec.module]
    parameters: dict[str, list[dict[str, Any]]] = {
        "!module": _configuration_parameters(manifest, spec.config_module)}
    for impl in manifest.get("provides", {}):
        parameters[impl] = []
    connections: dict[str, list[dict[str, Any]]] = {}
    for req, targets in sorted(spec.connections.items()):
        if not targets:
            continue  # empty YAML lists vanish (config/types.cpp:174-196)
        fulfilments = []
        for index, target in enumerate(targets):
            requirement: dict[str, Any] = {"id": req}
            if index:
                requirement["index"] = index
            fulfilments.append({"module_id": target["module_id"],
                                "implementation_id": target["implementation_id"],
                                "requirement": requirement})
        connections[req] = fulfilments
    mappings: dict[str, Any] = {origin: spec.mapping}
    for targets in spec.connections.values():
        for target in targets:
            other = config.get(target["module_id"])
            mappings[target["module_id"]] = other.mapping if other is not None else None
    module_config = {
        "access": None, "configuration_parameters": parameters, "connections": connections,
        "mapping": None, "module_id": origin, "module_name": spec.module, "standalone": False,
        "telemetry_enabled": False,
    }
    return {"msg_type": "ConfigurationResponse",
            "data": {"response": {"data": {"mappings": mappings, "module_config": module_config},
                                  "type": "Module"},
                     "status": "Ok", "status_info": "", "type": "Get"}}


def check_connections(config: dict[str, ModuleSpec], manifests: dict[str, dict[str, Any]]) -> None:
    """min/max connections of every requirement, as the manager checks them."""
    for mid, spec in config.items():
        for req, entry in manifests[spec.module].get("requires", {}).items():
            n = len(spec.connections.get(req, []))
            low, high = entry.get("min_connections", 1), entry.get("max_connections", 1)
            if not low <= n <= high:
                raise ConfigRefused(f"{mid}: requirement {req}: {n} connections, "
                                    f"needs {low}..{high}")


class ManagerStandIn:
    """``with ManagerStandIn(...) as manager:`` — the manager's side of one charger."""

    def __init__(self, host: str, port: int, modules_dir: Path, config: dict[str, ModuleSpec],
                 *, prefix: str = "everest/", cwd: Path | None = None,
                 extra_manifests: dict[str, dict[str, Any]] | None = None,
                 awaited: list[str] | None = None, answer_config: bool = True,
                 hold_global_ready: bool = False, env: dict[str, str] | None = None,
                 everest_prefix_dir: Path | None = None, socket_path: str | None = None
                 ) -> None:
        self.host, self.port, self.prefix = host, port, prefix
        self.modules_dir = Path(modules_dir)
        self.config = config
        self.cwd = cwd
        self.manifests: dict[str, dict[str, Any]] = dict(extra_manifests or {})
        for spec in config.values():
            path = self.modules_dir / spec.module / "manifest.yaml"
            if path.is_file():
                self.manifests[spec.module] = yaml.safe_load(path.read_text())
        check_connections(config, self.manifests)
        self.spawned = [mid for mid, spec in config.items()
                        if (self.modules_dir / spec.module / "module.py").is_file()]
        self.awaited = list(awaited if awaited is not None else self.spawned)
        self.answer_config = answer_config
        self.hold_global_ready = hold_global_ready  # publish GlobalReady only on release()
        self.env = dict(os.environ if env is None else env)
        self.install_prefix = everest_prefix_dir or Path("/usr")
        self.socket_path = socket_path  # what the modules use; the stand-in itself uses TCP

        self.lock = threading.Lock()
        self.requests: list[tuple[float, bytes]] = []   # config requests as received
        self.ready_at: dict[str, float] = {}
        self.global_ready_at: float | None = None
        self.violations: list[str] = []
        self.messages: list[tuple[float, str, bytes]] = []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self._retained: list[str] = []
        self._released = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=f"manager-{os.getpid()}-{id(self):x}",
                                   protocol=mqtt.MQTTv5)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: self._subscribed.set()

    # --- start, stop ------------------------------------------------------------------

    def start(self, log_dir: Path) -> ManagerStandIn:
        self._client.connect(self.host, self.port, keepalive=20)
        self._client.loop_start()
        if not self._subscribed.wait(5):
            raise RuntimeError("stand-in: no SUBACK from the broker")
        self._publish_startup_metadata()
        for mid in self.spawned:
            self._spawn(mid, log_dir)
        return self

    def release(self) -> None:
        """Let GlobalReady go out (for a stand-in made with ``hold_global_ready``)."""
        self._released.set()
        self._maybe_global_ready()

    def terminate(self, mid: str) -> int | None:
        """SIGTERM as the manager sends it; the exit status, or None if SIGKILL was needed."""
        proc = self.procs[mid]
        if proc.poll() is not None:
            return proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=KILL_AFTER_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            return None

    def stop(self) -> None:
        for mid in list(self.procs):
            self.terminate(mid)
        self._client.loop_stop()
        self._client.disconnect()

    def __enter__(self) -> ManagerStandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_of(self, mid: str) -> str:
        path = self.logs.get(mid)
        return path.read_text(errors="replace") if path and path.exists() else ""

    def wait_ready(self, mid: str, timeout: float = 20.0) -> float:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if mid in self.ready_at:
                    return self.ready_at[mid]
            proc = self.procs.get(mid)
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{mid} exited ({proc.returncode}): {self.log_of(mid)}")
            time.sleep(0.02)
        raise AssertionError(f"no ModuleReady from {mid} within {timeout} s: {self.log_of(mid)}")

    # --- the manager's side -----------------------------------------------------------

    def _pub(self, topic: str, payload: bytes, retain: bool = False, qos: int = 2) -> None:
        self._client.publish(self.prefix + topic, payload, qos=qos, retain=retain)

    def _publish_startup_metadata(self) -> None:
        """§b, manager.cpp:277-354: retained ConfigurationResponse envelopes."""
        def env(data: Any) -> bytes:
            return dump({"msg_type": "ConfigurationResponse", "data": data})

        interfaces = sorted({impl["interface"] for m in self.manifests.values()
                             for impl in m.get("provides", {}).values()})
        items: list[tuple[str, bytes]] = [("interfaces", env(interfaces))]
        for name in interfaces:
            items.append((f"interface_definitions/{name}", env({"cmds": {}, "vars": {}})))
        items.append(("types", env([])))
        prefix = str(self.install_prefix)
        items.append(("settings", env({
            "prefix": prefix, "etc_dir": "/etc/everest", "data_dir": f"{prefix}/share/everest",
            "modules_dir": str(self.modules_dir), "telemetry_prefix": "everest-telemetry/",
            "telemetry_enabled": False, "validate_schema": False, "forward_exceptions": False})))
        for spec in {s.module: s for s in self.config.values()}.values():
            manifest = {k: v for k, v in self.manifests.get(spec.module, {}).items()
                        if k != "config"}
            items.append((f"manifests/{spec.module}", env(manifest)))
        items.append(("module_names", env({mid: s.module for mid, s in self.config.items()})))
        for topic, payload in items:
            self._pub(topic, payload, retain=True)
            self._retained.append(topic)

    def _spawn(self, mid: str, log_dir: Path) -> None:
        """manager.cpp:185-223 and 105-122."""
        module_py = (self.modules_dir / self.config[mid].module / "module.py").resolve()
        env = dict(self.env)
        env["EV_MODULE"] = mid
        defaults = {"EV_PREFIX": str(self.install_prefix),
                    "EV_LOG_CONF_FILE": "/etc/everest/default_logging.cfg",
                    "EV_MQTT_EVEREST_PREFIX": self.prefix, "EV_MQTT_EXTERNAL_PREFIX": ""}
        if self.socket_path:
            defaults["EV_MQTT_BROKER_SOCKET_PATH"] = self.socket_path
        else:
            defaults.update(EV_MQTT_BROKER_HOST=self.host, EV_MQTT_BROKER_PORT=str(self.port))
        for key, value in defaults.items():
            env.setdefault(key, value)
        everestpy = f"{self.install_prefix}/lib/everest/everestpy"
        env["PYTHONPATH"] = f"{everestpy}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else everestpy
        python = "python3"
        venv = module_py.parent / ".venv"
        if (venv / "bin" / "python3").exists():
            python = str(venv / "bin" / "python3")
            env.update(VIRTUAL_ENV=str(venv), VIRTUAL_ENV_PROMPT="venv")
            env.pop("PYTHONHOME", None)
            env["PATH"] = f"{venv / 'bin'}:{env['PATH']}" if env.get("PATH") else str(venv / "bin")
        log_path = log_dir / f"{mid}.log"
        self.logs[mid] = log_path
        with open(log_path, "ab") as out:
            # execvp semantics: "python3" is looked up on the child's PATH.
            self.procs[mid] = subprocess.Popen(
                [python, str(module_py)], env=env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                executable=_which(python, env.get("PATH", "")))

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        client.subscribe(self.prefix + "#", qos=2)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        topic = msg.topic[len(self.prefix):]
        payload = bytes(msg.payload)
        with self.lock:
            self.messages.append((now, topic, payload))
        if not payload:
            return
        try:
            envelope = json.loads(payload)
        except ValueError:
            self._violation(f"{topic}: not JSON")  # dropped with a warning by EVerest
            return
        msg_type = envelope.get("msg_type") if isinstance(envelope, dict) else None
        if isinstance(msg_type, str) and msg_type not in MSG_TYPES:
            self._violation(f"{topic}: unknown msg_type {msg_type!r} (exit(1) in EVerest)")
        problem = envelope_problem(msg_type, envelope.get("data") if isinstance(envelope, dict)
                                   else None)
        if problem:
            self._violation(f"{topic}: {problem}")
        if topic == "config/request" and msg_type == "ConfigurationRequest":
            with self.lock:
                self.requests.append((now, payload))
            if self.answer_config:
                self._answer(envelope)
        elif topic.startswith("modules/") and topic.endswith("/ready") and msg_type == "ModuleReady":
            mid = topic[len("modules/"):-len("/ready")]
            if not isinstance(envelope.get("data"), bool):
                self._violation(f"{topic}: non-bool ModuleReady data (terminates the manager)")
                return
            if envelope["data"]:
                with self.lock:
                    self.ready_at.setdefault(mid, now)
                self._maybe_global_ready()

    def _answer(self, envelope: dict[str, Any]) -> None:
        data = envelope.get("data")
        if not (isinstance(data, dict) and data.get("type") == "Get"
                and isinstance(data.get("origin"), str)
                and data.get("request") == {"type": "Module"}):
            return  # does not parse: no answer at all (mqtt_config_service.cpp:529, 565-579)
        origin = data["origin"]
        answer = build_config_answer(self.config, self.manifests, origin)
        self._pub(f"modules/{origin}/response", dump(answer))

    def _maybe_global_ready(self) -> None:
        with self.lock:
            if not all(mid in self.ready_at for mid in self.awaited):
                return
            if self.hold_global_ready and not self._released.is_set():
                return
            first = self.global_ready_at is None
            if first:
                self.global_ready_at = time.monotonic()
        if first:  # manager.cpp:1196-1221: clear retained topics, then GlobalReady
            for topic in self._retained:
                self._pub(topic, b"", retain=True, qos=0)
        self._pub("ready", dump({"msg_type": "GlobalReady", "data": True}))

    def _violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)


_ERROR_FIELDS = ("type", "sub_type", "description", "message", "severity", "origin",
                 "vendor_id", "state", "timestamp", "uuid")


def envelope_problem(msg_type: Any, data: Any) -> str | None:
    """What a C++ receiver would die of (it reads these fields with ``.at()``, §e)."""
    if msg_type == "Var":
        return None if isinstance(data, dict) and "data" in data else "Var without data.data"
    if msg_type == "Cmd":
        ok = isinstance(data, dict) and isinstance(data.get("id"), str) \
            and isinstance(data.get("origin"), str) and isinstance(data.get("args"), dict)
        return None if ok else "Cmd without id, origin or args"
    if msg_type == "CmdResult":
        inner = data.get("data") if isinstance(data, dict) else None
        if not (isinstance(data, dict) and data.get("type") == "result"
                and isinstance(inner, dict) and isinstance(inner.get("id"), str)
                and isinstance(inner.get("origin"), str)):
            return "CmdResult without type result, data.id or data.origin"
        error = inner.get("error")
        if error is not None and not (isinstance(error, dict) and set(error) == {
                "__everest__error_type", "__everest__error_msg"}):
            return f"CmdResult error not in the framework's shape: {error!r}"
        if error is None and "retval" not in inner:
            return "CmdResult without retval or error"
        return None
    if msg_type in ("RaiseError", "ClearError"):
        missing = [k for k in _ERROR_FIELDS if not isinstance(data, dict) or k not in data]
        return f"{msg_type} without {missing}" if missing else None
    return None


def _which(program: str, path: str) -> str:
    if os.sep in program:
        return program
    for folder in path.split(os.pathsep):
        candidate = Path(folder) / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError(f"{program} not on PATH={path}")
