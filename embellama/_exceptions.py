# SPDX-License-Identifier: Apache-2.0
"""The exceptions embellama raises.

::

    EmbellamaError
     ├── LibraryError          libllama not found, not loadable, or its ABI differs
     ├── ConfigurationError    a ModelConfig (or engine) setting is invalid
     ├── ModelNotFoundError    the model file does not exist
     │    └── HubNotFoundError  a Hub repository, revision or file does not exist (404), or is not cached offline
     ├── HubAccessError        a gated or private Hub repository refused access (401, 403)
     ├── HubDownloadError      a Hub download failed, or its sha256 differs from the one the Hub reports
     ├── MissingExtraError     an optional extra is not installed (names its missing modules and the extra)
     ├── ModelLoadError        llama.cpp could not load the model file
     ├── InvalidInputError     empty, non-str or over-long input text
     ├── EmbeddingError        llama.cpp failed while computing embeddings
     ├── ResourceClosedError   a model, context or batch was used after close()
     ├── ThreadAffinityError   a context was used from a thread that does not own it
     └── EngineBusyError       an engine's max_pending requests are already pending

    UserWarning
     ├── TruncationWarning     texts were cut to the model's token limit (how many, how many tokens)
     └── ApproximationWarning  a model asks for something llama.cpp's graph cannot compute exactly (what differs)
"""

from __future__ import annotations

__all__ = [
    "ApproximationWarning",
    "ConfigurationError",
    "EmbeddingError",
    "EmbellamaError",
    "EngineBusyError",
    "HubAccessError",
    "HubDownloadError",
    "HubNotFoundError",
    "InvalidInputError",
    "LibraryError",
    "MissingExtraError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ResourceClosedError",
    "ThreadAffinityError",
    "TruncationWarning",
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


def _hub_where(repo_id: str, filename: str | None, revision: str | None) -> str:
    file = f" file {filename!r}" if filename else ""
    rev = f" at revision {revision!r}" if revision else ""
    return f"Hub repository {repo_id!r}{rev}{file}"


class _HubFailure(EmbellamaError):
    """What the Hub errors share: the repository, file and revision, a message naming them, and pickling."""

    def __init__(self, repo_id: str, reason: str, filename: str | None = None, revision: str | None = None) -> None:
        self.repo_id = repo_id
        self.filename = filename
        self.revision = revision
        self.reason = reason
        self.message = f"{_hub_where(repo_id, filename, revision)}: {reason}"
        EmbellamaError.__init__(self, self.message)

    def __str__(self) -> str:  # not OSError's "[Errno ...] strerror: filename" (the file is the repository's)
        return self.message

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:  # pickles (Ray, processes) with its fields
        return type(self), (self.repo_id, self.reason, self.filename, self.revision)


class HubNotFoundError(_HubFailure, ModelNotFoundError):
    """A Hub repository, revision or file does not exist (the Hub answered 404), or it is not in the cache
    while the network is off (``HF_HUB_OFFLINE=1``)."""

    def __init__(self, repo_id: str, reason: str, filename: str | None = None, revision: str | None = None) -> None:
        _HubFailure.__init__(self, repo_id, reason, filename, revision)
        self.path = f"hf://{repo_id}" + (f"@{revision}" if revision else "") + (f"/{filename}" if filename else "")
        self.model_name = None


class HubAccessError(_HubFailure, PermissionError):
    """The Hub refused access to a repository (401 or 403): it is gated, or private, and the token (``HF_TOKEN``)
    is missing or has not been granted access."""


class HubDownloadError(_HubFailure):
    """A download from the Hub failed, or the file's sha256 differs from the one the Hub reports (the file
    is then removed, not kept in the cache)."""


class MissingExtraError(EmbellamaError, ImportError):
    """An optional extra is not installed: the message names the missing modules and the extra to install."""

    def __init__(self, extra: str, missing: list[str], needed_for: str) -> None:
        self.extra = extra
        self.missing = list(missing)
        self.needed_for = needed_for
        names = ", ".join(self.missing)
        super().__init__(f"{needed_for} needs {names} (not installed): pip install 'embellama[{extra}]'")

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.extra, self.missing, self.needed_for)


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


class TruncationWarning(UserWarning):
    """Texts longer than the model's token limit were cut: once per call, naming the model, the texts and tokens.

    Attributes
    ----------
    model_name : str
        The model.
    texts : int
        How many texts of the call were cut.
    tokens : int
        How many tokens they lost together.
    """

    def __init__(self, message: str, model_name: str = "", texts: int = 0, tokens: int = 0) -> None:
        self.model_name = model_name
        self.texts = texts
        self.tokens = tokens
        super().__init__(message)


class ApproximationWarning(UserWarning):
    """The model's own recipe asks for something llama.cpp's graph cannot compute exactly; embellama computes the
    nearest thing it can and says what differs, once per model.

    The case known today: a ColBERT checkpoint trained with ``attend_to_expansion_tokens=False`` keeps its query's
    ``[MASK]`` expansion tokens out of the other tokens' attention, while llama.cpp's encoder lets every token of a
    sequence see every other one.

    Attributes
    ----------
    model_name : str
        The model.
    """

    def __init__(self, message: str, model_name: str = "") -> None:
        self.model_name = model_name
        super().__init__(message)
