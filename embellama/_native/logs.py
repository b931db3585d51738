# SPDX-License-Identifier: Apache-2.0
"""llama.cpp's log lines into Python logging, on a channel of their own (:data:`LLAMA_LOGGER_NAME`).

llama.cpp is chatty at INFO, so until a level is set on that logger itself, only its warnings
and errors are passed on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["LLAMA_LOGGER_NAME", "LogRoute"]

LLAMA_LOGGER_NAME = "embellama.llama_cpp"
"""The logger llama.cpp's own lines go to (not the logger of the module that routes them)."""
llama_logger = logging.getLogger(LLAMA_LOGGER_NAME)
logging.getLogger("embellama").addHandler(logging.NullHandler())

# ggml_log_level: DEBUG 1, INFO 2, WARN 3, ERROR 4; CONT (5) continues the previous line.
_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_CONTINUE = 5


class LogRoute:
    """The log callback installed in one library, with what it needs to stay alive.

    Parameters
    ----------
    ffi, lib
        The library's FFI and its opened ``lib``.
    """

    def __init__(self, ffi: Any, lib: Any) -> None:
        self._ffi = ffi
        self._lib = lib
        self._local = threading.local()  # llama.cpp logs from several threads; each assembles its own lines
        self._collected: list[str] | None = None
        self.callback: Any = None
        """The cffi callback while installed (C holds a pointer to it), else None."""

    def install(self) -> None:
        """Make llama.cpp log through :data:`llama_logger`."""
        self.callback = self._ffi.callback("ggml_log_callback", self._on_log)
        self._lib.llama_log_set(self.callback, self._ffi.NULL)

    def uninstall(self) -> None:
        """Give llama.cpp back its default logger before the callback can be freed."""
        if self.callback is not None:
            self._lib.llama_log_set(self._ffi.NULL, self._ffi.NULL)
            self.callback = None

    @contextlib.contextmanager
    def collect(self) -> Iterator[list[str]]:
        """Collect the raw text llama.cpp logs meanwhile, whatever the levels (e.g. which backend loaded)."""
        collected: list[str] = []
        self._collected = collected
        try:
            yield collected
        finally:
            self._collected = None

    def _on_log(self, level: int, text: Any, _user_data: Any) -> None:
        try:
            collected = self._collected
            if collected is not None:
                collected.append(self._ffi.string(text).decode("utf-8", "replace"))
            local = self._local
            partial: list[str] | None = getattr(local, "partial", None)
            if partial is None:
                partial = local.partial = []
                local.level = logging.INFO
            if level != _CONTINUE:
                local.level = _LEVELS.get(level, logging.INFO)
            py_level = local.level
            quiet = llama_logger.level == logging.NOTSET and py_level < logging.WARNING
            if quiet or not llama_logger.isEnabledFor(py_level):
                partial.clear()
                return
            chunk = self._ffi.string(text).decode("utf-8", "replace")
            partial.append(chunk)
            if not chunk.endswith("\n"):
                return
            line = "".join(partial).rstrip()
            partial.clear()
            if line:
                llama_logger.log(py_level, "%s", line)
        except Exception:  # never let an exception cross into C
            pass
