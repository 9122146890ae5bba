"""Token provider ``stdin``: type a token and Enter, for bench tests.

::

    - plugin: stdin
      debounce_s: 0              # e.g. to present the same token twice in a row

Each non-empty line of the module's standard input is one token (normalised like every
UID: ``04:a2:2b:1c`` -> ``04A22B1C``; other text is upper-cased). At the end of the input
(Ctrl-D, or a service whose stdin is /dev/null) the provider stops, saying so once.
"""

from __future__ import annotations

import os
import select
import sys
from typing import Any

from .base import PluginContext
from .loader import register_options_model
from .providers import LineDecoder, ProviderOptions, ReaderProvider

__all__ = ["StdinOptions", "StdinProvider", "create"]


@register_options_model
class StdinOptions(ProviderOptions):
    pass


class StdinProvider(ReaderProvider):
    """Reads lines from a file descriptor (standard input unless ``fd`` is given)."""

    kind = "stdin"

    poll_s = 0.2

    def __init__(self, options: StdinOptions, fd: int | None = None, **kwargs: Any) -> None:
        super().__init__("stdin", options, **kwargs)
        self._fd = fd
        #: set once the end of the input was reached
        self.ended = False

    def read_loop(self) -> None:
        fd = self._fd if self._fd is not None else sys.stdin.fileno()
        decoder = LineDecoder()
        self.opened("standard input")
        while not self.stopping.is_set():
            ready, _, _ = select.select([fd], [], [], self.poll_s)
            if not ready:
                continue
            data = os.read(fd, 4096)
            if not data:
                for line in decoder.feed(b"\n"):  # a last line without newline
                    self.emit(line)
                self.ended = True
                self.log.info("token provider stdin: end of input; no more tokens from it")
                self.stopping.set()
                return
            for line in decoder.feed(data):
                self.emit(line)


def create(options: dict[str, Any], context: PluginContext) -> StdinProvider:
    return StdinProvider(StdinOptions.model_validate(options))
