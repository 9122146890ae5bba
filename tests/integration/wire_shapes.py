"""What an EVerest process accepts under the prefix, as a checker for recorded traffic.

EVerest's C++ side reads every envelope field with ``.at()`` and exits on a ``msg_type`` it
does not know (``shared/spec/EVEREST-MANAGER.md`` §0 and §(e)), so a message that is merely
"close" is fatal to a real EVerest station. :func:`envelope_problems` lists what is wrong
with one recorded message; an empty list means the framework would take it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from auth_module.bus.envelopes import (
    CMD_ERROR_TYPES,
    ERROR_MSG_KEY,
    ERROR_SEVERITIES,
    ERROR_STATES,
    ERROR_TYPE_KEY,
    MSG_TYPES,
)

__all__ = ["envelope_problems"]

_ERROR_KEYS = {"type", "sub_type", "description", "message", "severity", "origin", "vendor_id",
               "state", "timestamp", "uuid"}
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
_SEG = r"[^/+#]+"


def _topic(prefix: str, rest: str) -> re.Pattern[str]:
    return re.compile(re.escape(prefix) + rest)


def envelope_problems(prefix: str, topic: str, payload: bytes) -> list[str]:
    """Every way ``payload`` on ``topic`` differs from an envelope EVerest would accept."""
    try:
        env = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"not JSON: {exc}"]
    if not isinstance(env, dict):
        return ["not a JSON object"]
    msg_type = env.get("msg_type")
    if msg_type not in MSG_TYPES:
        return [f"msg_type {msg_type!r} is not one of EVerest's (its readers exit)"]
    if set(env) != {"msg_type", "data"}:
        return [f"envelope keys {sorted(env)} != ['data', 'msg_type']"]
    data = env["data"]
    check = _CHECKS.get(msg_type)
    if check is None:
        return [f"{msg_type} is the manager's; neither the module nor a simulator sends it"]
    return check(prefix, topic, data)


def _var(prefix: str, topic: str, data: Any) -> list[str]:
    problems = []
    if not _topic(prefix, rf"modules/{_SEG}/impl/{_SEG}/var/{_SEG}").fullmatch(topic):
        problems.append("Var on a topic that is not .../impl/IID/var/NAME")
    if not isinstance(data, dict) or set(data) != {"data"}:
        problems.append("Var data must be exactly {\"data\": VALUE}")
    return problems


def _cmd(prefix: str, topic: str, data: Any) -> list[str]:
    problems = []
    if not _topic(prefix, rf"modules/{_SEG}/impl/{_SEG}/cmd/{_SEG}").fullmatch(topic):
        problems.append("Cmd on a topic that is not .../impl/IID/cmd/NAME")
    if not isinstance(data, dict) or set(data) != {"id", "args", "origin"}:
        return problems + ["Cmd data must have exactly id, args, origin"]
    if not isinstance(data["id"], str) or not data["id"]:
        problems.append("Cmd id must be a non-empty string")
    if not isinstance(data["args"], dict):
        problems.append("Cmd args must be an object")
    if not isinstance(data["origin"], str) or not data["origin"]:
        problems.append("Cmd origin must be a non-empty string")
    return problems


def _cmd_result(prefix: str, topic: str, data: Any) -> list[str]:
    problems = []
    m = _topic(prefix, rf"modules/{_SEG}/impl/{_SEG}/cmd/{_SEG}/response/({_SEG})").fullmatch(topic)
    if not m:
        problems.append("CmdResult on a topic that is not .../cmd/NAME/response/CALLER")
    if not isinstance(data, dict) or data.get("type") != "result" or set(data) != {"type", "data"}:
        return problems + ["CmdResult data must be {\"type\": \"result\", \"data\": {...}}"]
    inner = data["data"]
    if not isinstance(inner, dict):
        return problems + ["CmdResult data.data must be an object"]
    if not isinstance(inner.get("id"), str) or not inner["id"]:
        problems.append("CmdResult needs data.data.id")
    if not isinstance(inner.get("origin"), str) or not inner["origin"]:
        problems.append("CmdResult needs data.data.origin (the answering module)")
    if "error" in inner:
        err = inner["error"]
        if set(inner) - {"id", "origin", "error", "retval"}:
            problems.append(f"CmdResult error answer has extra keys {sorted(inner)}")
        if not isinstance(err, dict) or set(err) != {ERROR_TYPE_KEY, ERROR_MSG_KEY}:
            problems.append(f"command error must be {{{ERROR_TYPE_KEY}, {ERROR_MSG_KEY}}}, got {err!r}")
        elif err[ERROR_TYPE_KEY] not in CMD_ERROR_TYPES or not isinstance(err[ERROR_MSG_KEY], str):
            problems.append(f"command error type {err[ERROR_TYPE_KEY]!r} is not one of EVerest's")
    elif set(inner) != {"id", "origin", "retval"}:
        problems.append(f"CmdResult data.data keys {sorted(inner)} != ['id', 'origin', 'retval']")
    return problems


def _error(raised: bool) -> Any:
    def check(prefix: str, topic: str, data: Any) -> list[str]:
        problems = []
        m = _topic(prefix, rf"modules/({_SEG})/impl/({_SEG})/error/({_SEG}/{_SEG})").fullmatch(topic)
        if not m:
            problems.append("error on a topic that is not .../impl/IID/error/NS/NAME")
        if not isinstance(data, dict) or set(data) != _ERROR_KEYS:
            got = sorted(data) if isinstance(data, dict) else data
            return problems + [f"error object keys {got} != {sorted(_ERROR_KEYS)}"]
        for key in ("type", "sub_type", "description", "message", "vendor_id", "uuid"):
            if not isinstance(data[key], str):
                problems.append(f"error {key} must be a string")
        if data["severity"] not in ERROR_SEVERITIES:
            problems.append(f"error severity {data['severity']!r}")
        if raised and data["state"] != "Active":
            problems.append(f"a raised error has state {data['state']!r}, not Active")
        if not raised and data["state"] not in ERROR_STATES - {"Active"}:
            problems.append(f"a cleared error has state {data['state']!r}, not ClearedBy...")
        if not isinstance(data["timestamp"], str) or not _RFC3339.fullmatch(data["timestamp"]):
            problems.append(f"error timestamp {data['timestamp']!r} is not RFC 3339")
        origin = data["origin"]
        if not isinstance(origin, dict) or not {"module_id", "implementation_id"} <= set(origin):
            problems.append("error origin needs module_id and implementation_id")
        elif m and (origin["module_id"], origin["implementation_id"], data["type"]) != m.groups():
            problems.append("error origin/type do not match its topic")
        return problems
    return check


def _ready(prefix: str, topic: str, data: Any) -> list[str]:
    problems = []
    if not _topic(prefix, rf"modules/{_SEG}/ready").fullmatch(topic):
        problems.append("ModuleReady on a topic that is not modules/MID/ready")
    if data is not True:
        problems.append("ModuleReady data must be true")
    return problems


_CHECKS = {
    "Var": _var,
    "Cmd": _cmd,
    "CmdResult": _cmd_result,
    "RaiseError": _error(True),
    "ClearError": _error(False),
    "ModuleReady": _ready,
}
