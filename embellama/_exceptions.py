# SPDX-License-Identifier: Apache-2.0
"""The exceptions embellama raises.

::

    EmbellamaError
     ├── LibraryError          libllama not found, not loadable, or its ABI differs
     ├── ConfigurationError    a ModelConfig (or engine) setting is invalid
     ├── ModelNotFoundError    the model file does not exist
     ├── ModelLoadError        llama.cpp could not load the model file
     ├── InvalidInputError     empty, non-str or over-long input text
     ├── EmbeddingError        llama.cpp failed while computing embeddings
     ├── ResourceClosedError   a model, context or batch was used after close()
     ├── ThreadAffinityError   a context was used from a thread that does not own it
     └── EngineBusyError       an engine's max_pending requests are already pending
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "EmbeddingError",
    "EmbellamaError",
    "EngineBusyError",
    "InvalidInputError",
    "LibraryError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ResourceClosedError",
    "ThreadAffinityError",
]


class EmbellamaError(Exception):
    """Base class of every error embellama raises."""


class LibraryError(EmbellamaError):
    """libllama could not be found or loaded, or does not match the declarations."""


class ConfigurationError(EmbellamaError, ValueError):
    """A configuration value is invalid."""


class ModelNotFoundError(EmbellamaError, FileNotFoundError):
    """The model file does not exist."""

    def __init__(self, path: str, model_name: str | None = None) -> None:
        self.path = path
        self.model_name = model_name
        who = f"model {model_name!r}: " if model_name else ""
        super().__init__(f"{who}model file not found: {path}")


class ModelLoadError(EmbellamaError):
    """llama.cpp refused to load the model file."""

    def __init__(self, path: str, reason: str, model_name: str | None = None) -> None:
        self.path = path
        self.reason = reason
        self.model_name = model_name
        who = f"model {model_name!r}: " if model_name else ""
        super().__init__(f"{who}cannot load {path}: {reason}")


class InvalidInputError(EmbellamaError, ValueError):
    """The input text is unusable: not a str, empty, not encodable, or too long."""

    def __init__(self, message: str, model_name: str | None = None, index: int | None = None):
        self.reason = message
        self.model_name = model_name
        self.index = index
        where = f" (input #{index})" if index is not None else ""
        who = f"model {model_name!r}: " if model_name else ""
        super().__init__(f"{who}{message}{where}")


class EmbeddingError(EmbellamaError):
    """llama.cpp failed to compute embeddings."""

    def __init__(
        self,
        message: str,
        model_name: str | None = None,
        text_length: int | None = None,
        return_code: int | None = None,
    ) -> None:
        self.model_name = model_name
        self.text_length = text_length
        self.return_code = return_code
        parts = [message]
        if text_length is not None:
            parts.append(f"text length {text_length}")
        if return_code is not None:
            parts.append(f"llama.cpp return code {return_code}")
        who = f"model {model_name!r}: " if model_name else ""
        super().__init__(who + "; ".join(parts))


class ResourceClosedError(EmbellamaError):
    """An object was used after it was closed."""


class ThreadAffinityError(EmbellamaError):
    """A llama.cpp context was used from a thread other than the one that created it."""


class EngineBusyError(EmbellamaError):
    """``EngineConfig.max_pending`` requests are already pending, and no room came up in time."""
