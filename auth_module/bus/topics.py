"""The topics of the EVerest MQTT bus (CONTRACT.md §3), as pure functions."""

from __future__ import annotations

import functools


def _segment(kind: str, value: str, *, slashes: bool = False) -> str:
    """Refuse empty or wildcard segments: a typo there would silently subscribe to nothing
    (or to everything)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} must be a non-empty string, got {value!r}")
    if "+" in value or "#" in value or "\x00" in value:
        raise ValueError(f"{kind} must not contain MQTT wildcards: {value!r}")
    if not slashes and "/" in value:
        raise ValueError(f"{kind} must not contain '/': {value!r}")
    return value


def _impl_base(prefix: str, module_id: str, impl_id: str) -> str:
    return (
        f"{prefix}modules/{_segment('module_id', module_id)}"
        f"/impl/{_segment('implementation_id', impl_id)}"
    )


# A module publishes to the same few topics over and over: build (and check) each once.
@functools.lru_cache(maxsize=1024)
def var_topic(prefix: str, module_id: str, impl_id: str, name: str) -> str:
    """``P modules/MID/impl/IID/var/NAME``."""
    return f"{_impl_base(prefix, module_id, impl_id)}/var/{_segment('var name', name)}"


@functools.lru_cache(maxsize=1024)
def cmd_topic(prefix: str, module_id: str, impl_id: str, name: str) -> str:
    """``P modules/MID/impl/IID/cmd/NAME`` (where calls to MID are published)."""
    return f"{_impl_base(prefix, module_id, impl_id)}/cmd/{_segment('cmd name', name)}"


@functools.lru_cache(maxsize=1024)
def cmd_response_topic(prefix: str, module_id: str, impl_id: str, name: str, caller_id: str) -> str:
    """``P modules/MID/impl/IID/cmd/NAME/response/CALLER_MID`` (where MID answers)."""
    return f"{cmd_topic(prefix, module_id, impl_id, name)}/response/{_segment('caller id', caller_id)}"


def cmd_response_wildcard(prefix: str, caller_id: str) -> str:
    """The one filter that catches every answer addressed to ``caller_id``."""
    return f"{prefix}modules/+/impl/+/cmd/+/response/{_segment('caller id', caller_id)}"


def error_topic(prefix: str, module_id: str, impl_id: str, error_type: str) -> str:
    """``P modules/MID/impl/IID/error/TYPE``; TYPE has a slash (``evse_manager/Inoperative``)."""
    return f"{_impl_base(prefix, module_id, impl_id)}/error/{_segment('error type', error_type, slashes=True)}"


def ready_topic(prefix: str, module_id: str) -> str:
    """``P modules/MID/ready``."""
    return f"{prefix}modules/{_segment('module_id', module_id)}/ready"


