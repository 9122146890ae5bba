"""Commands other modules call on us: each answered exactly once, on a bounded worker pool."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..text import exception_line
from .envelopes import (
    EnvelopeError,
    cmd_error_envelope,
    cmd_response_topic,
    cmd_result_envelope,
    encode,
    parse_cmd,
    salvage_cmd_id_origin,
)

CommandHandler = Callable[[dict[str, Any]], Any]
Validator = Callable[[dict[str, Any]], str | None]
Publish = Callable[[str, bytes], None]

_HANDLER_EVENTS = frozenset({"HandlerException", "NotReady", "CmdTimeout", "Shutdown"})


@dataclass(frozen=True, slots=True)
class _Command:
    impl_id: str
    name: str
    handler: CommandHandler
    validate: Validator | None


class IncomingCommands:
    """The commands we provide, by topic, and the workers that run them.

    The reading thread only looks the command up and hands it to a worker
    (:meth:`dispatch`), so a handler may itself call other modules and wait.
    """

    def __init__(self, module_id: str, prefix: str, publish: Publish, workers: int,
                 log: Any) -> None:
        self.module_id = module_id
        self.prefix = prefix
        self._publish = publish
        self._log = log
        # Replaced, never mutated, so the reading thread reads it lock-free.
        self._commands: dict[str, _Command] = {}
        self._workers = ThreadPoolExecutor(max_workers=workers,
                                           thread_name_prefix=f"bus-cmd-{module_id}")

    def add(self, topic: str, impl_id: str, name: str, handler: CommandHandler,
            validate: Validator | None) -> None:
        """Caller holds the client's lock (one writer at a time)."""
        if topic in self._commands:
            raise ValueError(f"command {impl_id}/{name} is already provided")
        self._commands = {**self._commands, topic: _Command(impl_id, name, handler, validate)}

    def stop(self) -> None:
        self._workers.shutdown(wait=False, cancel_futures=True)

    def dispatch(self, topic: str, payload: bytes) -> None:
        """A call arrived (the reading thread): queue it for a worker."""
        entry = self._commands.get(topic)
        if entry is None:
            return
        try:
            self._workers.submit(self._run, entry, payload)
        except RuntimeError:
            self._log.warning("command dropped: bus is stopping", topic=topic)

    def _run(self, entry: _Command, payload: bytes) -> None:
        label = f"{entry.impl_id}/{entry.name}"
        try:
            try:
                cmd = parse_cmd(payload)
            except EnvelopeError as exc:
                salvaged = salvage_cmd_id_origin(payload)
                if salvaged is None:
                    self._log.warning("malformed command dropped: no id/origin to answer",
                                      cmd=label, reason=str(exc))
                    return
                self._log.warning("malformed command answered", cmd=label, reason=str(exc))
                self._answer_error(entry, salvaged[0], salvaged[1], "MessageParsingError",
                                   str(exc))
                return
            if entry.validate is not None:
                try:
                    problem = entry.validate(cmd.args)
                except Exception as exc:
                    problem = exception_line(exc)
                if problem:
                    self._log.info("command refused by validation", cmd=label, origin=cmd.origin)
                    self._answer_error(entry, cmd.id, cmd.origin, "SchemaValidationError",
                                       str(problem))
                    return
            try:
                retval = entry.handler(cmd.args)
            except Exception as exc:
                # A handler may name the error event itself (e.g. NotReady) with an ``event``
                # attribute on its exception; anything else is a HandlerException.
                event = getattr(exc, "event", None)
                if event not in _HANDLER_EVENTS:
                    event = "HandlerException"
                    self._log.error("command handler failed", cmd=label, origin=cmd.origin,
                                    error=exception_line(exc))
                self._answer_error(entry, cmd.id, cmd.origin, event,
                                   str(exc) or type(exc).__name__)
                return
            try:
                body = encode(cmd_result_envelope(cmd.id, retval, self.module_id))
            except (TypeError, ValueError) as exc:
                self._log.error("command result is not JSON", cmd=label,
                                error=exception_line(exc))
                self._answer_error(entry, cmd.id, cmd.origin, "HandlerException",
                                   f"result is not JSON: {exc}")
                return
            topic = cmd_response_topic(self.prefix, self.module_id, entry.impl_id, entry.name,
                                       cmd.origin)
            self._publish(topic, body)
        except Exception as exc:  # last resort: a worker must never die silently
            self._log.error("command processing failed", cmd=label, error=exception_line(exc))

    def _answer_error(self, entry: _Command, call_id: str, origin: str, event: str,
                      msg: str) -> None:
        topic = cmd_response_topic(self.prefix, self.module_id, entry.impl_id, entry.name, origin)
        self._publish(topic, encode(cmd_error_envelope(call_id, event, msg, self.module_id)))
