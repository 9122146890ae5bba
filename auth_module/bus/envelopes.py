"""JSON envelopes of the EVerest MQTT bus (and its topics, from :mod:`.topics`), as pure functions.

Kept free of paho so the wire format (``shared/spec/CONTRACT.md`` §3) can be unit-tested
and reused by tools without a broker. Builders return plain dicts; :func:`encode` turns them
into bytes. Parsers take bytes, str or an already-decoded dict and raise
:class:`EnvelopeError` with a readable reason on anything that is not the expected shape,
so callers can log one line and drop (or answer ``MessageParsingError``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import uuid as _uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..text import format_utc as utc_timestamp  # re-exported: the envelopes' timestamp form
from .errors import EnvelopeError
from .topics import (
    cmd_response_topic,
    cmd_response_wildcard,
    cmd_topic,
    error_topic,
    ready_topic,
    var_topic,
)

__all__ = [
    "CMD_ERROR_TYPES",
    "ERROR_MSG_KEY",
    "ERROR_SEVERITIES",
    "ERROR_STATES",
    "ERROR_TYPE_KEY",
    "MSG_TYPES",
    "CmdMessage",
    "CmdResultMessage",
    "EnvelopeError",
    "ErrorMessage",
    "Payload",
    "clear_error_envelope",
    "cmd_envelope",
    "cmd_error_envelope",
    "cmd_response_topic",
    "cmd_response_wildcard",
    "cmd_result_envelope",
    "cmd_topic",
    "decode",
    "encode",
    "error_topic",
    "new_call_id",
    "parse_cmd",
    "parse_cmd_result",
    "parse_error",
    "parse_ready",
    "parse_var",
    "raise_error_envelope",
    "ready_envelope",
    "ready_topic",
    "salvage_cmd_id_origin",
    "utc_timestamp",
    "var_envelope",
    "var_topic",
]

#: The error types a command answer may carry (CONTRACT.md §3; EVerest's framework,
#: ``lib/conversions.cpp``). A C++ receiver turns any other string into an exception that
#: ends its process, so nothing else may ever be sent.
CMD_ERROR_TYPES: frozenset[str] = frozenset(
    {"MessageParsingError", "SchemaValidationError", "HandlerException", "CmdTimeout", "Shutdown",
     "NotReady"}
)
#: The keys of a command error object, as EVerest's ``utils/conversions.hpp`` names them.
ERROR_TYPE_KEY = "__everest__error_type"
ERROR_MSG_KEY = "__everest__error_msg"

#: Every ``msg_type`` the EVerest framework knows (its ``lib/types.cpp``). Any other string
#: under the prefix makes each EVerest process that reads it exit, so we never publish one.
MSG_TYPES: frozenset[str] = frozenset(
    {"Var", "Cmd", "CmdResult", "RaiseError", "ClearError", "ConfigurationRequest",
     "ConfigurationResponse", "Heartbeat", "ModuleReady", "GlobalReady"}
)

Payload = bytes | bytearray | memoryview | str | Mapping[str, Any]


# --- builders ----------------------------------------------------------------------------


# Call ids are UUID-shaped (version 4, RFC 4122 variant), as EVerest's are: 64 random bits
# drawn once per process, then a counter, so ids are unique and cost no entropy per call.
_ID_HIGH = (int.from_bytes(os.urandom(8), "big") & ~(0xF << 12)) | (0x4 << 12)
_ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4), "big"))
_ID_LOW_MASK = (1 << 62) - 1


def new_call_id() -> str:
    """A fresh command call id: a UUID string, unique in this process and across them."""
    h = "%016x%016x" % (_ID_HIGH, (0b10 << 62) | (next(_ID_COUNTER) & _ID_LOW_MASK))
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def var_envelope(value: Any) -> dict[str, Any]:
    """``{"msg_type": "Var", "data": {"data": VALUE}}``."""
    return {"msg_type": "Var", "data": {"data": value}}


def cmd_envelope(call_id: str, args: Mapping[str, Any] | None, origin: str) -> dict[str, Any]:
    """``{"msg_type": "Cmd", "data": {"id", "args", "origin"}}``; ``origin`` is the caller."""
    return {"msg_type": "Cmd", "data": {"id": call_id, "args": dict(args or {}), "origin": origin}}


def cmd_result_envelope(call_id: str, retval: Any, origin: str) -> dict[str, Any]:
    """A successful answer; ``origin`` is the answering module. ``None`` becomes ``null``."""
    return {
        "msg_type": "CmdResult",
        "data": {"type": "result", "data": {"id": call_id, "retval": retval, "origin": origin}},
    }


def cmd_error_envelope(call_id: str, error_type: str, msg: str, origin: str) -> dict[str, Any]:
    """An error answer: ``error: {__everest__error_type, __everest__error_msg}`` in place of
    ``retval``. EVerest's callers read both keys with ``.at()``, so both are always there."""
    if error_type not in CMD_ERROR_TYPES:
        raise ValueError(f"unknown command error type {error_type!r}")
    return {
        "msg_type": "CmdResult",
        "data": {
            "type": "result",
            "data": {
                "id": call_id,
                "error": {ERROR_TYPE_KEY: error_type, ERROR_MSG_KEY: str(msg)},
                "origin": origin,
            },
        },
    }


#: What an error's ``state`` may be (EVerest's ``utils/error.hpp``).
ERROR_STATES: frozenset[str] = frozenset({"Active", "ClearedByModule", "ClearedByReboot"})
ERROR_SEVERITIES: frozenset[str] = frozenset({"Low", "Medium", "High"})


def _error_envelope(
    msg_type: str,
    module_id: str,
    impl_id: str,
    error_type: str,
    message: str,
    severity: str,
    state: str,
    uuid: str | None,
    timestamp: str | None,
    description: str,
    sub_type: str,
    vendor_id: str,
) -> dict[str, Any]:
    # Every field EVerest's error_json.hpp writes: its readers take each one with .at(), so
    # a missing one ends the reading module.
    if state not in ERROR_STATES:
        raise ValueError(f"unknown error state {state!r}")
    if severity not in ERROR_SEVERITIES:
        raise ValueError(f"unknown error severity {severity!r}")
    return {
        "msg_type": msg_type,
        "data": {
            "type": error_type,
            "sub_type": sub_type,
            "description": description,
            "message": message,
            "severity": severity,
            "origin": {"module_id": module_id, "implementation_id": impl_id},
            "vendor_id": vendor_id,
            "state": state,
            "timestamp": timestamp or utc_timestamp(),
            "uuid": uuid or str(_uuid.uuid4()),
        },
    }


def raise_error_envelope(
    module_id: str,
    impl_id: str,
    error_type: str,
    message: str = "",
    *,
    severity: str = "High",
    state: str = "Active",
    uuid: str | None = None,
    timestamp: str | None = None,
    description: str = "",
    sub_type: str = "",
    vendor_id: str = "",
) -> dict[str, Any]:
    """A ``RaiseError`` envelope; ``module_id``/``impl_id`` are the raiser (the origin)."""
    return _error_envelope(
        "RaiseError", module_id, impl_id, error_type, message, severity, state, uuid, timestamp,
        description, sub_type, vendor_id,
    )


def clear_error_envelope(
    module_id: str,
    impl_id: str,
    error_type: str,
    message: str = "",
    *,
    severity: str = "High",
    state: str = "ClearedByModule",
    uuid: str | None = None,
    timestamp: str | None = None,
    description: str = "",
    sub_type: str = "",
    vendor_id: str = "",
) -> dict[str, Any]:
    """A ``ClearError`` envelope: the raise's body with ``state: ClearedByModule`` (or
    ``ClearedByReboot``), as EVerest's error manager writes it (CONTRACT.md §3)."""
    return _error_envelope(
        "ClearError", module_id, impl_id, error_type, message, severity, state, uuid, timestamp,
        description, sub_type, vendor_id,
    )


def ready_envelope() -> dict[str, Any]:
    """``{"msg_type": "ModuleReady", "data": true}``."""
    return {"msg_type": "ModuleReady", "data": True}


# json.dumps() with any non-default option builds a new encoder per call; keep one.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(envelope: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON. Raises ``TypeError``/``ValueError`` if not JSON-able."""
    return _ENCODER.encode(envelope).encode()


# --- parsers -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CmdMessage:
    """An incoming command call."""

    id: str
    args: dict[str, Any]
    origin: str


@dataclass(frozen=True, slots=True)
class CmdResultMessage:
    """An answer to one of our calls: ``error`` is ``(error type, message)`` or ``None``."""

    id: str
    origin: str | None
    retval: Any = None
    error: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """A raised (``raised=True``) or cleared error; ``data`` is the envelope's ``data``."""

    raised: bool
    data: dict[str, Any]


def decode(payload: Payload) -> dict[str, Any]:
    """JSON object from ``payload``; anything else is an :class:`EnvelopeError`."""
    # Bytes first: it is what paho hands over for every message, and the Mapping check is
    # an ABC lookup that costs more than the rest of the type tests together.
    if isinstance(payload, (bytes, bytearray, memoryview)):
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvelopeError(f"payload is not UTF-8: {exc}") from None
    elif isinstance(payload, str):
        text = payload
    elif isinstance(payload, Mapping):
        return dict(payload)
    else:
        raise EnvelopeError(f"payload must be bytes or str, not {type(payload).__name__}")
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise EnvelopeError(f"payload is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EnvelopeError(f"payload must be a JSON object, got {type(obj).__name__}")
    return obj


def _expect_type(env: dict[str, Any], msg_type: str | tuple[str, ...]) -> str:
    wanted = (msg_type,) if isinstance(msg_type, str) else msg_type
    got = env.get("msg_type")
    if got not in wanted:
        raise EnvelopeError(f"msg_type must be {' or '.join(map(repr, wanted))}, got {got!r}")
    return got


def _expect_obj(parent: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    if key not in parent:
        raise EnvelopeError(f"{where}.{key} is missing")
    value = parent[key]
    if not isinstance(value, dict):
        raise EnvelopeError(f"{where}.{key} must be an object, got {type(value).__name__}")
    return value


def _expect_str(parent: dict[str, Any], key: str, where: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise EnvelopeError(f"{where}.{key} must be a non-empty string, got {value!r}")
    return value


def parse_var(payload: Payload) -> Any:
    """The value of a ``Var`` envelope (may be ``None`` if the publisher sent null)."""
    env = decode(payload)
    _expect_type(env, "Var")
    data = _expect_obj(env, "data", "envelope")
    if "data" not in data:
        raise EnvelopeError("envelope.data.data is missing")
    return data["data"]


def _topic_safe(value: str) -> bool:
    """An origin becomes a topic segment of the answer, so it must be one plain segment."""
    return bool(value) and not any(c in value for c in "/+#\x00")


def parse_cmd(payload: Payload) -> CmdMessage:
    """An incoming ``Cmd``. A missing ``args`` counts as ``{}``; a non-object one is an error."""
    env = decode(payload)
    _expect_type(env, "Cmd")
    data = _expect_obj(env, "data", "envelope")
    call_id = _expect_str(data, "id", "data")
    origin = _expect_str(data, "origin", "data")
    if not _topic_safe(origin):
        raise EnvelopeError(f"data.origin must be a module id without '/', '+' or '#', got {origin!r}")
    args = data.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise EnvelopeError(f"data.args must be an object, got {type(args).__name__}")
    return CmdMessage(id=call_id, args=args, origin=origin)


_ID_RE = re.compile(r'"id"\s*:\s*"((?:[^"\\]|\\.){1,200})"')
_ORIGIN_RE = re.compile(r'"origin"\s*:\s*"((?:[^"\\]|\\.){1,200})"')


def salvage_cmd_id_origin(payload: Payload) -> tuple[str, str] | None:
    """``(id, origin)`` of a command that failed :func:`parse_cmd`, if they can be read at all.

    Lets a broken call still get a ``MessageParsingError`` answer instead of leaving the
    caller to time out. Tries the JSON structure first, then a regex over the raw text.
    """
    try:
        env = decode(payload)
    except EnvelopeError:
        env = None
    if env is not None:
        data = env.get("data")
        if isinstance(data, dict):
            cid, origin = data.get("id"), data.get("origin")
            if isinstance(cid, str) and cid and isinstance(origin, str) and _topic_safe(origin):
                return cid, origin
        return None
    if isinstance(payload, (bytes, bytearray, memoryview)):
        text = bytes(payload).decode("utf-8", errors="replace")
    elif isinstance(payload, str):
        text = payload
    else:
        return None
    m_id, m_origin = _ID_RE.search(text), _ORIGIN_RE.search(text)
    if not m_id or not m_origin:
        return None
    try:
        cid = json.loads(f'"{m_id.group(1)}"')
        origin = json.loads(f'"{m_origin.group(1)}"')
    except json.JSONDecodeError:
        return None
    if not cid or not _topic_safe(origin):
        return None
    return cid, origin


def parse_cmd_result(payload: Payload) -> CmdResultMessage:
    """An answer to a call. ``retval`` absent without ``error`` reads as ``None`` (null)."""
    env = decode(payload)
    _expect_type(env, "CmdResult")
    outer = _expect_obj(env, "data", "envelope")
    if outer.get("type") != "result":
        raise EnvelopeError(f"data.type must be 'result', got {outer.get('type')!r}")
    inner = _expect_obj(outer, "data", "data")
    call_id = _expect_str(inner, "id", "data.data")
    origin = inner.get("origin")
    if origin is not None and not isinstance(origin, str):
        raise EnvelopeError(f"data.data.origin must be a string, got {origin!r}")
    if "error" in inner and inner["error"] is not None:
        err = inner["error"]
        if not isinstance(err, dict):
            raise EnvelopeError(f"data.data.error must be an object, got {type(err).__name__}")
        error_type = err.get(ERROR_TYPE_KEY)
        if error_type not in CMD_ERROR_TYPES:
            # Still an error answer: the call fails now instead of timing out later.
            return CmdResultMessage(id=call_id, origin=origin,
                                    error=("HandlerException", f"unreadable error answer: {_short(err)}"))
        msg = err.get(ERROR_MSG_KEY, "")
        return CmdResultMessage(id=call_id, origin=origin,
                                error=(error_type, "" if msg is None else str(msg)))
    return CmdResultMessage(id=call_id, origin=origin, retval=inner.get("retval"))


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_error(payload: Payload) -> ErrorMessage:
    """A ``RaiseError`` or ``ClearError``; the body must at least name its ``type``."""
    env = decode(payload)
    msg_type = _expect_type(env, ("RaiseError", "ClearError"))
    data = _expect_obj(env, "data", "envelope")
    _expect_str(data, "type", "data")
    return ErrorMessage(raised=msg_type == "RaiseError", data=data)


def parse_ready(payload: Payload) -> bool:
    """The flag of a ``ModuleReady`` envelope."""
    env = decode(payload)
    _expect_type(env, "ModuleReady")
    value = env.get("data")
    if not isinstance(value, bool):
        raise EnvelopeError(f"envelope.data must be a boolean, got {value!r}")
    return value
